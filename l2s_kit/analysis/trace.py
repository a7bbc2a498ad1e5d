"""Where the length goes: what each response spends its tokens on.

Per response (:func:`annotate`):

- ``truncated``: generation stopped at the token budget (``finish_reason`` "length").
- ``think_opened`` / ``think_closed``: the response has a ``<think>`` block (its opening tag, or
  a closing tag when the prompt opened it, as R1-style chat templates do) and closes it.
- ``tokens_in_think`` / ``tokens_after_think``: tokens up to the end of ``</think>`` and after it
  (an unclosed block counts whole as thinking; no block: 0 and every token after).
- ``answers_stated``: how many answers the finder (:func:`l2s_kit.evaluate.extract.answer_candidates`
  or the setup's own) reads in the response.
- ``tokens_to_answer``: tokens until the gold answer is first stated (the first of the response's
  answer candidates that grades as correct); empty when it never is. ``tokens_after_answer``:
  the tokens generated after that point (0 when never found): the overthinking that merging
  removes.

A group in which the finder reads no answer at all (responses in a format it does not know) has
``answer_found_rate``, ``mean_tokens_to_answer``, ``mean_tokens_after_answer`` and
``after_answer_share`` empty (NaN: not measured), never 0.

Token positions inside a response are estimated from the share of characters before the point
(``n_tokens`` × characters before / characters in all), since responses are stored as text; the
counts of whole responses are exact.

Per group (:func:`summary`): ``truncation_rate``, ``think_closure_rate`` (of the responses that
opened a block), ``mean_tokens_in_think``, ``mean_tokens_after_think``, ``answer_found_rate``, ``mean_tokens_to_answer``, ``mean_tokens_after_answer``
and ``after_answer_share`` (tokens after the first correct answer over all tokens), in percent
where a rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd

from l2s_kit.analysis.stats import _need
from l2s_kit.evaluate.extract import answer_candidates, grade

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
COLUMNS = ["truncated", "think_opened", "think_closed", "tokens_in_think", "tokens_after_think",
           "answers_stated", "tokens_to_answer", "tokens_after_answer"]


def _at(n_tokens: float, text: str, offset: int) -> float:
    return round(n_tokens * offset / len(text)) if text else 0.0


def response_trace(text: str, n_tokens: float, gold, finish_reason=None,
                   candidates: Callable = answer_candidates,
                   grade: Callable = grade) -> dict:
    """The columns of :data:`COLUMNS` for one response (see the module docstring)."""
    text = text or ""
    close = text.find(THINK_CLOSE)
    opened = THINK_OPEN in text or close >= 0
    if close >= 0:
        in_think = _at(n_tokens, text, close + len(THINK_CLOSE))
    else:
        in_think = n_tokens if opened else 0.0
    to_answer = math.nan
    stated = candidates(text)
    for end, answer in stated:
        if grade(answer, gold):
            to_answer = _at(n_tokens, text, end)
            break
    return {"truncated": finish_reason == "length" if isinstance(finish_reason, str) else math.nan,
            "think_opened": opened, "think_closed": close >= 0,
            "tokens_in_think": in_think, "tokens_after_think": n_tokens - in_think,
            "answers_stated": len(stated), "tokens_to_answer": to_answer,
            "tokens_after_answer": 0.0 if math.isnan(to_answer) else n_tokens - to_answer}


def annotate(df: pd.DataFrame, candidates: Callable = answer_candidates,
             grade: Callable = grade) -> pd.DataFrame:
    """A copy of ``df`` (responses) with the columns of :data:`COLUMNS`."""
    _need(df, ["response", "n_tokens", "gold"], "where the length goes")
    reasons = df["finish_reason"] if "finish_reason" in df.columns else [None] * len(df)
    rows = [response_trace(t, float(n), g, r, candidates, grade)
            for t, n, g, r in zip(df["response"], df["n_tokens"], df["gold"], reasons)]
    return df.assign(**{c: [r[c] for r in rows] for c in COLUMNS})


def summary(df: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """Per group, from :func:`annotate`'s columns: see the module docstring."""
    by = list(by)
    a = df if set(COLUMNS) <= set(df.columns) else annotate(df)
    a = a.assign(_found=a["tokens_to_answer"].notna(),
                 _trunc=pd.to_numeric(a["truncated"], errors="coerce"),
                 _tok=a["n_tokens"].astype(float))
    rows = []
    for key, g in a.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        opened = g["think_opened"].astype(bool)
        total = g["_tok"].sum()
        if not g["answers_stated"].astype(float).gt(0).any():  # the finder reads none of them:
            g = g.assign(_found=math.nan, tokens_to_answer=math.nan,  # not measured, never 0
                         tokens_after_answer=math.nan)
        rows.append({**dict(zip(by, key)),
                     "truncation_rate": 100 * g["_trunc"].mean(),
                     "think_closure_rate": (100 * g.loc[opened, "think_closed"].astype(bool).mean()
                                            if opened.any() else math.nan),
                     "mean_tokens_in_think": g["tokens_in_think"].mean(),
                     "mean_tokens_after_think": g["tokens_after_think"].mean(),
                     "answer_found_rate": 100 * g["_found"].mean(),
                     "mean_tokens_to_answer": g["tokens_to_answer"].mean(),
                     "mean_tokens_after_answer": g["tokens_after_answer"].mean(),
                     "after_answer_share": (100 * g["tokens_after_answer"].sum(min_count=1) / total
                                            if total else math.nan)})
    return pd.DataFrame(rows)
