"""Executed notebook → self-contained HTML and PNG files of its plotly figures.

Figures are shown with the ``"l2s"`` plotly renderer (set by :func:`l2s_kit.notebooks.setup`):
each output carries the plotly JSON (drawn by JupyterLab, kept in the saved ``.ipynb``) and an
HTML fallback. The notebook's set-up cell (:func:`l2s_kit.notebooks.setup`) shows plotly.js once,
loaded as a page global even where the page has require.js (as nbconvert's templates do), so a
notebook executed by plain papermill and rendered by plain ``jupyter nbconvert --to html`` draws
every figure, offline.
:func:`render_html` (``l2s notebooks render``) writes one self-contained page: plotly.js once,
the widget renderer and the notebook's widget state.
"""

from __future__ import annotations

import base64
import os
import re
import unicodedata
from pathlib import Path

import nbformat

from l2s_kit.io import atomic_file

PLOTLY_MIME = "application/vnd.plotly.v1+json"
TEMPLATES = Path(__file__).parent / "templates"
PNG_WIDTH = 900  # px; the height is the figure's own (default 450), scaled by plots.PNG_SCALE


def _renderer():
    import plotly.io as pio
    from plotly.io.base_renderers import PlotlyRenderer

    class L2SRenderer(PlotlyRenderer):
        """The plotly JSON mimetype plus an HTML fallback without plotly.js or MathJax (the
        notebook's set-up cell shows plotly.js once: :func:`plotlyjs_once`)."""

        def to_mimebundle(self, fig_dict):
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = pio.to_html(bundle[PLOTLY_MIME], include_plotlyjs=False,
                                              include_mathjax=False, full_html=False,
                                              validate=False)
            return bundle

    return L2SRenderer()


PLOTLYJS_MARK = "data-l2s-plotlyjs"


def plotlyjs_once() -> str:
    """plotly.js as HTML that makes ``window.Plotly`` wherever it is inserted: require.js's
    ``define`` (which would take plotly.js as a module and leave ``Plotly`` undefined) is set
    aside while it loads, and a page that already has Plotly loads nothing."""
    from plotly.offline import get_plotlyjs

    return (f'<script {PLOTLYJS_MARK}="1">if (!window.Plotly) {{ window.__l2sDefine = '
            'window.define; window.define = undefined; }</script>'
            f'<script {PLOTLYJS_MARK}="2">if (!window.Plotly) {{ {_inline(get_plotlyjs())} }}'
            '</script>'
            f'<script {PLOTLYJS_MARK}="3">if (window.__l2sDefine !== undefined) {{ window.define '
            '= window.__l2sDefine; delete window.__l2sDefine; }</script>')


def use_renderer() -> None:
    """Register and select the ``"l2s"`` plotly renderer."""
    import plotly.io as pio

    if "l2s" not in pio.renderers:
        pio.renderers["l2s"] = _renderer()
    pio.renderers.default = "l2s"


def _inline(js: str) -> str:
    return js.replace("</script", "<\\/script")  # a literal inside the code must not end the tag


def render_html(nb: nbformat.NotebookNode, path: str | os.PathLike, remember: bool = False) -> Path:
    """Write ``nb`` as one HTML file that opens offline, figures and widgets drawn (``remember``:
    a file the user named, noted as the kit's)."""
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    from l2s_kit.notebooks.assets import widget_renderer

    exporter = HTMLExporter(template_name="l2s", extra_template_basedirs=[str(TEMPLATES)])
    carried = PLOTLYJS_MARK in nbformat.writes(nb)  # its first figure carries plotly.js
    resources = {"l2s_plotlyjs": "" if carried else _inline(get_plotlyjs()),
                 "l2s_widgetsjs": base64.b64encode(widget_renderer().read_bytes()).decode()
                 if "widgets" in nb.metadata else ""}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    path = Path(path)
    with atomic_file(path, remember) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return path


def _decode(obj):
    """Plotly JSON with its base64 typed arrays ({"dtype", "bdata"[, "shape"]}) as plain lists."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            import numpy as np

            a = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
            if "shape" in obj:
                a = a.reshape([int(n) for n in str(obj["shape"]).split(",")])
            return a.tolist()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def figures(nb: nbformat.NotebookNode) -> list[tuple[int, dict]]:
    """The plotly figures among the cells' outputs, as ``(cell index, figure dict)``, with
    plain lists for the arrays."""
    out = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if PLOTLY_MIME in data:
                out.append((i, _decode(data[PLOTLY_MIME])))
    return out


def _slug(fig: dict) -> str:
    title = (fig.get("layout", {}).get("title") or {})
    text = title.get("text", "") if isinstance(title, dict) else str(title)
    text = re.split(r"<br\s*/?>", text)[0]  # a subtitle after <br> is not part of the name
    text = re.sub(r"<[^>]+>", " ", text)  # "α" → "alpha": a letter's Unicode name, last word
    text = "".join(unicodedata.name(c, " ").split()[-1] if c.isalpha() and not c.isascii()
                   else c for c in text)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "figure"


def export_pngs(nb: nbformat.NotebookNode, folder: str | os.PathLike, prefix: str = "") -> list[Path]:
    """One PNG per plotly figure of ``nb`` (kaleido with the system Chromium), named
    ``{prefix}{n:02d}-{title}.png`` in the order the figures appear."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from l2s_kit.analysis.plots import PNG_SCALE

    figs = [go.Figure(f) for _, f in figures(nb)]
    if not figs:
        return []
    folder = Path(folder)
    paths = [folder / f"{prefix}{n:02d}-{_slug(f.to_dict())}.png" for n, f in enumerate(figs, 1)]
    pio.write_images(figs, paths, width=PNG_WIDTH, scale=PNG_SCALE)
    return paths
