"""Uncertainty and paired tests on responses: what a difference between two models is worth.

Every interval is a 95% interval (``CONFIDENCE``) over the problems, seeded, so a rerun gives
the same numbers:

- **accuracy**: Wilson's score interval (statsmodels) when every problem has one sample (greedy
  decoding: a single proportion); with several samples per problem, a percentile bootstrap over
  problems (scipy's ``stats.bootstrap``) in which the samples of a problem stay together. The
  column ``accuracy_interval`` says which.
- **mean tokens**: a percentile bootstrap over problems.
- **paired against a reference** (System 2), on the problems both answered: the accuracy change
  with a paired bootstrap interval and the exact McNemar p-value (statsmodels; discordant pairs
  matched by problem and sample index), and the length change (mean tokens over the reference's
  mean tokens − 1, in %) with a paired bootstrap interval.
- **choice stability**: how often the same setting of a method would be chosen by the rule
  "shortest within the tolerance" over bootstrap resamples of the validation problems.

No torch here: this module, like the rest of :mod:`l2s_kit.analysis`, works on tables alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from l2s_kit.errors import L2SError

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
PROBLEM = ["dataset", "id"]  # what identifies a problem; its samples stay together


class StatsError(L2SError, ValueError):
    """Responses cannot give the statistic asked of them (a missing column, an unknown model)."""


def _need(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StatsError(f"{what}: the responses have no column {missing[0]!r} (columns: "
                         f"{', '.join(map(str, df.columns))})")


def per_problem(df: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """One row per group and problem: ``samples``, ``correct`` (the share of its samples graded
    correct, 0–1) and ``tokens`` (their mean length)."""
    keys = list(dict.fromkeys([*by, *PROBLEM]))
    _need(df, [*keys, "correct", "n_tokens"], "per-problem table")
    d = df.assign(_c=df["correct"].astype(float), _t=df["n_tokens"].astype(float),
                  id=df["id"].astype(str))
    return (d.groupby(keys, dropna=False, sort=False)
            .agg(samples=("_c", "size"), correct=("_c", "mean"), tokens=("_t", "mean"))
            .reset_index())


def _bootstrap(data: tuple[np.ndarray, ...], statistic, seed: int, paired: bool = False,
               resamples: int = RESAMPLES) -> tuple[float, float]:
    """A seeded percentile-bootstrap interval of ``statistic`` (vectorized over ``axis``)."""
    from scipy import stats

    if len(data[0]) < 2 or any(not np.isfinite(x).all() for x in data):
        return math.nan, math.nan
    if all(np.ptp(x) == 0 for x in data) and not paired:
        v = float(statistic(*data, axis=-1))
        return v, v
    rng = np.random.default_rng(seed)
    try:
        res = stats.bootstrap(data, statistic, n_resamples=resamples, confidence_level=CONFIDENCE,
                              method="percentile", paired=paired, vectorized=True, rng=rng)
    except TypeError:  # scipy < 1.15 names it random_state
        res = stats.bootstrap(data, statistic, n_resamples=resamples, confidence_level=CONFIDENCE,
                              method="percentile", paired=paired, vectorized=True,
                              random_state=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion, in percent (NaN for n = 0)."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(successes, n, alpha=1 - CONFIDENCE, method="wilson")
    return 100 * float(lo), 100 * float(hi)


def intervals(df: pd.DataFrame, by: Sequence[str] = ("model",), seed: int = SEED) -> pd.DataFrame:
    """Per group: ``accuracy_lo``/``accuracy_hi`` (%), ``accuracy_interval`` ("wilson" or
    "bootstrap", see the module docstring) and ``tokens_lo``/``tokens_hi``."""
    by = list(by)
    p = per_problem(df, by)
    rows = []
    for key, g in p.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if (g["samples"] == 1).all():
            acc, how = wilson(int(g["correct"].sum()), len(g)), "wilson"
        else:
            lo, hi = _bootstrap((g["correct"].to_numpy() * 100,), _mean, seed)
            acc, how = (lo, hi), "bootstrap"
        tok = _bootstrap((g["tokens"].to_numpy(),), _mean, seed)
        rows.append({**dict(zip(by, key)), "accuracy_lo": acc[0], "accuracy_hi": acc[1],
                     "accuracy_interval": how, "tokens_lo": tok[0], "tokens_hi": tok[1]})
    return pd.DataFrame(rows, columns=[*by, "accuracy_lo", "accuracy_hi", "accuracy_interval",
                                       "tokens_lo", "tokens_hi"])


def mcnemar_p(both: pd.DataFrame) -> float:
    """The exact McNemar p-value of paired grades: ``both`` has bool columns ``correct`` and
    ``correct_ref``, one row per pair. 1.0 when no pair disagrees."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = both["correct"].astype(bool), both["correct_ref"].astype(bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    if table[0][1] + table[1][0] == 0:
        return 1.0
    return float(mcnemar(table, exact=True).pvalue)


def _ratio_change(x, y, axis=-1):
    return (np.mean(x, axis=axis) / np.mean(y, axis=axis) - 1) * 100


