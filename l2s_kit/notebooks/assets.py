"""JavaScript that rendered notebooks inline so they open offline: the Jupyter widgets renderer.

The HTML of an executed notebook carries plotly.js (from the plotly package) and the standalone
widget renderer ``@jupyter-widgets/html-manager``'s ``dist/embed.js``. The latter is not on PyPI:
it is fetched once from the npm registry (a pinned version, checked against its published
sha512), unpacked into the cache folder and reused from there. ``scripts/setup.sh`` fetches it at
install time, so rendering never needs the network afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from pathlib import Path

from l2s_kit.errors import L2SError

# ipywidgets 8 ↔ html-manager 1.x
HTML_MANAGER = {
    "name": "@jupyter-widgets/html-manager",
    "version": "1.0.15",
    "url": "https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.15.tgz",
    "integrity": "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
    "file": "package/dist/embed.js",
}


class AssetError(L2SError):
    """A JavaScript asset for rendered notebooks is missing and cannot be fetched."""


def assets_dir() -> Path:
    """``$L2S_ASSETS``, else ``$XDG_CACHE_HOME/l2s_kit`` (default ``~/.cache/l2s_kit``)."""
    if os.environ.get("L2S_ASSETS"):
        return Path(os.environ["L2S_ASSETS"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "l2s_kit"


def widget_renderer(fetch: bool = True) -> Path:
    """The path of html-manager's ``embed.js`` in the cache, fetching it first if needed."""
    a = HTML_MANAGER
    path = assets_dir() / f"html-manager-{a['version']}" / "embed.js"
    if path.is_file():
        return path
    if not fetch:
        raise AssetError(f"{path} is missing; run `l2s notebooks assets` (or scripts/setup.sh) "
                         "once with access to the npm registry")
    try:
        with urllib.request.urlopen(a["url"], timeout=60) as r:
            blob = r.read()
    except OSError as e:
        raise AssetError(f"cannot fetch {a['name']}@{a['version']} from {a['url']} ({e}); fetch "
                         f"it where the npm registry is reachable and put its {a['file']} at "
                         f"{path} (or point $L2S_ASSETS at a folder holding "
                         f"html-manager-{a['version']}/embed.js)") from e
    algo, _, want = a["integrity"].partition("-")
    got = base64.b64encode(hashlib.new(algo, blob).digest()).decode()
    if got != want:
        raise AssetError(f"{a['url']}: {algo} is {got}, the registry published {want}; not using it")
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        data = tar.extractfile(a["file"]).read()
    from l2s_kit.io import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path
