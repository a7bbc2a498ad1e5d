"""DataFrame → plotly Figure, in one visual style, and ``save_figure``.

Each function takes a tidy table as :func:`l2s_kit.analysis.summarize` or
:func:`l2s_kit.analysis.reflection.reflection_summary` return it and gives back a
``plotly.graph_objects.Figure``. Notebooks draw only through these.
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


def metric_by_level(table: pd.DataFrame, y: str, title: str, y_label: str,
                    color: str = "model", by: str = "level") -> go.Figure:  # noqa: F821
    """A line per model of ``y`` against the difficulty level; with ``by="dataset"`` (data
    without levels), grouped bars per dataset instead."""
    import plotly.express as px

    if by != "level":
        fig = px.bar(table, x=by, y=y, color=color, barmode="group", labels={y: y_label})
        return _style(fig, title)
    fig = px.line(table.sort_values("level"), x="level", y=y, color=color, markers=True,
                  labels={"level": "difficulty level", y: y_label})
    fig.update_xaxes(dtick=1)
    return _style(fig, title)


def length_distribution(df: pd.DataFrame, length: str = "n_tokens",
                        title: str = "Length distribution by level",
                        by: str = "level") -> go.Figure:  # noqa: F821
    """A box per model and level (or ``by="dataset"``) of the responses' ``length`` (responses
    without one are left out)."""
    import plotly.express as px

    fig = px.box(df.dropna(subset=[by]), x=by, y=length, color="model", points=False,
                 labels={"level": "difficulty level", length: length.removeprefix("n_")})
    if by == "level":
        fig.update_xaxes(dtick=1)
    return _style(fig, title)


def reflective_by_level(summary: pd.DataFrame,
                        title: str = "Reflective responses by level (%)",
                        by: str = "level") -> go.Figure:  # noqa: F821
    """A line per model of the share of reflective responses against the level (bars per
    dataset with ``by="dataset"``). ``summary``:
    :func:`l2s_kit.analysis.reflection.reflection_summary` by model and level (or dataset)."""
    return metric_by_level(summary.assign(reflective=100 * summary["reflection_ratio"]),
                           "reflective", title, "reflective responses (%)", by=by)


def keyword_rates(freq: pd.DataFrame, summary: pd.DataFrame,
                  title: str = "Keyword occurrences per 100 responses") -> go.Figure:  # noqa: F821
    """Grouped bars: occurrences of each reflection keyword per 100 responses of each model.
    ``freq``: :func:`l2s_kit.analysis.reflection.keyword_frequency` by model; ``summary``: the
    responses per model (column ``n``)."""
    import plotly.express as px

    f = freq.merge(summary[["model", "n"]]).assign(per_100=lambda f: 100 * f["count"] / f["n"])
    fig = px.bar(f, x="keyword", y="per_100", color="model", barmode="group",
                 labels={"per_100": "occurrences per 100 responses"})
    return _style(fig, title)


def false_reflection(summary: pd.DataFrame, title: str = "False reflection (%)") -> go.Figure:  # noqa: F821
    """Grouped bars per model: reflective and wrong (share of all responses), and wrong among
    the reflective ones. ``summary``: :func:`l2s_kit.analysis.reflection.reflection_summary`."""
    import plotly.express as px

    long = summary.melt(id_vars="model", value_vars=["false_reflection", "wrong_among_reflective"])
    fig = px.bar(long.assign(percent=100 * long["value"]), x="model", y="percent",
                 color="variable", barmode="group", labels={"percent": "%"})
    return _style(fig, title)


def layer_coefficients(table: pd.DataFrame, title: str = "Sens-Merging: System 2's coefficient "
                       "per layer") -> go.Figure:  # noqa: F821
    """A bar per layer group of a merge's per-layer coefficient (columns ``group``,
    ``coefficient``; :func:`l2s_kit.study.calibration.sens_coefficients_table`)."""
    import plotly.express as px

    fig = px.bar(table, x="group", y="coefficient", labels={"group": "layer group"})
    return _style(fig, title)


def level_panels(table: pd.DataFrame, title: str = "By difficulty level",
                 color: str = "model", by: str = "level") -> go.Figure:  # noqa: F821
    """Accuracy, mean length and reflection ratio against the level (or ``by="dataset"``), side
    by side, a line per model. ``table``: :func:`l2s_kit.analysis.by_level` (columns level or
    dataset, accuracy, mean_length, length_unit, reflection_ratio)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    unit = table["length_unit"].iloc[0] if len(table) else "tokens"
    panels = [("accuracy", "accuracy (%)", 1), ("mean_length", f"mean length ({unit})", 1),
              ("reflection_ratio", "reflective responses (%)", 100)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t, _ in panels],
                        horizontal_spacing=0.08)
    palette = qualitative.Plotly
    for i, (name, t) in enumerate(table.groupby(color, sort=False)):
        t = t.sort_values(by)
        for col, (y, _, scale) in enumerate(panels, 1):
            fig.add_trace(go.Scatter(x=t[by], y=t[y] * scale, name=str(name),
                                     legendgroup=str(name), showlegend=col == 1,
                                     mode="lines+markers", line=dict(color=palette[i % 10])),
                          row=1, col=col)
    if by == "level":
        fig.update_xaxes(title_text="difficulty level", dtick=1)
    else:
        fig.update_xaxes(title_text=by, type="category")
    return _style(fig, title)


