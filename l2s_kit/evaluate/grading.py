"""Grading with math-verify in a worker process, with a hard per-sample timeout.

:class:`MathGrader` compares an extracted answer with the gold one as mathematics (``\\frac{1}{2}``
= ``0.5`` = ``1/2``; ``(1, 2)`` = ``\\left(1,2\\right)``; ``10{,}000`` = ``10000``), through
`math-verify <https://github.com/huggingface/Math-Verify>`_. Both strings are wrapped as inline
LaTeX (``$...$``) so that a gold answer such as ``\\frac{\\pi}{2}`` parses as LaTeX, not as text.

Parsing and comparing run in a separate worker process: a pathological expression (a tower of
exponents that sympy tries to expand) cannot hang or crash the evaluation. A sample that takes
longer than ``timeout`` seconds is graded incorrect with status ``"timeout"``, the worker is
killed and a fresh one started; a worker that dies gives status ``"error"``. ``grader.counts``
holds how many samples got each status.

Two modes:

- ``"strict"`` (default): math-verify's verdict, nothing else.
- ``"reference"``: the tolerances of the Qwen2.5-Math evaluation toolkit's ``math_equal``, for
  comparing with published tables: case-insensitive string match; plain numbers (commas removed,
  ``%`` = /100) equal within ``rel_tol=1e-4``, or equal to gold/100 or gold×100 (so ``50`` matches
  a gold ``0.5``); then math-verify, then the numeric values of both expressions within
  ``rel_tol=1e-4`` (``3.1416`` matches ``\\pi``). Like the toolkit, it does not read the LaTeX
  thousands separator ``{,}``: such an answer matches only as text with braces removed.

>>> with MathGrader() as g:
...     g(r"\\frac{1}{2}", "0.5"), g("50", "0.5")
(True, False)
"""

from __future__ import annotations

import json
import math
import select
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from l2s_kit.errors import L2SError
from l2s_kit.io.choices import GRADERS

MODES = ("strict", "reference")
STATUSES = ("ok", "no_answer", "timeout", "error")
WORKER = Path(__file__).with_name("_grade_worker.py")


class GradeError(L2SError, ValueError):
    """Grading settings are invalid, or the grading worker cannot start."""


@dataclass(frozen=True)
class GradeResult:
    """One sample's verdict. ``status``: ``ok`` (graded), ``no_answer`` (nothing was extracted or
    the gold is missing), ``timeout`` (over the per-sample limit) or ``error`` (the worker died)."""

    correct: bool
    status: Literal["ok", "no_answer", "timeout", "error"]


