"""DataFrame → plotly Figure, in one visual style, and ``save_figure``.

Each function takes a tidy table as :func:`l2s_kit.analysis.summarize` or
:func:`l2s_kit.analysis.reflection.reflection_summary` return it and gives back a
``plotly.graph_objects.Figure``. Notebooks draw only through these.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pandas as pd

from l2s_kit.errors import FigureExportError

TEMPLATE = "plotly_white"
HEIGHT = 420


def _style(fig, title: str):
    fig.update_layout(template=TEMPLATE, title=title, height=HEIGHT, legend_title_text="",
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


REFERENCES = {"system1": ("System 1", "diamond", "#9e9e9e"),
              "system2": ("System 2", "star", "#303030")}
# 23 colours drawn together (plotly's Dark24 without its near-black, kept for System 2); past
# 23 methods the marker symbol changes too, so no two methods ever look the same
PALETTE = ['#2E91E5', '#E15F99', '#1CA71C', '#FB0D0D', '#DA16FF', '#B68100', '#750D86',
           '#EB663B', '#511CFB', '#00A08B', '#FB00D1', '#FC0080', '#B2828D', '#6C7C32',
           '#778AAE', '#862A16', '#A777F1', '#620042', '#1616A7', '#DA60CA', '#6C4516',
           '#0D2A63', '#AF0038']
SYMBOLS = ["circle", "square", "triangle-up", "x", "cross"]
PNG_SCALE = 3  # 900 px wide figures → 2700 px: about 360 dpi at 7.5 inches, print resolution


def styles(names) -> dict[str, tuple[str, str]]:
    """name → (colour, marker symbol), distinct for every name, in the order given; System 1
    and System 2 (model names ``system1``, ``system2``) get their own grey ones."""
    out, i = {}, 0
    for n in dict.fromkeys(names):
        if n in REFERENCES:
            out[n] = (REFERENCES[n][2], REFERENCES[n][1])
            continue
        out[n] = (PALETTE[i % len(PALETTE)], SYMBOLS[(i // len(PALETTE)) % len(SYMBOLS)])
        i += 1
    return out


def model_colors(summary: pd.DataFrame, color: str = "method") -> dict[str, str]:
    """model → the colour :func:`accuracy_vs_length` gives it (its ``color`` group's; System 1 and
    System 2 their grey ones), so every figure of a run draws a model in one colour."""
    is_ref = summary["model"].isin(list(REFERENCES))
    look = styles(summary.loc[~is_ref, color].astype(str))
    out = {m: REFERENCES[m][2] for m in summary.loc[is_ref, "model"]}
    out.update({m: look[str(g)][0] for m, g in zip(summary.loc[~is_ref, "model"],
                                                   summary.loc[~is_ref, color])})
    return out


def display_name(model: str) -> str:
    """"system1" → "System 1", "system2" → "System 2", others as they are."""
    return REFERENCES[model][0] if model in REFERENCES else str(model)


def _errors(g: pd.DataFrame, value: str, lo: str, hi: str, color: str) -> dict | None:
    """plotly error bars from interval columns ``lo``/``hi`` around ``value`` (None without them)."""
    if lo not in g or hi not in g or g[lo].isna().all():
        return None
    return dict(type="data", symmetric=False, array=(g[hi] - g[value]).clip(lower=0).tolist(),
                arrayminus=(g[value] - g[lo]).clip(lower=0).tolist(), color=color, thickness=1,
                width=3)


SHARED_COLOR = "#3f3f3f"  # a point that stands for merges of several methods


def _spot(r) -> tuple:
    return (round(float(r["mean_tokens"]), 6), round(float(r["accuracy"]), 6))


def _shared_spots(merges: pd.DataFrame, refs: pd.DataFrame, color: str, label: str
                  ) -> tuple[pd.DataFrame, dict, dict]:
    """Identical points are one marker naming every model it stands for: (the merges drawn in
    their method's colour, spot → the merges of several methods that share it, reference
    label → the merges at that reference's point)."""
    ref_at = {_spot(r): r[label] for _, r in refs.iterrows()}
    by_spot: dict[tuple, list] = {}
    for i, r in merges.iterrows():
        by_spot.setdefault(_spot(r), []).append(i)
    shared, at_ref, alone = {}, {}, []
    for spot, rows in by_spot.items():
        if spot in ref_at:
            at_ref.setdefault(ref_at[spot], []).extend(rows)
        elif merges.loc[rows, color].astype(str).nunique() > 1:
            shared[spot] = rows
        else:
            alone += rows
    return merges.loc[sorted(alone)], shared, at_ref


def _names(rows: pd.DataFrame, label: str, most: int = 6) -> str:
    """The models of ``rows`` for a hover text, one per line."""
    names = [str(n) for n in rows[label]]
    return "<br>".join(names[:most]) + (f"<br>… {len(names) - most} more"
                                        if len(names) > most else "")


def _merge_traces(fig, merges, look, tags, color, label, extra) -> None:
    """One trace per method; a spot holding several merges of the method is one marker whose
    hover names them all."""
    import plotly.graph_objects as go

    for name, g in merges.groupby(merges[color].astype(str), sort=False):
        c, sym = look[name]
        g = g.assign(_spot=[_spot(r) for _, r in g.iterrows()])
        first = g.drop_duplicates("_spot")
        hover = [_names(g[g["_spot"] == s], label) for s in first["_spot"]]
        fig.add_trace(go.Scatter(
            x=first["mean_tokens"], y=first["accuracy"], mode="markers+text", name=name,
            cliponaxis=False, text=[tags.get(i, "") for i in first.index],
            textposition="middle right", textfont=dict(size=9, color=c),
            marker=dict(size=11, color=c, symbol=sym, line=dict(width=1, color="white")),
            error_x=_errors(first, "mean_tokens", "tokens_lo", "tokens_hi", c),
            error_y=_errors(first, "accuracy", "accuracy_lo", "accuracy_hi", c),
            hovertext=hover, customdata=first[extra] if extra else None,
            hovertemplate="<b>%{hovertext}</b><br>%{x:.1f} tokens, %{y:.1f}%"
            + "".join(f"<br>{e}: %{{customdata[{i}]}}" for i, e in enumerate(extra))
            + "<extra></extra>"))


def _shared_traces(fig, merges, shared: dict, label: str) -> None:
    """One dark marker per spot that merges of several methods share, its count written on it."""
    import plotly.graph_objects as go

    for k, ((x, y), rows) in enumerate(shared.items()):
        g = merges.loc[rows]
        fig.add_trace(go.Scatter(
            x=[x], y=[y], mode="markers+text", cliponaxis=False, showlegend=k == 0,
            name="several methods, same numbers", text=[f"×{len(rows)}"],
            textposition="middle right", textfont=dict(size=10, color=SHARED_COLOR),
            marker=dict(size=14, color=SHARED_COLOR, symbol="hexagon",
                        line=dict(width=1, color="white")),
            hovertext=[_names(g, label, 12)],
            hovertemplate="<b>%{hovertext}</b><br>%{x:.1f} tokens, %{y:.1f}%<extra></extra>"))


def _reference_traces(fig, refs, at_ref: dict, merges, label: str, y_range, x_range) -> None:
    import plotly.graph_objects as go

    for _, r in refs.iterrows():
        name, sym, c = REFERENCES[r[label]]
        also = merges.loc[at_ref.get(r[label], [])]
        below = (r["accuracy"] - y_range[0]) / (y_range[1] - y_range[0]) > 0.3
        # at the right edge the label reads leftwards, into the plot, not into the legend
        right = r["mean_tokens"] > x_range[0] + 0.85 * (x_range[1] - x_range[0])
        shown = name + (f" (and {len(also)} merge{'s' * (len(also) > 1)})" if len(also) else "")
        fig.add_trace(go.Scatter(
            x=[r["mean_tokens"]], y=[r["accuracy"]], mode="markers+text", name=name,
            text=[shown], hovertext=[_names(pd.concat([r.to_frame().T, also]), label, 12)],
            cliponaxis=False,  # at the right edge: above, leftwards (merges crowd below)
            textposition="top left" if right else "bottom center" if below else "top center",
            textfont=dict(size=12, color=c),
            marker=dict(size=18, color=c, symbol=sym, line=dict(width=1.5, color="white")),
            error_x=_errors(r.to_frame().T, "mean_tokens", "tokens_lo", "tokens_hi", c),
            error_y=_errors(r.to_frame().T, "accuracy", "accuracy_lo", "accuracy_hi", c),
            hovertemplate="<b>%{hovertext}</b><br>%{x:.1f} tokens, %{y:.1f}%<extra></extra>"))


def accuracy_vs_length(summary: pd.DataFrame, color: str = "method", label: str = "model",
                       title: str = "Accuracy against length", labelled: str | None = "selected",
                       front: bool = False) -> go.Figure:  # noqa: F821
    """One point per model: mean generated tokens (x) against accuracy (y). Merges are coloured
    by ``color`` (every method its own colour), System 1 and System 2 are large grey markers of
    their own drawn on top, and the models flagged in the bool column ``labelled`` (the chosen
    merges; without such a column, those on the Pareto front) carry their name on the plot.
    Identical points are one marker naming every model it stands for (a dark hexagon where
    merges of several methods meet; "System 1 (and 6 merges)" at a reference's point).
    ``front`` draws the accuracy-against-length Pareto front as a dotted line. With interval
    columns (``accuracy_lo``/``_hi``, ``tokens_lo``/``_hi``, :func:`l2s_kit.analysis.full_summary`)
    every point has its 95% error bars on both axes."""
    import plotly.graph_objects as go

    from l2s_kit.analysis import pareto_front

    fig = go.Figure()
    f = pareto_front(summary) if len(summary) else summary
    if front and len(summary):
        fig.add_trace(go.Scatter(x=f["mean_tokens"], y=f["accuracy"], mode="lines",
                                 name="Pareto front", line=dict(color="#7f7f7f", dash="dot"),
                                 hoverinfo="skip"))
    is_ref = summary[label].isin(list(REFERENCES))
    merges, refs = summary[~is_ref], summary[is_ref]
    alone, shared, at_ref = _shared_spots(merges, refs, color, label)
    extra = [c for c in ("parameters", "length_change", "accuracy_change", "n") if c in summary]
    _merge_traces(fig, alone, styles(merges[color].astype(str)),
                  _spot_tags(alone, refs, labelled), color, label, extra)
    _shared_traces(fig, merges, shared, label)
    low = float(summary["accuracy"].min()) if len(summary) else 0.0
    y_range = [max(-2.0, low - 8), 104]
    xs = summary["mean_tokens"].astype(float)
    _reference_traces(fig, refs, at_ref, merges, label, y_range,
                      (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0))
    if labelled is not None and labelled in summary:
        marked = merges[merges[labelled].astype(bool)]
    elif labelled is not None and len(summary):
        marked = _on_front(merges, f)
    else:
        marked = merges.iloc[:0]
    same = {_spot(r): REFERENCES[r[label]][0] for _, r in refs.iterrows()}
    _label_points(fig, marked, label, y_range, same)
    fig.update_xaxes(title_text="mean generated tokens")
    fig.update_yaxes(title_text="accuracy (%)", range=y_range)  # annotations do not stretch it
    return _style(fig, title)


def _symbol(name: str) -> str:
    """A parameter named after a Greek letter is written as that letter ("alpha" → "α")."""
    try:
        return unicodedata.lookup(f"GREEK SMALL LETTER {name.upper().replace('LAMBDA', 'LAMDA')}")
    except KeyError:
        return name


def _numeric_settings(parameters: str) -> list[tuple[str, str]]:
    """"k=0.8, alpha=1.0, trim=global" → [("k", "0.8"), ("alpha", "1.0")]: a merge's numeric
    settings (switches and names, such as ``inner=ties``, are left to the hover text)."""
    parts = [p.strip().split("=", 1) for p in str(parameters or "").split(",") if "=" in p]
    out = []
    for k, v in parts:
        try:
            float(v)
        except ValueError:
            continue
        out.append((k, v))
    return out


def _compact(parameters: str) -> str:
    """"k=0.8, alpha=1.0" → "k 0.8 α 1.0": a merge's numeric settings, short enough to sit by
    its point."""
    return " ".join(f"{_symbol(k)} {v}" for k, v in _numeric_settings(parameters))


def _spot_tags(merges: pd.DataFrame, refs: pd.DataFrame, labelled: str | None) -> dict:
    """row index → the settings written beside a merge's point, so points of one method can be
    told apart: one tag per spot, on its first point, listing every merge there (up to two, then
    how many more); none where a box names the merges (the chosen ones), a reference sits, or
    other points crowd it (their settings are in the hover text)."""
    if "parameters" not in merges:
        return {}
    taken = {_spot(r) for _, r in refs.iterrows()}
    spots: dict[tuple, list] = {}
    for i, r in merges.iterrows():
        spots.setdefault(_spot(r), []).append(i)
    xs = [x for x, _ in spots] + [x for x, _ in taken]
    x_span = (max(xs) - min(xs)) or 1.0 if xs else 1.0

    def crowded(spot) -> bool:  # another point within ~4% of the width and 8 points of accuracy
        return any(o != spot and abs(o[0] - spot[0]) < 0.04 * x_span and abs(o[1] - spot[1]) < 8
                   for o in [*spots, *taken])

    out = {}
    for spot, rows in spots.items():
        boxed = labelled in merges and merges.loc[rows, labelled].astype(bool).any()
        if spot in taken or boxed or crowded(spot):
            continue
        names = [_compact(merges.loc[i, "parameters"]) or str(merges.loc[i, "model"])
                 for i in rows]
        out[rows[0]] = " / ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else "")
    return out


def _label_points(fig, rows: pd.DataFrame, label: str, y_range: list[float],
                  same: dict | None = None) -> None:
    """Each row's name in a box tied to its point; names of points at the same place share one
    box. Going left to right, the boxes of points in the upper part of the plot stack below
    them (above them in the lower part), each box to the left of its point (to the right in
    the plot's left third), so no line crosses another box. ``same``: (x, y) → the name of a
    reference drawn there ("same as System 2" is added to that box)."""
    spots: dict[tuple, list[str]] = {}
    for _, r in rows.sort_values("mean_tokens").iterrows():
        spots.setdefault(_spot(r), []).append(
            display_name(r[label]))
    if not spots:
        return
    for xy, name in (same or {}).items():
        if xy in spots:
            spots[xy].append(f"<i>(same as {name})</i>")
    xs = [x for x, _ in spots]
    x_lo, x_span = min(xs), (max(xs) - min(xs)) or 1.0
    depth = {True: 30, False: 30}  # pixels already taken below (True) and above (False)
    for (x, y), names in spots.items():
        high = (y - y_range[0]) / (y_range[1] - y_range[0]) > 0.55
        left_third = len(spots) > 1 and (x - x_lo) / x_span < 0.34
        fig.add_annotation(x=x, y=y, text="<br>".join(names), showarrow=True, arrowhead=0,
                           arrowwidth=1, arrowcolor="#7f7f7f", ax=12 if left_third else -12,
                           ay=depth[high] if high else -depth[high],
                           xanchor="left" if left_third else "right",
                           yanchor="top" if high else "bottom", font=dict(size=11),
                           bgcolor="rgba(255,255,255,0.85)", bordercolor="#c8c8c8",
                           borderpad=2, align="left")
        depth[high] += 16 * len(names) + 12


# The per-model numbers of a summary: models are one entry in a figure only when all are equal.
SUMMARY_NUMBERS = ("accuracy", "mean_tokens", "mean_length", "reflection_ratio", "mean_keywords")


def same_results(table: pd.DataFrame, columns, key: str = "model",
                 by: str | None = "level") -> pd.DataFrame:
    """``table`` with the rows of models whose ``columns`` are equal (at every ``by`` value)
    kept once, under a name listing all of them ("A = B = C"): identical merges drawn as one
    entry instead of lines lying on top of each other. Adds ``label`` (that name) and keeps the
    first model's rows."""
    cols = [c for c in columns if c in table]
    order = list(dict.fromkeys(table[key]))
    sig = {}
    for m, g in table.groupby(key, sort=False):
        g = g.sort_values(by) if by else g
        sig[m] = tuple(tuple(g[by]) if by else ()) + tuple(
            round(float(v), 6) for c in cols for v in g[c].fillna(-1))
    groups: dict[tuple, list] = {}
    for m in order:
        groups.setdefault(sig[m], []).append(m)
    # more than two names go one per line, so a legend entry never runs off the figure
    names = {ms[0]: (" = " if len(ms) <= 2 else " =<br>").join(display_name(m) for m in ms)
             for ms in groups.values()}
    keep = table[table[key].isin(list(names))]
    return keep.assign(label=keep[key].map(names))


def level_bars(table: pd.DataFrame, title: str = "Length, accuracy and reflection by "
               "difficulty level", by: str = "level",
               colors: dict[str, str] | None = None) -> go.Figure:  # noqa: F821
    """The paper's Figure 2: mean length, accuracy and reflection against the difficulty level
    (or ``by="dataset"``), grouped bars per model, one panel each, System 1 and System 2 in grey
    and models with identical results as one entry; length and accuracy carry their 95% error
    bars when the table has interval columns. ``colors``: model → colour (default: one each;
    :func:`model_colors` gives those of the run's accuracy-against-length figure). ``table``: a by-level summary
    (:func:`l2s_kit.analysis.model_summary` by model and level, or
    :func:`l2s_kit.analysis.by_level`)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    length = "mean_tokens" if "mean_tokens" in table else "mean_length"
    unit = "tokens" if length == "mean_tokens" else str(table["length_unit"].iloc[0])
    if "mean_keywords" in table:
        refl, refl_label, scale = "mean_keywords", "reflection keywords per response", 1
    else:
        refl, refl_label, scale = "reflection_ratio", "reflective responses (%)", 100
    panels = [(length, f"mean length ({unit})", 1), ("accuracy", "accuracy (%)", 1),
              (refl, refl_label, scale)]
    bounds = {length: ("tokens_lo", "tokens_hi"), "accuracy": ("accuracy_lo", "accuracy_hi")}
    t = same_results(table, [p for p, _, _ in panels], by=by)
    look = styles(t["model"])
    look.update({m: (c, look[m][1]) for m, c in (colors or {}).items() if m in look})
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[lab for _, lab, _ in panels])
    for model, g in t.groupby("model", sort=False):
        g = g.sort_values(by)
        x = [f"{by} {int(v)}" if by == "level" else str(v) for v in g[by]]
        for row, (y, _, s) in enumerate(panels, 1):
            lo, hi = bounds.get(y, ("", ""))
            fig.add_trace(go.Bar(x=x, y=g[y] * s, name=g["label"].iloc[0], legendgroup=model,
                                 showlegend=row == 1, marker_color=look[model][0],
                                 error_y=_errors(g, y, lo, hi, "#505050"),
                                 hovertemplate=f"{g['label'].iloc[0]}<br>%{{x}}: %{{y:.3g}}"
                                 "<extra></extra>"), row=row, col=1)
    fig.update_layout(barmode="group", bargap=0.18)
    _style(fig, title)
    fig.update_layout(height=860, margin=dict(t=100), legend=dict(orientation="h", yanchor="top", y=-0.05,
                                              xanchor="left", x=0))
    return fig


def metric_by_level(table: pd.DataFrame, y: str, title: str, y_label: str,
                    color: str = "model", by: str = "level",
                    colors: dict[str, str] | None = None) -> go.Figure:  # noqa: F821
    """A line per model of ``y`` against the difficulty level; with ``by="dataset"`` (data
    without levels), grouped bars per dataset instead. System 1 and System 2 are grey, and
    models with identical values are one entry named after all of them."""
    import plotly.graph_objects as go

    # one entry only for models equal in every number of the table, not only in y: a legend
    # "System 2 = TA α 0.2" says the two are the same model
    t = (same_results(table, [y, *SUMMARY_NUMBERS], key=color, by=by) if color == "model"
         else table.assign(label=table[color].astype(str)))
    look = styles(t[color].astype(str))
    fig = go.Figure()
    for name, g in t.groupby(color, sort=False):
        g = g.sort_values(by)
        c, sym = look[str(name)]
        c = (colors or {}).get(str(name), c)
        if by == "level":
            fig.add_trace(go.Scatter(x=g[by], y=g[y], mode="lines+markers", name=g["label"].iloc[0],
                                     line=dict(color=c), marker=dict(symbol=sym, size=8)))
        else:
            fig.add_trace(go.Bar(x=g[by].astype(str), y=g[y], name=g["label"].iloc[0],
                                 marker_color=c))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="difficulty level" if by == "level" else by,
                     **({"dtick": 1} if by == "level" else {}))
    fig.update_yaxes(title_text=y_label)
    return _style(fig, title)


def after_answer(table: pd.DataFrame, by: str = "level",
                 title: str = "Where the length goes: tokens generated after the answer was "
                 "first stated", colors: dict[str, str] | None = None) -> go.Figure:  # noqa: F821
    """The share of each model's tokens spent after its response first stated the right answer
    (``after_answer_share``, :func:`l2s_kit.analysis.trace.summary`) by level (or dataset): the
    overthinking a long-to-short merge removes."""
    return metric_by_level(table, "after_answer_share", title,
                           "tokens after the first correct answer (% of all)", by=by, colors=colors)


def length_distribution(df: pd.DataFrame, length: str = "n_tokens",
                        title: str = "Length distribution by level",
                        by: str = "level") -> go.Figure:  # noqa: F821
    """A box per model and level (or ``by="dataset"``) of the responses' ``length`` (responses
    without one are left out)."""
    import plotly.express as px

    d = df.dropna(subset=[by])
    fig = px.box(d, x=by, y=length, color="model", points=False,
                 color_discrete_map={m: c for m, (c, _) in styles(d["model"]).items()},
                 labels={"level": "difficulty level", length: length.removeprefix("n_")})
    if by == "level":
        fig.update_xaxes(dtick=1)
    return _style(_display_names(fig), title)


def _display_names(fig):
    """Legend entries "System 1" / "System 2" for the models system1 / system2 (plotly express
    names traces after the values; their legend group keeps the model's name)."""
    return fig.for_each_trace(lambda t: t.update(name=display_name(t.name)))


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
                 color_discrete_map={m: c for m, (c, _) in styles(f["model"]).items()},
                 labels={"per_100": "occurrences per 100 responses"})
    return _style(_display_names(fig), title)


