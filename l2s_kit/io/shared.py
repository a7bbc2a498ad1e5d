"""What the kit writes for others to read (model cards, reports, the gallery, rendered notebooks):
text from users (model names, run names, folder names) shown as text, never markup or script;
relative links that cannot be read as a URL scheme (``javascript:``); and no absolute path of the
user's machine: an input is named as the user gave it, with the home folder written ``~``."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from urllib.parse import quote

_HUB_SNAPSHOT = re.compile(r"/models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[^/]+)$")
_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")  # what acts inside a line: code, emphasis, links, cells


def md_text(value) -> str:
    """``value`` as literal text inside Markdown (a table cell, a heading): HTML special
    characters escaped (a Markdown renderer passes raw HTML through), the punctuation that acts
    inside a line (code, emphasis, links, table cells) backslash-escaped, line breaks folded."""
    text = html.escape(str(value), quote=True)
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def href(path: str) -> str:
    """A relative link to ``path`` (``/``-separated, inside the page's folder), URL-encoded and
    starting with ``./`` so that no part of it reads as a scheme."""
    return "./" + quote(str(path).lstrip("/"), safe="/+@,=")


def shown_paths(text: str, paths) -> str:
    """``text`` with every one of ``paths`` (absolute or as given) written as
    :func:`shown_path` writes it, longest first."""
    for p in sorted({str(p) for p in paths if p}, key=len, reverse=True):
        for form in {p, os.path.abspath(os.path.expanduser(p))}:
            if os.path.isabs(form):
                text = text.replace(form, shown_path(form))
    return text


def shown_path(path, root=None) -> str:
    """``path`` as a shared page names it: relative to ``root`` when inside it (a run's own
    files), ``~/...`` when under the home folder, a hub id or a relative path as given; any
    other absolute path by its last two parts (``.../models/Qwen2.5-Math-7B``); a hub cache's
    snapshot folder by its hub id and revision."""
    text = str(path)
    p = Path(os.path.expanduser(text))
    if not p.is_absolute():
        return text
    hub = _HUB_SNAPSHOT.search(p.as_posix())
    if hub:  # a hub id resolved to its snapshot in the hub cache: the id, at its revision
        return f"{hub['owner']}/{hub['name']}@{hub['rev'][:12]}"
    p = Path(os.path.normpath(p))
    for base, shown in ((root, None), (Path.home(), "~")):
        if base is None:
            continue
        base = Path(os.path.normpath(os.path.abspath(base)))
        if p == base or base in p.parents:
            rel = p.relative_to(base).as_posix()
            return rel if shown is None else ("~" if rel == "." else f"~/{rel}")
    return ".../" + "/".join(p.parts[-2:]) if len(p.parts) > 2 else text


def home_paths(obj):
    """``obj`` (a run record: mappings, lists, strings) with every absolute path under the home
    folder written ``~/...``: the record still says what a rerun needs, without the user's name.
    Other paths stay as they are (a rerun needs them)."""
    if isinstance(obj, dict):
        return {k: home_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [home_paths(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        home = os.path.normpath(str(Path.home()))
        if home != "/" and (obj == home or obj.startswith(home + "/")):
            return "~" + obj[len(home):]
    return obj
