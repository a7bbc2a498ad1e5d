"""The gallery: ``<root>/index.html``, one page listing every run under ``root``.

Runs are found by their ``run.json`` (:mod:`l2s_kit.io.runs`): notebook runs at
``<root>/<notebook>/<run>/`` and study folders at ``<root>/<folder>/``. Each gets a card: the
thumbnail of its first figure, status, date, duration, its parameters and key numbers, what moved
since the run before, links to its HTML, executed notebook, PNGs and tables, and Table 1 where the
run wrote one. Every link is relative and the page needs no script: zip ``root`` or put it on any
static host and it all opens. The page is rewritten after every run; a foreign ``index.html``
(one the kit did not write) is left alone.
"""

from __future__ import annotations

import html
import json
import os
import sys
import time
from pathlib import Path

from l2s_kit.io.runs import RECORD, RunError, read_record, skipped
from l2s_kit.io.shared import href

MARK = '<meta name="generator" content="l2s_kit gallery">'
INDEX = "index.html"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;
     background:#fafafa}
h1{margin:0 0 4px} h2{margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;width:380px}
.card.failed{border-color:#d62728} .card.flagged{border:2px solid #ff7f0e}
.thumb{display:block;width:100%;height:190px;object-fit:contain;background:#f4f4f4;
       border:1px solid #eee}
.nothumb{height:190px;display:flex;align-items:center;justify-content:center;color:#888;
         background:#f4f4f4}
.badge{display:inline-block;border-radius:3px;padding:1px 6px;font-size:12px;color:#fff}
.ok{background:#2ca02c} .bad{background:#d62728} .warn{background:#ff7f0e}
.meta{color:#555;font-size:13px;margin:6px 0} .links a{margin-right:10px;font-size:14px}
details{font-size:13px;margin-top:6px} table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #e2e2e2;padding:2px 6px;text-align:left;vertical-align:top}
.table1{overflow-x:auto} .table1 td,.table1 th{text-align:right} code{font-size:12px}
.change{font-size:13px;margin-top:6px}
.card.wide{width:100%;display:grid;grid-template-columns:380px 1fr;gap:20px;box-sizing:border-box}
.table1 h1{font-size:17px;margin:0 0 6px} .table1 p,.table1 li{font-size:13px}
"""


def find_runs(root: str | os.PathLike) -> list[dict]:
    """The record of every run under ``root`` (``*/run.json`` and ``*/*/run.json``), newest
    first within each notebook, with ``path`` (the folder relative to ``root``)."""
    root = Path(root)
    out = []
    for rec in sorted([*root.glob(f"*/{RECORD}"), *root.glob(f"*/*/{RECORD}")]):
        folder = rec.parent
        if any(p.startswith(".") for p in folder.relative_to(root).parts):
            continue  # a run still being written (its temporary folder)
        try:
            r = read_record(folder)
        except RunError as e:
            skipped(e)
            continue
        r["path"] = folder.relative_to(root).as_posix()
        out.append(r)
    return sorted(out, key=lambda r: (str(r.get("notebook") or r.get("kind", "")),
                                      _neg(str(r.get("started", "")))))


def _neg(s: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in s)  # newest first inside sorted()


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _link(path: str, name: str) -> str:
    return f'<a href="{_e(href(path))}">{_e(name)}</a>'


def _value(v) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return _e(s if len(s) <= 120 else s[:117] + "...")


def _table1(folder: Path) -> str:
    md = folder / "table1.md"
    if not md.is_file():
        return ""
    import mistune

    body = mistune.create_markdown(plugins=["table"], escape=True)(md.read_text())
    return f'<div class="table1">{body}</div>'


def _details(summary: str, rows: dict[str, str]) -> str:
    """A folded two-column table (values already HTML)."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows.items())
    return f"<details><summary>{_e(summary)}</summary><table>{body}</table></details>"


def _png_hint(r: dict) -> str:
    """How to get a run's PNGs: notebook runs make them unless --no-png, studies only with --png."""
    if r.get("notebook"):
        return "run the notebook again without --no-png to get one"
    return f"run l2s {r.get('kind') or 'study'} again with --png to get one"


def _meta(r: dict) -> str:
    """When the run started, how long it took, and the code that ran it."""
    meta = f'{_e((r.get("started") or "")[:19].replace("T", " "))} · {r.get("seconds") or 0:.0f} s'
    code = r.get("code") or {}
    if code.get("version"):
        meta += f' · l2s_kit {_e(code["version"])}'
    if code.get("commit"):
        meta += f' <code>{_e(code["commit"][:10])}{"+" if code.get("dirty") else ""}</code>'
    return meta


def _record_details(r: dict, comp: dict) -> list[str]:
    """What changed since the run compared with, and the folded parameters, inputs, numbers."""
    out = []
    if comp:
        moved = comp.get("numbers_moved", 0)
        what = [f"{k}: {', '.join(map(_e, comp.get(k + '_changed') or []))}"
                for k in ("parameters", "inputs", "code") if comp.get(k + "_changed")]
        out.append(f'<div class="change">since {_e(comp.get("compared_with"))}: '
                     f'{moved} number(s) moved; {"; ".join(what) or "nothing else changed"}</div>')
    given = r.get("given") or {}
    params = r.get("parameters") or {}
    out.append(_details(f"parameters ({len(given)} given)", {
        k: _value(v) + (" <i>(given)</i>" if k in given else "") for k, v in params.items()}))
    inputs = r.get("inputs") or {}
    if inputs:
        out.append(_details(f"inputs ({len(inputs)})", {
            k: f"<code>{_e(v[:30])}</code>" for k, v in inputs.items()}))
    numbers = r.get("metrics") or {}
    if numbers:
        out.append(_details(f"key numbers ({len(numbers)})", {
            k: "" if v is None else f"{v:.4g}" for k, v in numbers.items()}))
    return out


def _card(root: Path, r: dict) -> str:
    path, files = r["path"], r.get("files") or {}

    def there(name):  # a file the record names but that is gone gets no link
        return name if name and (root / path / name).is_file() else None

    pngs = [p for p in files.get("pngs") or [] if there(p)]
    html_file = there(files.get("html"))
    thumb = (f'<img class="thumb" loading="lazy" src="{_e(href(f"{path}/{pngs[0]}"))}" '
             f'alt="first figure of {_e(path)}">' if pngs else
             f'<div class="nothumb">no PNG ({_e(_png_hint(r))})</div>')
    if html_file:
        thumb = f'<a href="{_e(href(f"{path}/{html_file}"))}">{thumb}</a>'
    comp = r.get("comparison") or {}
    flagged = bool(comp.get("unexplained"))
    status = r.get("status", "?")
    badges = [f'<span class="badge {"ok" if status == "ok" else "bad"}">{_e(status)}</span>']
    if flagged:
        badges.append('<span class="badge warn">numbers moved, inputs and parameters did not'
                      '</span>')
    meta = _meta(r)
    links = []
    if html_file:
        links.append(_link(f"{path}/{html_file}", "figures (HTML)"))
    if there(files.get("notebook")):
        links.append(_link(f"{path}/{files['notebook']}", "notebook"))
    links += [_link(f"{path}/{p}", f"PNG {i}") for i, p in enumerate(pngs, 1)]
    links += [_link(f"{path}/{p}", p) for p in files.get("other") or [] if there(p)]
    links.append(_link(f"{path}/{RECORD}", RECORD))
    table1 = _table1(root / path)
    parts = [f'<div class="card{" failed" if status != "ok" else ""}{" flagged" if flagged else ""}'
             f'{" wide" if table1 else ""}" id="{_e(path)}"><div>', thumb,
             f'<h3 style="margin:8px 0 0">{_e(r.get("run") or path)}</h3>',
             f'<div class="meta">{" ".join(badges)} {meta}</div>']
    if r.get("error"):
        parts.append(f'<div class="meta" style="color:#d62728">{_e(r["error"])}</div>')
    parts.append(f'<div class="links">{" ".join(links)}</div>')
    parts += _record_details(r, comp)
    parts.append("</div>" + table1 + "</div>")
    return "\n".join(p for p in parts if p)


def _n(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def render_gallery(root: str | os.PathLike) -> str:
    """The gallery page of ``root`` as HTML text."""
    root = Path(root)
    found = find_runs(root)
    groups: dict[str, list[dict]] = {}
    for r in found:
        groups.setdefault(r.get("notebook") or f"l2s {r.get('kind', 'run')}: {r['path']}/",
                          []).append(r)
    body = []
    for name, rs in groups.items():
        body.append(f'<h2 id="{_e(name)}">{_e(name)} <span class="sub">({len(rs)} run'
                    f'{"s" if len(rs) != 1 else ""})</span></h2>')
        body.append('<div class="cards">' + "\n".join(_card(root, r) for r in rs) + "</div>")
    flagged = sum(bool((r.get("comparison") or {}).get("unexplained")) for r in found)
    failed = sum(r.get("status") != "ok" for r in found)
    note = (f"{_n(len(found), 'run')} in {_n(len(groups), 'notebook or study', 'notebooks and studies')}"
            f"; {failed} failed; {flagged} whose numbers moved while inputs and parameters did not")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">" + MARK +
            "<title>l2s_kit runs</title><style>" + CSS + "</style></head><body>"
            "<h1>Runs</h1><p class=\"sub\">" + _e(note) + " · written "
            + _e(time.strftime("%Y-%m-%d %H:%M:%S")) + "</p>"
            + ("\n".join(body) or "<p>No runs yet.</p>") + "</body></html>\n")


def write_gallery(root: str | os.PathLike) -> Path | None:
    """Write ``root/index.html`` (atomically). A foreign ``index.html`` is left alone (a
    message says so) and None returned."""
    from l2s_kit.io import atomic_file, check_place

    root = Path(root)
    check_place(root, "gallery folder")
    if not root.is_dir():
        raise RunError(f"{root} is not a folder of runs (notebook runs go to "
                       "<out>/<notebook>/<run>/); name the folder that holds them")
    path = root / INDEX
    if path.exists() and MARK not in path.read_text(errors="replace")[:2000]:
        print(f"gallery: {path} exists and was not written by l2s_kit; left alone (move it to "
              "get the gallery there)", file=sys.stderr)
        return None
    text = render_gallery(root)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