def false_reflection(summary: pd.DataFrame, title: str = "False reflection (%)") -> go.Figure:  # noqa: F821
    """Grouped bars per model: reflective and wrong (share of all responses), and wrong among
    the reflective ones. ``summary``: :func:`l2s_kit.analysis.reflection.reflection_summary`."""
    import plotly.express as px

    names = {"false_reflection": "reflective and wrong (% of all responses)",
             "wrong_among_reflective": "wrong among the reflective responses (%)"}
    long = summary.melt(id_vars="model", value_vars=list(names))
    long = long.assign(percent=100 * long["value"], measure=long["variable"].map(names),
                       model=long["model"].map(display_name))
    fig = px.bar(long, x="model", y="percent", color="measure", barmode="group",
                 labels={"percent": "% of responses", "model": "", "measure": ""})
    return _style(fig, title)


def layer_coefficients(table: pd.DataFrame, title: str | None = None) -> go.Figure:  # noqa: F821
    """A bar per layer group of a merge's per-layer coefficient (columns ``group``,
    ``coefficient``; with a ``method`` column, one bar per method side by side, named by its
    ``label`` when given: :func:`l2s_kit.study.calibration.layer_coefficients_table`). A dotted
    line marks 1, the inner merge unchanged. The title names the method when there is one."""
    import plotly.express as px

    if "method" in table and "label" in table:
        table = table.assign(method=table["label"])
    if title is None:
        names = table["method"].unique() if "method" in table else []
        title = (f"{names[0]}: " if len(names) == 1 else "") + "System 2's coefficient per layer"
    fig = px.bar(table, x="group", y="coefficient", barmode="group",
                 color="method" if "method" in table else None,
                 labels={"group": "layer group", "method": "method"})
    fig.add_hline(y=1, line_dash="dot", line_color="grey")
    return _style(fig, title)


