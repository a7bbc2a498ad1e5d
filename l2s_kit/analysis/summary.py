"""Accuracy and length per group, as tidy DataFrames, and the paper's Table 1.

Input is the responses DataFrame (one row per sample, columns ``model``, ``dataset``, ``level``,
``correct``, ``n_tokens``; see :func:`l2s_kit.evaluate.load_responses`). Length changes are
relative to a reference model (the System 2 model in the paper): negative = shorter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from l2s_kit.analysis import reflection, sampling, stats, trace
from l2s_kit.analysis.outputs import length_column
from l2s_kit.errors import L2SError
from l2s_kit.io.shared import md_text

METRICS = ("accuracy", "tokens")


class SummaryError(L2SError, ValueError):
    """A summary was asked of data that cannot give it (missing columns, unknown reference)."""


def summarize(df: pd.DataFrame, by: Iterable[str] = ("model", "dataset"),
              reference: str | None = None) -> pd.DataFrame:
    """One row per group: ``n``, ``accuracy`` (% correct), ``mean_tokens``.

    With ``reference`` (a model name), also ``length_change`` = (mean_tokens / the reference's
    mean_tokens in the same group − 1) × 100, in percent (negative = shorter; the paper's
    compression ratio), and ``accuracy_change`` = accuracy − the reference's accuracy, in points.
    Missing group keys (a ``level`` of None) form their own group.
    """
    by = list(by)
    missing = [c for c in [*by, "correct", "n_tokens"] if c not in df.columns]
    if missing:
        raise SummaryError(f"summarize: the responses have no column {missing[0]!r} "
                           f"(columns: {', '.join(map(str, df.columns))})")
    data = df.assign(_correct=df["correct"].astype(float) * 100,
                     _tokens=df["n_tokens"].astype(float))
    out = (data.groupby(by, dropna=False, sort=True)
           .agg(n=("_correct", "size"), accuracy=("_correct", "mean"),
                mean_tokens=("_tokens", "mean"))
           .reset_index())
    if reference is None:
        return out
    if "model" not in by:
        raise SummaryError("summarize: a reference model needs 'model' among the groups (by=...)")
    models = list(dict.fromkeys(df["model"]))
    if reference not in models:
        raise SummaryError(f"reference model {reference!r} is not in the responses; "
                           f"models: {', '.join(map(str, models))}")
    others = [b for b in by if b != "model"]
    ref = (out[out["model"] == reference]
           .rename(columns={"accuracy": "_ref_acc", "mean_tokens": "_ref_tok"})
           [[*others, "_ref_acc", "_ref_tok"]])
    out = out.merge(ref, on=others, how="left") if others else out.merge(ref, how="cross")
    out["length_change"] = (out["mean_tokens"] / out["_ref_tok"] - 1) * 100
    out["accuracy_change"] = out["accuracy"] - out["_ref_acc"]
    return out.drop(columns=["_ref_acc", "_ref_tok"])


def table1(df: pd.DataFrame, reference: str | None = None,
           datasets: Sequence[str] | None = None, uncertainty: bool = False) -> pd.DataFrame:
    """The paper's Table 1: index (model, metric), metric "accuracy" (%) or "tokens" (mean).

    Columns: the datasets (default: in order of appearance), ``Avg.`` (the mean of the
    per-dataset numbers; NaN when a model lacks a dataset), ``ratio``, which on the tokens row
    holds the paper's length reduction against ``reference``: the mean over datasets of each
    dataset's length change in percent, and ``ratio (pooled)``, the token-weighted one (the
    change of the summed per-dataset mean tokens); both NaN elsewhere, and everywhere without a
    reference. With ``uncertainty``, each model also has rows "accuracy ±" and "tokens ±": half
    the width of the 95% interval of each cell (:func:`l2s_kit.analysis.stats.intervals`; none
    for ``Avg.``). Models keep their order of appearance.
    """
    s = summarize(df, ("model", "dataset"), reference)
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(df["dataset"]))
    models = list(dict.fromkeys(df["model"]))
    if uncertainty:
        ci = stats.intervals(df, ("model", "dataset"))
        s = s.merge(ci.assign(acc_pm=(ci["accuracy_hi"] - ci["accuracy_lo"]) / 2,
                              tok_pm=(ci["tokens_hi"] - ci["tokens_lo"]) / 2),
                    on=["model", "dataset"], how="left")

    def wide(col: str) -> pd.DataFrame:
        return s.pivot(index="model", columns="dataset", values=col).reindex(
            index=models, columns=datasets)

    acc, tok = wide("accuracy"), wide("mean_tokens")
    if reference is not None:
        ratio = wide("length_change").mean(axis=1, skipna=False)
        pooled = (tok.sum(axis=1, skipna=False) / tok.loc[reference].sum(skipna=False) - 1) * 100
    else:
        ratio = pooled = pd.Series(math.nan, index=models)
    metrics = [("accuracy", acc), ("tokens", tok)]
    if uncertainty:
        metrics += [("accuracy ±", wide("acc_pm")), ("tokens ±", wide("tok_pm"))]
    rows, index = [], []
    for m in models:
        for metric, w in metrics:
            vals = [float(v) for v in w.loc[m]]
            avg = sum(vals) / len(vals) if vals and "±" not in metric else math.nan
            on_tokens = metric == "tokens"
            rows.append([*vals, avg, float(ratio[m]) if on_tokens else math.nan,
                         float(pooled[m]) if on_tokens else math.nan])
            index.append((m, metric))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["model", "metric"]),
                        columns=[*datasets, "Avg.", "ratio", "ratio (pooled)"])


def format_table1(t: pd.DataFrame, length_label: str = "tokens") -> str:
    """Markdown text of a :func:`table1` result: accuracy (%) with mean tokens underneath (their
    row labelled ``length_label``), each with "± half the 95% interval" when the table has the
    "±" rows."""
    cols = list(t.columns)
    ratios = {"ratio", "ratio (pooled)"}
    pm = {}  # (model, metric) → its row of ± half-widths
    for (model, metric), row in t.iterrows():
        if metric.endswith(" ±"):
            pm[(model, metric.removesuffix(" ±"))] = row

    def cell(v: float, metric: str, col: str, half) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "" if col in ratios else "–"
        if col in ratios:
            return f"{v:+.1f}%"
        text = f"{v:.1f}" if metric == "accuracy" else f"{v:.0f}"
        if half is not None and not math.isnan(half[col]):
            text += f" ±{half[col]:.1f}" if metric == "accuracy" else f" ±{half[col]:.0f}"
        return text

    lines = ["| model | metric | " + " | ".join(cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for (model, metric), row in t.iterrows():
        if metric.endswith(" ±"):
            continue
        name = md_text(model) if metric == "accuracy" else ""
        label = "accuracy (%)" if metric == "accuracy" else length_label
        half = pm.get((model, metric))
        lines.append(f"| {name} | {label} | "
                     + " | ".join(cell(row[c], metric, c, half) for c in cols) + " |")
    return "\n".join(lines)


def model_summary(df: pd.DataFrame, by: Sequence[str] = ("model",), reference: str | None = None,
                  keep: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`summarize` (accuracy, mean_tokens, changes against ``reference``) joined with the
    reflection columns of :func:`l2s_kit.analysis.reflection.reflection_summary`, per group;
    ``keep``: columns constant per model (say ``method``, ``parameters``) carried along. Models
    keep their order of appearance."""
    by = list(by)
    s = summarize(df, by, reference=reference)
    r = reflection.reflection_summary(df, by).drop(columns="n")
    out = s.merge(r, on=by)
    if keep:
        out = df.drop_duplicates("model")[["model", *keep]].merge(out, on="model")
    return _appearance_order(out, df)