def sensitivity(summary: pd.DataFrame, param: str, others: tuple[str, ...] = ("alpha", "k", "p"),
                title: str | None = None) -> go.Figure:  # noqa: F821
    """Accuracy and mean length against one merge parameter: a line per method and setting of
    the ``others`` parameters. ``summary``: one row per model with ``method`` and parameter
    columns (:meth:`l2s_kit.study.explorer.Explorer.sweep`)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    d = summary.dropna(subset=[param]).sort_values(param)
    fixed = [o for o in others if o != param and o in d.columns]
    label = d["method"].astype(str)
    for o in fixed:
        label = label + d[o].map(lambda v, o=o: "" if pd.isna(v) else f" {o}={v:g}")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy (%)", "mean generated tokens"])
    for i, (name, t) in enumerate(d.groupby(label, sort=False)):
        for col, y in enumerate(("accuracy", "mean_tokens"), 1):
            fig.add_trace(go.Scatter(x=t[param], y=t[y], name=str(name), legendgroup=str(name),
                                     showlegend=col == 1, mode="lines+markers",
                                     line=dict(color=qualitative.Plotly[i % 10]),
                                     hovertext=t.get("model")), row=1, col=col)
    fig.update_xaxes(title_text=param)
    return _style(fig, title or f"Sensitivity to {param}")


def calibration_sensitivity(grid: pd.DataFrame, title: str = "Sensitivity to the calibration set"
                            ) -> go.Figure:  # noqa: F821
    """Accuracy and mean length against the number of calibration samples (log axis), a line per
    method and calibration parts. ``grid``: one row per merge with ``method``, ``calib_parts`` and
    ``calib_samples`` columns (:func:`l2s_kit.study.calibration.calibration_grid`); System 1
    and System 2 are drawn as dotted reference lines."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    d = grid.dropna(subset=["calib_samples"]).sort_values("calib_samples")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy (%)", "mean generated tokens"])
    label = d["method"].astype(str) + " " + d["calib_parts"].astype(str)
    for i, (name, t) in enumerate(d.groupby(label, sort=False)):
        for col, y in enumerate(("accuracy", "mean_tokens"), 1):
            fig.add_trace(go.Scatter(x=t["calib_samples"], y=t[y], name=str(name),
                                     legendgroup=str(name), showlegend=col == 1,
                                     mode="lines+markers", line=dict(color=qualitative.Plotly[i % 10]),
                                     hovertext=t.get("model")), row=1, col=col)
    for ref, dash in (("system1", "dot"), ("system2", "dash")):
        r = grid[grid["model"] == ref]
        for col, y in enumerate(("accuracy", "mean_tokens"), 1):
            if len(r):
                fig.add_hline(y=float(r[y].iloc[0]), line_dash=dash, line_color="grey",
                              annotation_text=ref, row=1, col=col)
    fig.update_xaxes(title_text="calibration samples", type="log",
                     tickvals=sorted(d["calib_samples"].unique()))
    return _style(fig, title)


def length_change_by_level(df: pd.DataFrame, reference: str = "system2",
                           title: str = "Length change against System 2 by level",
                           by: str = "level") -> go.Figure:  # noqa: F821
    """Each model's mean-token change against ``reference`` (in %) by level (or dataset), from
    responses."""
    from l2s_kit.analysis import summarize

    s = summarize(df, ("model", by), reference=reference)
    s = s[s["model"] != reference]
    return metric_by_level(s, "length_change", title, f"length change against {reference} (%)",
                           by=by)


def frontier(summary: pd.DataFrame, title: str = "Accuracy against length: the frontier",
             color: str = "method") -> go.Figure:  # noqa: F821
    """:func:`accuracy_vs_length` with the accuracy-against-length Pareto frontier across all
    models drawn as a line."""
    from l2s_kit.analysis import pareto_front

    fig = accuracy_vs_length(summary, color=color, title=title)
    front = pareto_front(summary)
    fig.add_scatter(x=front["mean_tokens"], y=front["accuracy"], mode="lines", name="frontier",
                    line=dict(color="grey", dash="dot"), hoverinfo="skip")
    return fig


