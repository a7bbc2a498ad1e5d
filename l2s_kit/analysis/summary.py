"""Accuracy and length per group, as tidy DataFrames, and the paper's Table 1.

Input is the responses DataFrame (one row per sample, columns ``model``, ``dataset``, ``level``,
``correct``, ``n_tokens``; see :func:`l2s_kit.evaluate.load_responses`). Length changes are
relative to a reference model (the System 2 model in the paper): negative = shorter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from l2s_kit.analysis import reflection
from l2s_kit.analysis.outputs import length_column
from l2s_kit.errors import L2SError

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
           datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table 1: index (model, metric), metric "accuracy" (%) or "tokens" (mean).

    Columns: the datasets (default: in order of appearance), ``Avg.`` (the mean of the
    per-dataset numbers; NaN when a model lacks a dataset) and ``ratio``, which on the tokens row
    holds the mean over datasets of the length change against ``reference`` in percent (NaN
    elsewhere, and everywhere without a reference). Models keep their order of appearance.
    """
    s = summarize(df, ("model", "dataset"), reference)
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(df["dataset"]))
    models = list(dict.fromkeys(df["model"]))

    def wide(col: str) -> pd.DataFrame:
        return s.pivot(index="model", columns="dataset", values=col).reindex(
            index=models, columns=datasets)

    acc, tok = wide("accuracy"), wide("mean_tokens")
    ratio = (wide("length_change").mean(axis=1, skipna=False) if reference is not None
             else pd.Series(math.nan, index=models))
    rows, index = [], []
    for m in models:
        for metric, w in zip(METRICS, (acc, tok)):
            vals = [float(v) for v in w.loc[m]]
            avg = sum(vals) / len(vals) if vals else math.nan
            rows.append([*vals, avg, float(ratio[m]) if metric == "tokens" else math.nan])
            index.append((m, metric))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["model", "metric"]),
                        columns=[*datasets, "Avg.", "ratio"])


def format_table1(t: pd.DataFrame) -> str:
    """Markdown text of a :func:`table1` result: accuracy (%) with mean tokens underneath."""
    cols = list(t.columns)

    def cell(v: float, metric: str, col: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "" if col == "ratio" else "–"
        if col == "ratio":
            return f"{v:+.1f}%"
        return f"{v:.1f}" if metric == "accuracy" else f"{v:.0f}"

    lines = ["| model | metric | " + " | ".join(cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for (model, metric), row in t.iterrows():
        name = model if metric == "accuracy" else ""
        label = "accuracy (%)" if metric == "accuracy" else "tokens"
        lines.append(f"| {name} | {label} | "
                     + " | ".join(cell(row[c], metric, c) for c in cols) + " |")
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