# -- the parent's side ----------------------------------------------------------------------------
class MathGrader:
    """Callable grader ``(answer, gold) -> bool`` backed by math-verify in a worker process.

    ``timeout``: seconds per sample (parse both sides and compare), after which the sample is
    incorrect with status ``timeout`` and the worker is replaced. ``start_timeout``: seconds
    allowed for a worker to import sympy and math-verify. The worker is a plain script run with
    this Python (``_grade_worker.py``): it does not import torch or re-run the caller's main
    module. Use as a context manager, or call :meth:`close`, to stop it.
    """

    def __init__(self, mode: str = "strict", timeout: float = 5.0, start_timeout: float = 120.0):
        if mode not in MODES:
            raise GradeError(f"grading mode {mode!r} is not one of {MODES} (strict: math-verify; "
                             "reference: the Qwen2.5-Math toolkit's numeric tolerances)")
        if not (isinstance(timeout, (int, float)) and 0 < timeout <= 3600):
            raise GradeError(f"grading timeout (--grade-timeout) must be a number of seconds in "
                             f"(0, 3600], got {timeout!r}")
        self.mode, self.timeout, self.start_timeout = mode, float(timeout), float(start_timeout)
        self._proc: subprocess.Popen | None = None
        self.counts: Counter = Counter({s: 0 for s in STATUSES})
        self.restarts = 0

    @property
    def name(self) -> str:
        return f"math-verify ({self.mode})"

    def _readline(self, timeout: float) -> str | None:
        """One line from the worker, or None if none came within ``timeout`` seconds."""
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        return self._proc.stdout.readline() if ready else None

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-u", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, encoding="utf-8", bufsize=1)
        line = self._readline(self.start_timeout)
        if line is None or line.strip() != '"ready"':
            self._stop()
            raise GradeError(
                f"the grading worker did not start within {self.start_timeout:.0f} s" if line is None
                else "the grading worker failed to start; check that math-verify imports "
                     f"({sys.executable} -c 'import math_verify'; it is in the 'eval' extra: "
                     "pip install 'l2s_kit[eval]')")

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            for f in (self._proc.stdin, self._proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self._proc = None

    def close(self) -> None:
        """Stop the worker (a later call starts a new one)."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()  # the worker's loop ends at end of input
                self._proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop()
        except Exception:
            pass

    def grade(self, answer: str | None, gold: object) -> GradeResult:
        """Grade one sample; never raises for a bad expression, never waits past ``timeout``."""
        if _missing(answer) or _missing(gold):
            result = GradeResult(False, "no_answer")
        else:
            result = self._ask(str(answer), _gold_text(gold))
        self.counts[result.status] += 1
        return result

    def _ask(self, answer: str, gold: str) -> GradeResult:
        if self._proc is None or self._proc.poll() is not None:
            self._stop()
            self._start()
        try:
            self._proc.stdin.write(json.dumps([self.mode, answer, gold]) + "\n")
            self._proc.stdin.flush()
            line = self._readline(self.timeout)
        except (OSError, ValueError):
            line = ""
        if line is None:  # still computing: kill it, the next sample starts a new worker
            self._stop()
            self.restarts += 1
            return GradeResult(False, "timeout")
        if line.strip() not in ("true", "false"):  # the worker died (EOF) or wrote garbage
            self._stop()
            self.restarts += 1
            return GradeResult(False, "error")
        return GradeResult(line.strip() == "true", "ok")

    def __call__(self, answer: str | None, gold: object) -> bool:
        return self.grade(answer, gold).correct

    def grade_many(self, pairs: Iterable[tuple[str | None, object]], progress: bool = False
                   ) -> list[GradeResult]:
        """Grade (answer, gold) pairs in order."""
        from tqdm.auto import tqdm

        pairs = list(pairs)
        return [self.grade(a, g) for a, g in tqdm(pairs, desc=f"grade ({self.mode})",
                                                  unit="sample", disable=not progress)]

    def report(self) -> str:
        """One line: samples graded, and how many timed out or crashed the worker."""
        c = self.counts
        return (f"{self.name}: {sum(c.values())} samples, {c['ok']} graded, {c['no_answer']} "
                f"without an answer, {c['timeout']} timed out (> {self.timeout:g} s), "
                f"{c['error']} worker errors")


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or not str(x).strip()


def _gold_text(gold: object) -> str:
    """Gold answers as strings: 27.0 -> "27", lists (several answers) joined with commas."""
    if isinstance(gold, float) and gold.is_integer():
        return str(int(gold))
    if isinstance(gold, (list, tuple)):
        return ", ".join(map(_gold_text, gold))
    return str(gold).strip()


def grade_responses(df, grader: MathGrader | None = None, progress: bool = True):
    """Re-grade a responses DataFrame (columns ``answer``, ``gold``): a copy with ``correct`` and
    ``grade_status`` from ``grader`` (default: a strict :class:`MathGrader`, closed afterwards)."""
    own = grader is None
    grader = grader or MathGrader()
    try:
        results = grader.grade_many(zip(df["answer"], df["gold"]), progress=progress)
    finally:
        if own:
            grader.close()
    return df.assign(correct=[r.correct for r in results],
                     grade_status=[r.status for r in results])


@dataclass(frozen=True)
class Grader:
    """A grader of :data:`GRADERS` by name, with the extractor it pairs with (the one place
    that pairing is written): ``simple`` (exact match, numbers as numbers; the built-in task)
    takes ``extract_answer``; ``math-verify`` (math-verify's strict comparison) and
    ``reference`` (the Qwen2.5-Math toolkit's numeric tolerances) take ``extract_labelled``
    (with the answer's source). ``extract`` gives another extractor (the family's own).
    ``timeout``: seconds per sample for the math-verify graders.

    >>> with Grader("simple").open() as grade:
    ...     grade("2", "2.0")
    True
    """

    name: str = "simple"
    timeout: float = 5.0
    extract: Callable | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.name not in GRADERS:
            raise GradeError(f"grader {self.name!r} is not one of {', '.join(GRADERS)}")

    @property
    def extractor(self) -> Callable:
        from l2s_kit.evaluate.extract import extract_answer, extract_labelled

        if self.extract is not None:
            return self.extract
        return extract_answer if self.name == "simple" else extract_labelled

    def open(self):
        """A context manager giving the grading callable ``(answer, gold) -> bool`` (for the
        math-verify graders a :class:`MathGrader`, whose worker process it stops at the end)."""
        from contextlib import nullcontext

        from l2s_kit.evaluate.extract import grade

        if self.name == "simple":
            return nullcontext(grade)
        return MathGrader("strict" if self.name == "math-verify" else "reference",
                          timeout=self.timeout)
