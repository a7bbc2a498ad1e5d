"""DataFrame → plotly Figure, in one visual style, and ``save_figure``.

Each function takes a tidy table as :func:`l2s_kit.evaluate.summarize` or
:func:`l2s_kit.reflection.summarize` return it and gives back a ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

TEMPLATE = "plotly_white"
HEIGHT = 420


def _style(fig, title: str):
    fig.update_layout(template=TEMPLATE, title=title, height=HEIGHT, legend_title_text="",
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


def accuracy_vs_length(summary: pd.DataFrame, color: str = "method", label: str = "model",
                       title: str = "Accuracy against length") -> go.Figure:  # noqa: F821
    """One point per model: mean generated tokens (x) against accuracy (y), coloured by method."""
    import plotly.express as px

    fig = px.scatter(summary, x="mean_tokens", y="accuracy", color=color, hover_name=label,
                     hover_data=[c for c in ("parameters", "length_change", "n") if c in summary],
                     labels={"mean_tokens": "mean generated tokens", "accuracy": "accuracy (%)"})
    fig.update_traces(marker=dict(size=11, line=dict(width=1, color="white")))
    return _style(fig, title)


def by_level(table: pd.DataFrame, y: str, title: str, y_label: str,
             color: str = "model") -> go.Figure:  # noqa: F821
    """A line per model of ``y`` against the difficulty level."""
    import plotly.express as px

    fig = px.line(table.sort_values("level"), x="level", y=y, color=color, markers=True,
                  labels={"level": "difficulty level", y: y_label})
    fig.update_xaxes(dtick=1)
    return _style(fig, title)


def save_figure(fig, path: str | os.PathLike, png: bool = False) -> list[Path]:
    """Write ``path`` (.html, self-contained: plotly.js inlined, opens offline) and, with ``png``,
    a PNG beside it (kaleido; needs a Chromium). Files appear atomically. Returns the paths."""
    from l2s_kit.checkpoint import atomic_file

    path = Path(path).with_suffix(".html")
    with atomic_file(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True)
    if not png:
        return [path]
    with atomic_file(path.with_suffix(".png")) as tmp:
        fig.write_image(tmp, width=900, height=HEIGHT, scale=2)
    return [path, path.with_suffix(".png")]
