"""The grading worker: math-verify (and the reference mode's tolerances) behind a line protocol.

Run as a script by :class:`l2s_kit.evaluate.grading.MathGrader` (``python _grade_worker.py``), so it
imports neither torch nor the rest of the kit and never re-runs the caller's main module. It
writes ``"ready"``, then answers each stdin line ``[mode, answer, gold]`` (JSON) with one stdout
line, ``true`` or ``false``. Anything else that prints goes to stderr. Self-contained on purpose.
"""

from __future__ import annotations

import json
import math
import re
import sys

REL_TOL = 1e-4  # the Qwen2.5-Math toolkit's numeric_equal


def _digits(s: str) -> float | None:
    """The toolkit's ``parse_digits``: commas removed, a trailing ``%`` (or ``\\%``) divides by 100."""
    s = str(s).replace(",", "")
    try:
        return float(s)
    except ValueError:
        pass
    if s.endswith("%"):
        s = s[:-1].removesuffix("\\")
        try:
            return float(s) / 100
        except ValueError:
            pass
    return None


def _numbers_close(answer: str, gold: str) -> bool | None:
    """The toolkit's numeric rule, or None when either side is not a plain number."""
    a, g = _digits(answer), _digits(gold)
    if a is None or g is None:
        return None
    return any(math.isclose(a, x, rel_tol=REL_TOL) for x in (g / 100, g, g * 100))


def _value(parsed: list) -> float | None:
    import sympy

    for item in parsed:
        if isinstance(item, sympy.Basic):
            try:
                v = complex(sympy.N(item))
            except (TypeError, ValueError, AttributeError):
                continue
            if v.imag == 0 and math.isfinite(v.real):
                return v.real
    return None


def _parse(text: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(f"${text.strip().strip('$')}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=None)


def _strict(answer: str, gold: str) -> bool:
    from math_verify import verify

    g, a = _parse(gold), _parse(answer)
    return bool(g and a and verify(g, a, timeout_seconds=None))


def _reference(answer: str, gold: str) -> bool:
    if answer.strip().lower() == gold.strip().lower():
        return True
    if "{,}" in answer or "{,}" in gold:  # the toolkit reads neither as a number nor as LaTeX
        strip = re.compile(r"[{}()\s]")
        return strip.sub("", answer).lower() == strip.sub("", gold).lower()
    close = _numbers_close(answer, gold)
    if close is not None:
        return close
    g, a = _parse(gold), _parse(answer)
    if not (g and a):
        return False
    from math_verify import verify

    if verify(g, a, timeout_seconds=None):
        return True
    x, y = _value(a), _value(g)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=REL_TOL)


def judge(mode: str, answer: str, gold: str) -> bool:
    """The verdict of mode "strict" or "reference" (see :mod:`l2s_kit.evaluate.grading`)."""
    return (_reference if mode == "reference" else _strict)(answer, gold)


def main() -> None:
    import logging

    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not mix with answers
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # no "timeout disabled" warnings
    # Integers of any length: Python's 4300-digit limit on int <-> str made sympy fail on long
    # numbers, which math-verify then graded as wrong (the per-sample timeout still bounds cost).
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    _parse("1")  # import sympy and math-verify before saying ready
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        try:
            mode, answer, gold = json.loads(line)
            verdict = judge(mode, answer, gold)
        except Exception:  # an unparsable input or a grader bug: graded incorrect
            verdict = False
        out.write("true\n" if verdict else "false\n")
        out.flush()


if __name__ == "__main__":
    main()
