"""Grade saved responses again, without generating (``l2s regrade``).

The input file is read, never written. The output is a new responses file: the same rows with
``answer``, ``answer_source``, ``answer_scope``, ``correct``, ``grade_status`` and ``grader``
from the grader given, and ``regraded_from`` (the input's path and sha256). Its rows name the
new grader, so ``l2s eval`` resuming into it sees another run: more samples must be graded by
the same grader.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from l2s_kit.evaluate.extract import final_part
from l2s_kit.evaluate.grading import Grader
from l2s_kit.evaluate.run import (
    ResponsesError,
    _extracted,
    _frame,
    _graded,
    _not_a_file,
    _read_lines,
    grader_name,
    is_responses_file,
)
from l2s_kit.io import atomic_file, check_apart, claim_file

NEEDS = ("response", "gold")


def regrade(src: str | os.PathLike, out: str | os.PathLike, grader: str = "math-verify",
            after_think: bool = True, timeout: float = 5.0, overwrite: bool = False,
            progress: bool = True) -> pd.DataFrame:
    """Grade every row of the responses file ``src`` with ``grader`` (a name of
    :data:`l2s_kit.evaluate.grading.GRADERS`), taking the answer after a closed ``<think>`` block
    when ``after_think``; write the graded rows to ``out`` (a new file; an existing one only with
    ``overwrite``, and never ``src`` itself). Returns them."""
    from tqdm.auto import tqdm

    src, out = Path(src), Path(out)
    if not src.is_file():
        raise ResponsesError(f"responses file {src} " + _not_a_file(src))
    check_apart(out, {"responses file": src})
    claim_file(out, overwrite, "regraded responses file", mine=is_responses_file)
    data = src.read_bytes()
    rows = _read_lines(src, repair=False)
    if not rows:
        raise ResponsesError(f"{src} holds no responses")
    for i, r in enumerate(rows, 1):
        missing = [c for c in NEEDS if c not in r]
        if missing:
            raise ResponsesError(f"{src}, row {i}: no field {missing[0]!r}; regrading needs "
                                 f"{', '.join(NEEDS)} on every row (an l2s responses file)")
    origin = {"file": str(src), "sha256": hashlib.sha256(data).hexdigest()}
    grading = Grader(grader, timeout)
    extract = grading.extractor
    new = []
    with grading.open() as g:
        name = grader_name(g)
        for r in tqdm(rows, desc=f"regrade ({name})", unit="response", disable=not progress):
            text, scope = final_part(r["response"] or "", after_think)
            answer, source = _extracted(extract(text))
            correct, status = _graded(g, answer, r["gold"])
            row = {**r, "answer": answer, "correct": correct, "grader": name,
                   "answer_scope": scope, "regraded_from": origin}
            for key, value in (("answer_source", source), ("grade_status", status)):
                if value is None:
                    row.pop(key, None)
                else:
                    row[key] = value
            new.append(row)
    with atomic_file(out, remember=True) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new),
                       encoding="utf-8")
    return _frame(new)
