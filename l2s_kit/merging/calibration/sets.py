"""Calibration sets for activation-based merging: (question, short answer, long answer) records
turned into texts.

A calibration set is chosen by a :class:`CalibrationSpec`: where the records come from, which parts
of them make a text, how many samples and which seed draws them, and the token limit per text.

>>> spec = CalibrationSpec(source="family", parts="question+short", samples=100, seed=0)
>>> texts(spec)[0]
'Q 3 +5 *2 _ _ _ _ _ _ _ _ A 6 .'

Sources:

- ``family``: the built-in family's task (``l2s_kit.zoo.task``), problems from its *train* split
  (never the evaluation splits), levels 1–5 in turn. The short answer is System 1's format (the
  answer at once), the long one System 2's (the worked chain, "Wait, let me double-check", the
  re-checks). Texts are ``prompt + " " + answer``, as the family's models read them.
- ``s1k``: ``calibration/s1k_questions_solutions.json`` of the reference data (``$L2S_SHARED_DATA``
  or ``../shared/data``): ``problem`` and ``solution`` as question and short answer; it has no long
  answers (its thinking trajectories are empty), so ``question+long`` is refused.
- a path to a ``.jsonl`` (or a ``.json`` list) of records; ``fields`` names the question, short and
  long answer fields, comma-separated (``"problem,solution"`` or ``"q,short,long"``).

Parts: ``question+short``, ``question+long``, ``question+both``. With ``both`` every record gives
one text, alternately with its short and its long answer (sample 0 short, 1 long, ...), so a set of
n samples holds n texts whatever the parts; the paper does not say how "both" is made.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from l2s_kit.errors import L2SError
from l2s_kit.io.paths import reference_data_dir

PARTS = ("question+short", "question+long", "question+both")
S1K = "calibration/s1k_questions_solutions.json"


class CalibrationError(L2SError):
    """A calibration set that cannot be built (unknown source, missing field, no long answers)."""


@dataclass(frozen=True)
class Record:
    question: str
    short: str | None
    long: str | None


@dataclass(frozen=True)
class CalibrationSpec:
    """Which calibration texts to use (see the module docstring)."""

    source: str = "family"        # family, s1k, or a path to a .jsonl / .json of records
    parts: str = "question+short"  # question+short, question+long, question+both
    samples: int = 100            # number of texts
    seed: int = 0                 # draws the records (and the family's problems and guesses)
    fields: str = "question,short,long"  # question, short[, long] field names of a file source
    max_tokens: int = 512         # each text is cut to this many tokens

    def __post_init__(self):
        if self.parts not in PARTS:
            raise CalibrationError(f"calibration parts must be one of {list(PARTS)}, "
                                   f"got {self.parts!r}")
        if self.samples < 1 or self.max_tokens < 2:
            raise CalibrationError(f"calibration samples ({self.samples}) must be ≥ 1 and "
                                   f"max_tokens ({self.max_tokens}) ≥ 2")
        if self.source not in ("family", "s1k"):
            p = Path(self.source)
            if not p.is_file():
                raise CalibrationError(
                    f"calibration source {self.source!r} is not 'family', 's1k' or an existing "
                    ".jsonl/.json file")
            if len(self.fields.split(",")) not in (2, 3):
                raise CalibrationError(f"calibration fields {self.fields!r}: give 'question,short' "
                                       "or 'question,short,long' field names")

    def key(self) -> dict:
        """The settings plus a content hash of a file source: what a cache is keyed by."""
        d = asdict(self)
        if self.source not in ("family",):
            path = shared_s1k() if self.source == "s1k" else Path(self.source)
            d["source_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return d


def shared_s1k() -> Path:
    path = reference_data_dir() / S1K
    if not path.is_file():
        raise CalibrationError(f"the s1K calibration file {path} is missing; set L2S_SHARED_DATA "
                               "to the folder holding calibration/, or give the file's path")
    return path


def family_records(n: int, seed: int = 0) -> list[Record]:
    """``n`` distinct problems of the family's train split, levels 1–5 in turn."""
    from l2s_kit.zoo import task

    per_level = -(-n // len(task.LEVELS))
    probs = task.problems("train", per_level, seed)
    by_level = [[p for p in probs if p.level == lv] for lv in task.LEVELS]
    out = []
    for i in range(per_level):
        for ps in by_level:
            if i < len(ps) and len(out) < n:
                p = ps[i]
                out.append(Record(p.prompt, task.direct(p), task.reflective(p)))
    return out


def file_records(path: str | os.PathLike, fields: str = "question,short,long") -> list[Record]:
    """Records of a .jsonl (one object per line) or .json (a list of objects) file."""
    path = Path(path)
    text = path.read_text()
    rows = (json.loads(text) if path.suffix == ".json"
            else [json.loads(ln) for ln in text.splitlines() if ln.strip()])
    names = [f.strip() for f in fields.split(",")]
    q, s, lg = (names + [None])[:3]
    out = []
    for i, r in enumerate(rows):
        missing = [f for f in (q, s) if f not in r]
        if missing:
            raise CalibrationError(f"{path} row {i} has no field {missing[0]!r} (fields: "
                                   f"{', '.join(r)}); choose fields with fields='question,short"
                                   "[,long]'")
        out.append(Record(str(r[q]), str(r[s]) or None,
                          (str(r[lg]) or None) if lg and r.get(lg) else None))
    return out


def records(spec: CalibrationSpec) -> list[Record]:
    """All records of the spec's source (the family: just enough for ``spec.samples``)."""
    if spec.source == "family":
        return family_records(spec.samples, spec.seed)
    if spec.source == "s1k":
        return file_records(shared_s1k(), "problem,solution,thinking")
    return file_records(spec.source, spec.fields)


def texts(spec: CalibrationSpec) -> list[str]:
    """The calibration texts: ``spec.samples`` records drawn with ``spec.seed``, joined as the parts
    say (the family: prompt + " " + answer; files: question + blank line + answer)."""
    recs = records(spec)
    if spec.source != "family":
        recs = random.Random(spec.seed).sample(recs, min(spec.samples, len(recs)))
    sep = " " if spec.source == "family" else "\n\n"
    out = []
    for i, r in enumerate(recs[: spec.samples]):
        part = spec.parts.removeprefix("question+")
        if part == "both":
            part = "short" if i % 2 == 0 else "long"
        answer = getattr(r, part)
        if answer is None:
            raise CalibrationError(f"calibration source {spec.source!r} has no {part} answer for "
                                   f"record {i} ({r.question[:40]!r}…); use parts="
                                   "'question+short' or a source with long answers")
        out.append(f"{r.question}{sep}{answer}")
    return out