def full_summary(df: pd.DataFrame, by: Sequence[str] = ("model",), reference: str | None = None,
                 keep: Sequence[str] = (), ks: Sequence[int] | None = None,
                 candidates=None, seed: int = stats.SEED) -> pd.DataFrame:
    """:func:`model_summary` with everything a reader needs to weigh it, per group: the 95%
    intervals of accuracy and mean tokens (:func:`l2s_kit.analysis.stats.intervals`), the paired
    comparison with ``reference`` and its verdicts (:func:`l2s_kit.analysis.stats.paired`:
    ``accuracy_change_lo``/``_hi``, ``mcnemar_p``, ``length_change_lo``/``_hi``, ``shorter``,
    ``accuracy_drop``), where the length goes (:func:`l2s_kit.analysis.trace.summary`,
    answers found by ``candidates``) and, with ``ks``, avg@n, pass@k and maj@k
    (:func:`l2s_kit.analysis.sampling.sampling_metrics`)."""
    by = list(by)
    out = model_summary(df, by, reference=reference, keep=keep)
    out = out.merge(stats.intervals(df, by, seed=seed), on=by, how="left")
    if reference is not None:
        p = stats.verdicts(stats.paired(df, reference, by, seed=seed))
        out = out.merge(p.drop(columns=["accuracy_change", "length_change"]), on=by, how="left")
    lengths = trace.annotate(df, **({"candidates": candidates} if candidates else {}))
    out = out.merge(trace.summary(lengths, by), on=by, how="left")
    if ks:
        out = out.merge(sampling.sampling_metrics(df, ks, by), on=by, how="left")
    return _appearance_order(out, df)