def level_panels(table: pd.DataFrame, title: str = "By difficulty level",
                 color: str = "model", by: str = "level") -> go.Figure:  # noqa: F821
    """Accuracy, mean length and reflection ratio against the level (or ``by="dataset"``), side
    by side, a line per model. ``table``: :func:`l2s_kit.analysis.by_level` (columns level or
    dataset, accuracy, mean_length, length_unit, reflection_ratio)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    unit = table["length_unit"].iloc[0] if len(table) else "tokens"
    panels = [("accuracy", "accuracy (%)", 1), ("mean_length", f"mean length ({unit})", 1),
              ("reflection_ratio", "reflective responses (%)", 100)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t, _ in panels],
                        horizontal_spacing=0.08)
    if color == "model":  # identical models as one line named after all of them
        table = same_results(table, [p for p, _, _ in panels], by=by)
    else:
        table = table.assign(label=table[color].astype(str))
    look = styles(table[color].astype(str))
    for name, t in table.groupby(color, sort=False):
        t = t.sort_values(by)
        c, sym = look[str(name)]
        for col, (y, _, scale) in enumerate(panels, 1):
            fig.add_trace(go.Scatter(x=t[by], y=t[y] * scale, name=t["label"].iloc[0],
                                     legendgroup=str(name), showlegend=col == 1,
                                     mode="lines+markers", line=dict(color=c),
                                     marker=dict(symbol=sym)),
                          row=1, col=col)
    if by == "level":
        fig.update_xaxes(title_text="difficulty level", dtick=1)
    else:
        fig.update_xaxes(title_text=by, type="category")
    return _style(fig, title)


def sensitivity(summary: pd.DataFrame, param: str, others: tuple[str, ...] | None = None,
                title: str | None = None) -> go.Figure:  # noqa: F821
    """Accuracy and mean length against one merge parameter: a line per method and setting of
    its other numeric parameters (or of the ``others`` columns only). ``summary``: one row per
    model with ``method``, ``parameters`` and parameter columns
    (:meth:`l2s_kit.study.explorer.Explorer.sweep`)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = summary.dropna(subset=[param]).sort_values(param)
    label = d["method"].astype(str)
    if others is None and "parameters" in d:
        label = label + d["parameters"].map(lambda s: "".join(
            f" {k}={float(v):g}" for k, v in _numeric_settings(s) if k != param))
    for o in [o for o in others or () if o != param and o in d.columns]:
        label = label + d[o].map(lambda v, o=o: "" if pd.isna(v) else f" {o}={v:g}")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy (%)", "mean generated tokens"])
    look = styles(label)
    for name, t in d.groupby(label, sort=False):
        c, sym = look[name]
        for col, y in enumerate(("accuracy", "mean_tokens"), 1):
            fig.add_trace(go.Scatter(x=t[param], y=t[y], name=str(name), legendgroup=str(name),
                                     showlegend=col == 1, mode="lines+markers",
                                     line=dict(color=c), marker=dict(symbol=sym),
                                     hovertext=t.get("model")), row=1, col=col)
    fig.update_xaxes(title_text=param)
    return _style(fig, title or f"Sensitivity to {param}")