def spectrum_curves(values: pd.DataFrame, budget: float | None = None,
                    title: str = "Energy captured against rank") -> go.Figure:  # noqa: F821
    """Cumulative share of each matrix's energy (‖δ‖²_F) against rank / min(m, n), a line per
    matrix coloured by module type, with the 90% line and the rank ``budget`` (a fraction) marked.
    ``values``: :func:`l2s_kit.analysis.spectrum.spectrum_values` (randomized matrices stop at k)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from l2s_kit.analysis.spectrum import ENERGY_TARGET, MODULE_ORDER

    order = {m: i for i, m in enumerate(MODULE_ORDER)}
    v = values.assign(_o=values["module"].map(order)).sort_values(["_o", "name", "index"])
    v = v.assign(x=v["index"] / v[["rows", "cols"]].min(axis=1),
                 y=(v["sigma"] ** 2).groupby(v["name"]).cumsum() / v["energy"])
    fig = go.Figure()
    modules = [m for m in MODULE_ORDER if m in set(v["module"])]
    for name, g in v.groupby("name", sort=False):
        module = g["module"].iloc[0]
        i = modules.index(module)
        fig.add_trace(go.Scatter(x=g["x"], y=g["y"] * 100, mode="lines", name=module,
                                 legendgroup=module, hovertext=name, opacity=0.7,
                                 line=dict(color=qualitative.Plotly[i % 10], width=1.2),
                                 showlegend=bool(name == v.loc[v["module"] == module,
                                                                "name"].iloc[0])))
    fig.add_hline(y=ENERGY_TARGET * 100, line=dict(color="grey", dash="dot"))
    if budget is not None:
        fig.add_vline(x=budget, line=dict(color="grey", dash="dash"),
                      annotation_text=f"budget {budget:.0%}")
    fig.update_xaxes(title_text="rank / min(m, n)", range=[0, 1])
    fig.update_yaxes(title_text="energy captured (%)", range=[0, 101])
    return _style(fig, title)


def spectrum_heatmap(table: pd.DataFrame, value: str = "effective_rank_frac",
                     title: str | None = None) -> go.Figure:  # noqa: F821
    """Layer × module type heatmap of one per-matrix column of
    :func:`l2s_kit.analysis.spectrum.summarize` (default the effective rank as a fraction of min(m, n);
    ``rank_90_frac``, ``energy_at_rank`` …). Matrices outside the layers (embedding, head) are
    left out."""
    import plotly.express as px

    from l2s_kit.analysis.spectrum import MODULE_ORDER

    t = table.dropna(subset=["layer"])
    grid = t.pivot_table(index="layer", columns="module", values=value, aggfunc="mean")
    grid = grid[[m for m in MODULE_ORDER if m in grid.columns]]
    label = HEATMAP_LABELS.get(value, value.replace("_", " "))
    fig = px.imshow(grid.to_numpy(dtype=float), x=list(grid.columns),
                    y=[str(i) for i in grid.index], color_continuous_scale="Viridis",
                    aspect="auto", text_auto=".2f", labels=dict(color=""))
    fig.update_xaxes(title_text="module")
    fig.update_yaxes(title_text="layer", autorange="reversed")
    return _style(fig, title or f"{label}, by layer and module")


HEATMAP_LABELS = {"effective_rank_frac": "Effective rank / min(m, n)",
                  "rank_90_frac": "Rank for 90% of the energy / min(m, n)",
                  "rank_99_frac": "Rank for 99% of the energy / min(m, n)",
                  "energy_at_rank": "Share of the energy at the rank budget",
                  "stable_rank_frac": "Stable rank / min(m, n)"}


def low_rank_summary(verdict: pd.DataFrame, sentence: str,
                     title: str = "Is the task vector low-rank enough for SVD merging?"
                     ) -> go.Figure:  # noqa: F821
    """Bars: the share of parameters in low-rank matrices per module type and overall, against
    the rule's threshold; the answer (:func:`l2s_kit.analysis.spectrum.low_rank_verdict`) under the title."""
    import plotly.graph_objects as go

    from l2s_kit.analysis.spectrum import SHARE_TARGET

    colors = ["#2ca02c" if ok else "#d62728" for ok in verdict["low_rank"]]
    fig = go.Figure(go.Bar(x=verdict["module"], y=verdict["low_rank_share"] * 100,
                           marker_color=colors,
                           text=[f"{s:.0%}" for s in verdict["low_rank_share"]],
                           customdata=verdict["median_energy_at_rank"] * 100,
                           hovertemplate="%{x}: %{y:.1f}% of parameters low-rank; median energy "
                           "at the budget %{customdata:.1f}%<extra></extra>"))
    fig.add_hline(y=SHARE_TARGET * 100, line=dict(color="grey", dash="dot"),
                  annotation_text=f"rule: {SHARE_TARGET:.0%}")
    fig.update_yaxes(title_text="parameters in low-rank matrices (%)", range=[0, 105])
    fig.update_xaxes(title_text="module")
    head, _, rest = sentence.partition(": ")
    lines = "".join(f"<br><sup>{x}</sup>" for x in (head + ":", rest) if x.strip(":"))
    return _style(fig, title + lines).update_layout(margin=dict(t=100))


def save_figure(fig, path: str | os.PathLike, png: bool = False) -> list[Path]:
    """Write ``path`` (.html, self-contained: plotly.js inlined, opens offline) and, with ``png``,
    a PNG beside it (kaleido; needs a Chromium). Files appear atomically. Returns the paths."""
    from l2s_kit.io import atomic_file

    path = Path(path).with_suffix(".html")
    with atomic_file(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True)
    if not png:
        return [path]
    with atomic_file(path.with_suffix(".png")) as tmp:
        fig.write_image(tmp, width=900, height=HEIGHT, scale=2)
    return [path, path.with_suffix(".png")]
