"""Reflection keywords: per-response counts and per-group ratios (the paper's reflection analysis).

A response is *reflective* if it contains any of the paper's keywords: wait, re-examine, recap,
double-check, let me check, let me just check, let me verify, let me just verify.

Two matching rules, chosen by name:

- ``"words"`` (default): case-insensitive whole words, with the spelling variants real outputs
  use ("double check", "double-check", "re-examine", "reexamine"); "await", "waiter" and
  "recapture" do not count.
- ``"published"``: the published analysis script, case-insensitive substrings of the keyword list
  without "let me verify" ("await" counts as "wait"). Use it to compare with published numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

KEYWORDS: tuple[str, ...] = ("wait", "re-examine", "recap", "double-check", "let me check",
                             "let me just check", "let me verify", "let me just verify")
PUBLISHED_KEYWORDS: tuple[str, ...] = tuple(k for k in KEYWORDS if k != "let me verify")
RULES = ("words", "published")

# Spelling variants of each keyword for the whole-word rule.
_VARIANTS = {
    "re-examine": r"re-?\s?examine",
    "double-check": r"double[-\s]?check",
}
_BOUNDARY_L, _BOUNDARY_R = r"(?<![\w-])", r"(?![\w-])"


def _pattern(keyword: str) -> re.Pattern:
    body = _VARIANTS.get(keyword, r"\s+".join(re.escape(w) for w in keyword.split()))
    return re.compile(_BOUNDARY_L + body + _BOUNDARY_R, re.IGNORECASE)


_PATTERNS = {k: _pattern(k) for k in KEYWORDS}


def keyword_counts(text: str, rule: str = "words") -> dict[str, int]:
    """Occurrences of each keyword in ``text`` under ``rule`` ("words" or "published")."""
    if rule == "words":
        return {k: len(p.findall(text)) for k, p in _PATTERNS.items()}
    if rule == "published":
        low = text.lower()
        return {k: low.count(k) for k in PUBLISHED_KEYWORDS}
    raise ValueError(f"unknown reflection rule {rule!r}; choose one of {RULES}")


def is_reflective(text: str, rule: str = "words") -> bool:
    return any(keyword_counts(text, rule).values())


def annotate(df: pd.DataFrame, text: str = "response", rule: str = "words") -> pd.DataFrame:
    """A copy of ``df`` with ``n_keywords`` and ``reflective`` columns (one row per response)."""
    counts = [sum(keyword_counts(t, rule).values()) for t in df[text].fillna("")]
    return df.assign(n_keywords=counts, reflective=[c > 0 for c in counts])


def keyword_frequency(df: pd.DataFrame, by: Sequence[str] = (), text: str = "response",
                      rule: str = "words") -> pd.DataFrame:
    """Tidy table: occurrences of each keyword per group (columns: *by, keyword, count)."""
    rows = []
    for _, r in df.iterrows():
        for k, c in keyword_counts(r[text] or "", rule).items():
            rows.append({**{b: r[b] for b in by}, "keyword": k, "count": c})
    out = pd.DataFrame(rows, columns=[*by, "keyword", "count"])
    return out.groupby([*by, "keyword"], as_index=False, sort=False)["count"].sum()


def reflection_summary(df: pd.DataFrame, by: Iterable[str] = ("model",), text: str = "response",
              rule: str = "words") -> pd.DataFrame:
    """Per group: responses, reflection ratio, mean keywords, and the false-reflection view.

    ``false_reflection`` is the share of responses that are reflective and wrong (needs a boolean
    ``correct`` column); ``wrong_among_reflective`` the share of reflective responses that are
    wrong.
    """
    by = [b for b in by if b in df.columns]
    a = df if {"n_keywords", "reflective"} <= set(df.columns) else annotate(df, text, rule)
    agg = {"n": ("reflective", "size"), "reflection_ratio": ("reflective", "mean"),
           "mean_keywords": ("n_keywords", "mean")}
    if "correct" in a.columns:
        a = a.assign(_false=a["reflective"] & ~a["correct"].astype(bool),
                     _refl_wrong=a["reflective"].where(a["reflective"]) * ~a["correct"].astype(bool))
        agg["false_reflection"] = ("_false", "mean")
        agg["wrong_among_reflective"] = ("_refl_wrong", "mean")
    if not by:
        a = a.assign(_all="all")
        by = ["_all"]
    out = a.groupby(by, as_index=False).agg(**agg)
    return out.drop(columns=["_all"], errors="ignore")


def highlight(text: str, rule: str = "words") -> str:
    """``text`` as HTML (escaped) with every keyword occurrence wrapped in ``<mark>``."""
    import html

    if rule == "words":
        spans = [m.span() for p in _PATTERNS.values() for m in p.finditer(text)]
    elif rule == "published":
        low = text.lower()
        spans = [(m.start(), m.start() + len(k)) for k in PUBLISHED_KEYWORDS
                 for m in re.finditer(re.escape(k), low)]
    else:
        raise ValueError(f"unknown reflection rule {rule!r}; choose one of {RULES}")
    out, at = [], 0
    for a, b in sorted(spans):
        if a < at:  # overlapping keywords ("let me just check" inside no other): keep the first
            continue
        out += [html.escape(text[at:a]), "<mark>", html.escape(text[a:b]), "</mark>"]
        at = b
    out.append(html.escape(text[at:]))
    return "".join(out)


def examples_html(df: pd.DataFrame, n: int = 2, by: str = "model", text: str = "response",
                  rule: str = "words", reflective: bool | None = True, max_chars: int = 800) -> str:
    """Up to ``n`` responses per ``by`` group (the reflective ones by default; ``False`` for the
    others, ``None`` for any) as HTML, keywords highlighted, with each one's grade."""
    import html

    a = df if "reflective" in df.columns else annotate(df, text, rule)
    if reflective is not None:
        a = a[a["reflective"] == reflective]
    parts = []
    for group, g in a.groupby(by, sort=False):
        parts.append(f"<h4>{html.escape(str(group))}</h4>")
        for _, r in g.head(n).iterrows():
            body = r[text] if len(r[text]) <= max_chars else r[text][:max_chars] + " …"
            grade = {True: "correct", False: "wrong"}.get(r.get("correct"), "")
            parts.append(f"<div style='margin:4px 0 10px'><small>{html.escape(str(r.get('id')))}"
                         f" · level {r.get('level')} · {grade}</small><pre style='white-space:"
                         f"pre-wrap'>{highlight(body, rule)}</pre></div>")
    return "\n".join(parts) or "<p>no responses to show</p>"
