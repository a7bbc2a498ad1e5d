"""Answer extraction and grading.

``extract_answer`` takes the final answer out of a response: the last complete ``\\boxed{...}``,
else what follows the last "the answer is", else (only when asked) the last number.
``extract_labelled`` returns the same answer with where it came from (``boxed``, ``answer_is``,
``last_number``), so that a last-number guess is never mistaken for a stated answer. ``grade``
compares an answer with the gold one after light normalization. All are plain functions of
strings; the math-verify grader (:class:`l2s_kit.evaluate.grading.MathGrader`) replaces ``grade``
wherever it is passed.
"""

from __future__ import annotations

import math
import re
from typing import Literal, NamedTuple

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_IS = re.compile(r"the\s+answer\s+is", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(\s|$)|\n")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` whose braces close, in order."""
    found = []
    for m in _BOXED.finditer(text):
        depth, start = 1, m.end()
        for k in range(start, len(text)):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start:k])
                    break
    return found


_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\uFE63": "-", "\uFF0D": "-"})


def _clean(s: str) -> str:
    s = s.translate(_MINUS).strip().strip("$").strip()
    while s.endswith("."):
        s = s[:-1].rstrip().rstrip("$").rstrip()
    return s


class Extraction(NamedTuple):
    """An extracted answer and its source: ``boxed`` (the last ``\\boxed{}``), ``answer_is``
    (after the last "the answer is"), ``last_number`` (the labelled fallback), or ``None`` (no
    answer found; ``answer`` is None too)."""

    answer: str | None
    source: Literal["boxed", "answer_is", "last_number"] | None


def extract_labelled(text: str, fallback_last_number: bool = True) -> Extraction:
    """:func:`extract_answer` with the answer's source; the last-number fallback is on by default
    and labelled ``last_number``."""
    if not text:
        return Extraction(None, None)
    boxed = boxed_contents(text)
    if boxed:
        return Extraction(boxed[-1].strip(), "boxed")
    hits = list(_ANSWER_IS.finditer(text))
    if hits:
        rest = text[hits[-1].end():].lstrip(" \t:")
        end = _SENTENCE_END.search(rest)
        answer = _clean(rest[:end.start()] if end else rest)
        if answer:
            return Extraction(answer, "answer_is")
    if fallback_last_number:
        numbers = _NUMBER.findall(text)
        if numbers:
            return Extraction(numbers[-1].replace(",", ""), "last_number")
    return Extraction(None, None)


def extract_answer(text: str, fallback_last_number: bool = False) -> str | None:
    """The final answer in ``text``, or None.

    In order: the content of the last ``\\boxed{...}`` with balanced braces (a box left open by a
    truncated response is skipped); else the text after the last "the answer is" (any case) up to
    the end of its sentence or line, without ``$``, a leading ":" or the closing period; else, only
    with ``fallback_last_number=True``, the last number in the text (thousands commas removed).

    >>> extract_answer(r"so \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> extract_answer("The answer is $42$.")
    '42'
    """
    return extract_labelled(text, fallback_last_number).answer


def answer_candidates(text: str) -> list[tuple[int, str]]:
    """Every answer ``text`` states on its way, in order, as (the character offset where it
    ends, the answer): the content of each complete ``\\boxed{...}`` and what follows each "the
    answer is" up to the end of its sentence. Where the length goes
    (:mod:`l2s_kit.analysis.trace`) looks for the first one that is right."""
    found = []
    for m in _BOXED.finditer(text):
        depth = 1
        for k in range(m.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                found.append((k + 1, text[m.end():k].strip()))
                break
    for m in _ANSWER_IS.finditer(text):
        rest = text[m.end():]
        lead = len(rest) - len(rest.lstrip(" \t:"))
        end = _SENTENCE_END.search(rest, lead)
        stop = end.start() if end else len(rest)
        answer = _clean(rest[lead:stop])
        if answer:
            found.append((m.end() + stop, answer))
    return sorted(found)


THINK_CLOSE = "</think>"


def final_part(text: str, after_think: bool = True) -> tuple[str, str]:
    """(the text to take the answer from, its scope): with ``after_think`` and a closed
    ``<think>`` block, what follows the last ``</think>`` ("after_think", as lighteval and
    lm-evaluation-harness grade); else the whole response ("whole")."""
    if after_think and text and THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1], "after_think"
    return text, "whole"


def extract_family(text: str) -> str | None:
    """The final answer of a response of the built-in family: after the last "the answer is",
    as for any model (System 1 answers "The answer is 3 .", System 2 closes with "So the answer
    is 3 ."); None when the response never says it."""
    return extract_answer(text)


def normalize(s: object) -> str:
    """Whitespace, ``$`` and trailing periods removed (the comparison form of an answer)."""
    return _clean(str(s))


def _number(s: str) -> float | None:
    s = s.replace(",", "") if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s) else s
    return float(s) if _NUMERIC.fullmatch(s) else None


def grade(answer: str | None, gold: object) -> bool:
    """Whether ``answer`` matches ``gold``: normalized exact match, numbers compared as numbers.

    "5" matches "5.0", " 7 " matches "7", "1,000" matches "1000", "−3" (a Unicode minus)
    matches "-3"; None matches nothing, and an empty answer or gold matches nothing (an empty
    ``\boxed{}`` is no answer).
    """
    if answer is None or gold is None:
        return False
    a, g = normalize(answer), normalize(gold)
    if not a or not g:
        return False
    if a == g:
        return True
    x, y = _number(a), _number(g)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