def calibration_sensitivity(grid: pd.DataFrame, title: str = "Sensitivity to the calibration set"
                            ) -> go.Figure:  # noqa: F821
    """Accuracy and mean length against the number of calibration samples (log axis), a line per
    method and calibration parts. ``grid``: one row per merge with ``method``,
    ``calibration_parts`` and ``calibration_samples`` columns (:func:`l2s_kit.study.calibration.calibration_grid`); System 1
    and System 2 are drawn as dotted reference lines."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = grid.dropna(subset=["calibration_samples"]).sort_values("calibration_samples")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy (%)", "mean generated tokens"])
    label = d["method"].astype(str) + " " + d["calibration_parts"].astype(str)
    look = styles(label)
    for name, t in d.groupby(label, sort=False):
        c, sym = look[name]
        for col, y in enumerate(("accuracy", "mean_tokens"), 1):
            fig.add_trace(go.Scatter(x=t["calibration_samples"], y=t[y], name=str(name),
                                     legendgroup=str(name), showlegend=col == 1,
                                     mode="lines+markers", line=dict(color=c),
                                     marker=dict(symbol=sym), hovertext=t.get("model")),
                          row=1, col=col)
    for ref, dash in (("system1", "dot"), ("system2", "dash")):
        r = grid[grid["model"] == ref]
        for col, y in enumerate(("accuracy", "mean_tokens"), 1):
            if len(r):
                fig.add_hline(y=float(r[y].iloc[0]), line_dash=dash, line_color="grey",
                              annotation_text=ref, row=1, col=col)
    fig.update_xaxes(title_text="calibration samples", type="log",
                     tickvals=sorted(d["calibration_samples"].unique()))
    return _style(fig, title)


def length_change_by_level(df: pd.DataFrame, reference: str = "system2",
                           title: str = "Length change against System 2 by level",
                           by: str = "level") -> go.Figure:  # noqa: F821
    """Each model's mean-token change against ``reference`` (in %) by level (or dataset), from
    responses."""
    from l2s_kit.analysis import summarize

    s = summarize(df, ("model", by), reference=reference)
    s = s[s["model"] != reference]
    return metric_by_level(s, "length_change", title,
                           f"length change against {display_name(reference)} (%)", by=by)


def frontier(summary: pd.DataFrame, title: str = "Accuracy against length: the frontier",
             color: str = "method", labelled: str | None = "selected") -> go.Figure:  # noqa: F821
    """:func:`accuracy_vs_length` with the accuracy-against-length Pareto front across all
    models drawn, and the chosen merges (column ``labelled``; without it, the merges on the
    front) named on the plot."""
    return accuracy_vs_length(summary, color=color, title=title, labelled=labelled, front=True)


def family_fronts(summary: pd.DataFrame, family: str = "family",
                  title: str = "Accuracy against length: the front of each method family"
                  ) -> go.Figure:  # noqa: F821
    """Every merge as a point coloured by its ``family`` column, each family's own Pareto front
    as a line of its colour, System 1 and System 2 as their own markers, and the merges on the
    overall front named."""
    import plotly.graph_objects as go

    from l2s_kit.analysis import pareto_front

    fig = accuracy_vs_length(summary, color=family, title=title, labelled=None)
    look = styles(summary.loc[~summary["model"].isin(list(REFERENCES)), family].astype(str))
    refs = summary[summary["model"].isin(list(REFERENCES))]
    for name, g in summary[~summary["model"].isin(list(REFERENCES))].groupby(family, sort=False):
        f = pareto_front(pd.concat([g, refs]))
        fig.add_trace(go.Scatter(x=f["mean_tokens"], y=f["accuracy"], mode="lines",
                                 line=dict(color=look[str(name)][0], width=1.5),
                                 name=f"{name}: front", legendgroup=str(name), showlegend=False,
                                 hoverinfo="skip"))
    merges = summary[~summary["model"].isin(list(REFERENCES))]
    low = float(summary["accuracy"].min()) if len(summary) else 0.0
    _label_points(fig, _on_front(merges, pareto_front(summary)), "model", [max(-2.0, low - 8), 104])
    return fig


def _on_front(rows: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
    """The rows at a point of ``front`` (every model there, not only the one the front kept)."""
    at = set(zip(front["mean_tokens"].round(9), front["accuracy"].round(9)))
    return rows[[xy in at for xy in zip(rows["mean_tokens"].round(9), rows["accuracy"].round(9))]]


def tune_trials(trials: pd.DataFrame, reference: float | None = None,
                title: str = "The search, trial by trial") -> go.Figure:  # noqa: F821
    """Mean generated tokens of every trial of :func:`l2s_kit.study.tune.tune` in the order
    they ran: promoted trials on the whole validation split (filled, feasible ones green),
    pruned ones on the subset (hollow), the best feasible length so far as a step line, and
    System 2's length (``reference``) dotted."""
    import plotly.graph_objects as go

    t = trials.sort_values("trial")
    fig = go.Figure()
    pruned = t[t["rung"] == "subset"]
    full = t[t["rung"] == "validation"]
    fig.add_trace(go.Scatter(x=pruned["trial"], y=pruned["subset_mean_tokens"], mode="markers",
                             name="pruned on the subset", hovertext=pruned["model"],
                             marker=dict(symbol="circle-open", size=9, color="#7f7f7f")))
    within = full["within"].astype(bool)
    for g, name, color in ((full[within], "within tolerance", "#2ca02c"),
                           (full[~within], "below tolerance", "#d62728")):
        fig.add_trace(go.Scatter(x=g["trial"], y=g["mean_tokens"], mode="markers", name=name,
                                 hovertext=g["model"], marker=dict(size=10, color=color)))
    best = t["mean_tokens"].where(t["within"].fillna(False).astype(bool)).cummin()
    fig.add_trace(go.Scatter(x=t["trial"], y=best, mode="lines", line_shape="hv",
                             name="best so far", line=dict(color="#2ca02c", dash="dash")))
    if reference is not None:
        fig.add_hline(y=reference, line=dict(color="#303030", dash="dot"),
                      annotation_text="System 2")
    fig.update_xaxes(title_text="trial", dtick=1 if len(t) <= 20 else None)
    fig.update_yaxes(title_text="mean generated tokens", rangemode="tozero")
    return _style(fig, title)


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
    """Write ``path`` (.html) and, with ``png``, a PNG beside it at print resolution (kaleido;
    needs a Chromium). The HTML loads ``plotly.min.js`` from its own folder, written there once
    (a folder of figures carries one copy of plotly.js and opens offline as a whole). Files
    appear atomically. Returns the paths."""
    from l2s_kit.io import atomic_file

    path = Path(path).with_suffix(".html")
    plotly_js(path.parent)
    with atomic_file(path) as tmp:
        fig.write_html(tmp, include_plotlyjs="plotly.min.js", full_html=True)
    if not png:
        return [path]
    export_png(fig, path.with_suffix(".png"))
    return [path, path.with_suffix(".png")]