def _appearance_order(out: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """``out`` with models in their order of appearance in ``df`` (stable within a model)."""
    if "model" not in out.columns:
        return out
    order = {m: i for i, m in enumerate(dict.fromkeys(df["model"]))}
    return out.sort_values("model", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def by_level(df: pd.DataFrame, by: Sequence[str] = ("model", "level"), length: str | None = None,
             rule: str = "words") -> pd.DataFrame:
    """The paper's difficulty analysis: per group, n, accuracy (%), mean_length (in
    ``length_unit``: tokens, words or chars), reflection_ratio, mean_keywords and the
    false-reflection view (see :func:`l2s_kit.analysis.reflection.reflection_summary`). Models
    keep their order of appearance."""
    col = length_column(df, length)
    by = list(by)
    a = df if {"n_keywords", "reflective"} <= set(df.columns) else reflection.annotate(df, rule=rule)
    a = a.assign(_acc=a["correct"].astype(float) * 100, _len=a[col].astype(float))
    acc = a.groupby(by, as_index=False, dropna=False).agg(accuracy=("_acc", "mean"),
                                                          mean_length=("_len", "mean"))
    refl = reflection.reflection_summary(a, by)
    out = refl.merge(acc, on=by)
    out.insert(len(by) + 3, "length_unit", col.removeprefix("n_"))
    out = out[[*by, "n", "accuracy", "mean_length", "length_unit",
               *[c for c in out.columns if c not in [*by, "n", "accuracy", "mean_length",
                                                      "length_unit"]]]]
    return _appearance_order(out, df)


def level_or_dataset(df: pd.DataFrame) -> str:
    """"level" when every response has a difficulty level, else "dataset": what views by level
    group by (data without levels is viewed by dataset instead)."""
    has = "level" in df.columns and len(df) and df["level"].notna().all()
    return "level" if has else "dataset"


def pareto_front(df: pd.DataFrame, x: str = "mean_tokens", y: str = "accuracy") -> pd.DataFrame:
    """The rows no other row beats: shorter-or-equal ``x`` and higher-or-equal ``y``, one of them
    strictly. Sorted by ``x``."""
    d = df.sort_values([x, y], ascending=[True, False])
    keep, best = [], float("-inf")
    for i, yv in zip(d.index, d[y]):
        if yv > best:
            keep.append(i)
            best = yv
    return d.loc[keep]


def shortest(candidates: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """The shortest of ``candidates`` (:func:`l2s_kit.analysis.stats.shortest_index`: fewest
    ``mean_tokens``, a tie to the more accurate, then the first listed), one row per ``by`` group
    (in the groups' order) or one in all: the choice rule of the study and of ``l2s tune``,
    applied to the candidates within their tolerance."""
    def pick(rows: pd.DataFrame) -> list:
        i = stats.shortest_index(rows["accuracy"].to_numpy(), rows["mean_tokens"].to_numpy())
        return [rows.index[i]] if i >= 0 else []

    if by is None:
        return candidates.loc[pick(candidates)]
    keep = [i for _, rows in candidates.groupby(by, sort=True) for i in pick(rows)]
    return candidates.loc[keep].reset_index(drop=True)