def paired(df: pd.DataFrame, reference: str, by: Sequence[str] = ("model",),
           seed: int = SEED) -> pd.DataFrame:
    """Each model against ``reference`` on the problems both answered, per group of ``by``
    (which holds ``model``): ``n_paired`` problems, ``accuracy_change`` (points) with
    ``accuracy_change_lo``/``_hi`` (paired bootstrap), ``mcnemar_p`` (exact), ``length_change``
    (%) with ``length_change_lo``/``_hi`` (paired bootstrap of the ratio of mean tokens)."""
    by = list(by)
    if "model" not in by:
        raise StatsError("paired: 'model' must be among the groups (by=...)")
    _need(df, ["model", *PROBLEM, "correct", "n_tokens"], "paired comparison")
    models = list(dict.fromkeys(df["model"]))
    if reference not in models:
        raise StatsError(f"reference model {reference!r} is not in the responses; models: "
                         f"{', '.join(map(str, models))}")
    others = [b for b in by if b != "model"]
    p = per_problem(df, by)
    keys = list(dict.fromkeys([*others, *PROBLEM]))
    ref = p[p["model"] == reference].drop(columns=["model", "samples"]).rename(
        columns={"correct": "correct_ref", "tokens": "tokens_ref"})
    sample_keys = [*keys, "sample"] if "sample" in df.columns else keys
    s = df.assign(id=df["id"].astype(str), correct=df["correct"].astype(bool))
    s_ref = s[s["model"] == reference][[*sample_keys, "correct"]].rename(
        columns={"correct": "correct_ref"})
    rows = []
    for key, g in p.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        both = g.merge(ref, on=keys)
        named = dict(zip(by, key))
        pairs = s[(s["model"] == named["model"])
                  & np.logical_and.reduce([s[o] == named[o] for o in others] or [True])]
        pairs = pairs[[*sample_keys, "correct"]].merge(s_ref, on=sample_keys)
        c, cr = both["correct"].to_numpy() * 100, both["correct_ref"].to_numpy() * 100
        t, tr = both["tokens"].to_numpy(), both["tokens_ref"].to_numpy()
        acc = _bootstrap((c - cr,), _mean, seed, paired=True)
        length = _bootstrap((t, tr), _ratio_change, seed, paired=True)
        rows.append({**named, "n_paired": len(both),
                     "accuracy_change": float(np.mean(c - cr)) if len(both) else math.nan,
                     "accuracy_change_lo": acc[0], "accuracy_change_hi": acc[1],
                     "mcnemar_p": mcnemar_p(pairs) if len(pairs) else math.nan,
                     "length_change": float(_ratio_change(t, tr)) if len(both) else math.nan,
                     "length_change_lo": length[0], "length_change_hi": length[1]})
    return pd.DataFrame(rows)


def verdicts(p: pd.DataFrame, level: float = 1 - CONFIDENCE) -> pd.DataFrame:
    """``p`` (:func:`paired`) with ``shorter`` (the whole length interval is below 0) and
    ``accuracy_drop`` (McNemar p < ``level`` and the accuracy change is negative)."""
    return p.assign(shorter=p["length_change_hi"] < 0,
                    accuracy_drop=(p["mcnemar_p"] < level) & (p["accuracy_change"] < 0))


def shortest_index(accuracy, tokens) -> int:
    """The choice rule, on arrays of candidates (all within the tolerance): the index of the one
    with the fewest tokens, a tie going to the more accurate, then to the first listed; -1 when
    there is none. The study's and ``l2s tune``'s choice and its bootstrap stability use it."""
    if not len(tokens):
        return -1
    order = np.lexsort((np.arange(len(tokens)), -np.asarray(accuracy, dtype=float),
                        np.asarray(tokens, dtype=float)))
    return int(order[0])


def choice_stability(val: pd.DataFrame, candidates: pd.DataFrame, chosen: pd.DataFrame,
                     reference: str, tolerance: float, resamples: int = 1000,
                     seed: int = SEED) -> pd.DataFrame:
    """For each chosen merge (``chosen``: method, model), the share of bootstrap resamples of the
    validation problems on which the rule "the shortest model within ``tolerance`` points of
    ``reference``" picks the same model among its method's ``candidates`` (method, model, in
    the order the rule breaks ties by). ``val``: the validation responses."""
    if not len(chosen):
        return pd.DataFrame(columns=["method", "model", "stability"])
    p = per_problem(val[val["model"].isin([reference, *candidates["model"]])], ("model",))
    problems = p[PROBLEM].drop_duplicates().reset_index(drop=True)
    order = [reference, *candidates["model"]]
    wide_c = p.pivot_table(index=PROBLEM, columns="model", values="correct").reindex(
        pd.MultiIndex.from_frame(problems))[order].to_numpy() * 100
    wide_t = p.pivot_table(index=PROBLEM, columns="model", values="tokens").reindex(
        pd.MultiIndex.from_frame(problems))[order].to_numpy()
    n = len(problems)
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    acc = weights @ np.nan_to_num(wide_c) / n          # resamples × models
    tok = weights @ np.nan_to_num(wide_t) / n
    feasible = acc[:, 1:] - acc[:, [0]] >= -tolerance
    rows = []
    methods = candidates["method"].to_numpy()
    for method, model in zip(chosen["method"], chosen["model"]):
        cols = np.flatnonzero(methods == method)
        target = list(candidates["model"].iloc[cols]).index(model)
        hits = 0
        for b in range(resamples):
            ok = cols[feasible[b, cols]]
            if not len(ok):
                continue
            best = ok[shortest_index(acc[b, 1 + ok], tok[b, 1 + ok])]
            hits += int(best == cols[target])
        rows.append({"method": method, "model": model, "stability": hits / resamples})
    return pd.DataFrame(rows)
