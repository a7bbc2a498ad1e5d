"""The field's sampling metrics over ``n`` samples per problem: avg@n, pass@k and maj@k.

- ``avg@n``: the mean over samples of the share graded correct (with one sample per problem,
  the accuracy).
- ``pass@k``: the chance that at least one of ``k`` samples drawn without replacement from the
  problem's ``n`` is correct, by the unbiased estimator 1 − C(n − c, k) / C(n, k) (Chen et al.,
  2021), averaged over problems.
- ``maj@k``: majority vote over the extracted answers of the problem's first ``k`` samples (by
  sample index, as lighteval does), compared as :func:`l2s_kit.evaluate.normalize` writes them;
  samples without an answer do not vote; a tie goes to the answer given first. Correct when the
  winning answer was graded correct.

All in percent, per group, as a tidy table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from l2s_kit.analysis.stats import PROBLEM, SEED, StatsError, _bootstrap, _mean, _need
from l2s_kit.evaluate.extract import normalize


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with ``c`` correct among ``n`` samples (0–1)."""
    if not 1 <= k <= n:
        raise StatsError(f"pass@k: k={k} must be between 1 and the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority(answers: Sequence, correct: Sequence[bool]) -> bool:
    """Whether the majority answer of ``answers`` (in sample order) is correct; see the module
    docstring for votes without an answer and ties."""
    votes: dict[str, list] = {}
    for a, ok in zip(answers, correct):
        if a is None or (isinstance(a, float) and math.isnan(a)):
            continue
        votes.setdefault(normalize(a), []).append(bool(ok))
    if not votes:
        return False
    best = max(votes.values(), key=len)  # max keeps the first of equal counts: first given
    return best[0]


def parse_k(text: str | Sequence[int]) -> list[int]:
    """``"1,4,8"`` → [1, 4, 8]; errors name the parameter."""
    try:
        ks = [int(k) for k in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise StatsError(f"--k {text!r}: give whole numbers separated by commas, e.g. 1,4,8") from None
    if not ks or any(k < 1 for k in ks):
        raise StatsError(f"--k {text!r}: every k must be at least 1")
    return sorted(dict.fromkeys(ks))


def sampling_metrics(df: pd.DataFrame, ks: Sequence[int] = (1,),
                     by: Sequence[str] = ("model",), intervals: bool = False) -> pd.DataFrame:
    """Per group: ``problems``, ``samples`` (per problem, the smallest count), ``avg@n``, and
    ``pass@k`` and ``maj@k`` for each k of ``ks`` (%). Every problem needs at least max(ks)
    samples. With ``intervals``, each metric also has ``_lo``/``_hi``: its 95% percentile
    bootstrap interval over problems (seeded: the same numbers on every run)."""
    by = list(by)
    _need(df, [*by, *PROBLEM, "sample", "correct", "answer"], "sampling metrics")
    keys = list(dict.fromkeys([*by, *PROBLEM]))
    d = df.assign(id=df["id"].astype(str)).sort_values("sample", kind="stable")  # groups keep their order
    rows = []
    for key, g in d.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        per = []
        for _, p in g.groupby(keys, dropna=False, sort=False):
            ok = p["correct"].astype(bool).tolist()
            per.append((len(ok), sum(ok), ok, p["answer"].tolist()))
        n_min = min(n for n, *_ in per)
        if max(ks) > n_min:
            raise StatsError(f"k={max(ks)} is larger than the samples per problem "
                             f"(n={n_min} for {', '.join(map(str, key))}); draw more with --n or "
                             "ask for a smaller --k")
        values = {"avg@n": [c / n for n, c, *_ in per]}
        values.update({f"pass@{k}": [pass_at_k(n, c, k) for n, c, *_ in per] for k in ks})
        values.update({f"maj@{k}": [float(majority(a[:k], ok[:k])) for _, _, ok, a in per]
                       for k in ks})
        row = {**dict(zip(by, key)), "problems": len(per), "samples": n_min}
        for name, v in values.items():
            row[name] = 100 * sum(v) / len(v)
            if intervals:
                lo, hi = _bootstrap((100 * np.asarray(v, dtype=float),), _mean, SEED)
                row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows)