PNG_TRIES = 3  # kaleido's browser fails now and then on a busy machine: tries, waiting longer


def export_png(fig, path: Path, tries: int | None = None) -> None:
    """Write ``fig`` as a PNG at print resolution (kaleido with a Chromium), trying again after
    1 s, 4 s, ... when the export fails; raises :class:`FigureExportError` naming the file and the
    last error when every try failed (nothing is left at ``path`` then)."""
    import time

    from l2s_kit.io import atomic_file

    tries = tries or PNG_TRIES
    last = None
    for i in range(tries):
        if i:
            time.sleep(4 ** (i - 1))
        try:
            with atomic_file(path) as tmp:
                fig.write_image(tmp, width=900, height=fig.layout.height or HEIGHT, scale=PNG_SCALE)
            return
        except Exception as e:  # kaleido raises its own and the browser's errors
            last = e
    raise FigureExportError(f"{path}: PNG export failed {tries} times ({type(last).__name__}: "
                            f"{str(last).strip().splitlines()[0] if str(last).strip() else ''})")


def plotly_js(folder: str | os.PathLike) -> Path:
    """``folder/plotly.min.js``, the installed plotly's bundle, written unless it is there."""
    from plotly.offline import get_plotlyjs

    from l2s_kit.io import atomic_file

    path = Path(folder) / "plotly.min.js"
    js = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(js.encode()):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(js, encoding="utf-8")
    return path
