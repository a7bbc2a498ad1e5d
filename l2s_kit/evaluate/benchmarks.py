"""Loaders for the paper's benchmarks in the Qwen2.5-Math evaluation toolkit's layout.

The kit ships no benchmark data. Point it at a folder holding ``<name>/test.jsonl`` for each
benchmark (the toolkit's ``data/`` folder has this layout), and :func:`load_benchmark` returns the
rows :func:`l2s_kit.evaluate.evaluate` takes::

    {"id": "test/precalculus/807.json", "dataset": "math500", "level": 2,
     "question": "Convert the point ...", "gold": "\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)",
     "prompt": "<|im_start|>system\\nPlease reason step by step, ...", "meta": {...}}

Gold answers, per benchmark (see ``BENCHMARKS``):

============  ===============  =====================================================  ===========
name          question field   gold                                                   level
============  ===============  =====================================================  ===========
math500       problem          ``answer``                                             ``level`` 1–5
gsm8k         question         text after ``####`` in ``answer``, commas removed      –
aime24        question         ``answer`` without zero padding ("025" → "25")         –
amc23         question         ``answer`` (27.0 → "27")                               –
minerva_math  problem          last ``\\boxed{}`` of ``solution``                     –
olympiadbench question         ``final_answer`` (a list; several joined by ", "),     –
                               ``$`` removed
college_math  question         ``answer`` with ``$`` removed                          –
l2s_family    question         ``answer``                                             ``level`` 1–5
============  ===============  =====================================================  ===========

Only MATH500 and ``l2s_family`` (the built-in family's task written out by ``l2s zoo export``, so
the real-pair path can be tried on a CPU with nothing downloaded) have difficulty levels; other
rows have ``level`` None. A benchmark folder may hold other splits beside ``test.jsonl`` (e.g. a
``validation.jsonl`` in the same layout): ``split=`` reads them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from l2s_kit.errors import L2SError
from l2s_kit.evaluate.extract import boxed_contents
from l2s_kit.evaluate.prompts import render_prompt
from l2s_kit.zoo.task import BENCHMARK as FAMILY_BENCHMARK


class BenchmarkError(L2SError, ValueError):
    """A benchmark is unknown, or its file is missing or malformed."""


def _gsm8k_gold(row: dict) -> str:
    answer = str(row["answer"])
    if "####" not in answer:
        raise KeyError("answer (with '#### <number>')")
    return answer.split("####")[-1].strip().replace(",", "")


def _aime_gold(row: dict) -> str:
    s = str(row["answer"]).strip()
    return str(int(s)) if s.isdigit() else s


def _number_gold(row: dict) -> str:
    v = row["answer"]
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _last_boxed(row: dict) -> str:
    boxed = boxed_contents(str(row["solution"]))
    if not boxed:
        raise KeyError("solution (with a \\boxed{} answer)")
    return boxed[-1].strip()


def _olympiad_gold(row: dict) -> str:
    answers = row["final_answer"]
    answers = answers if isinstance(answers, list) else [answers]
    return ", ".join(str(a).strip().strip("$").strip() for a in answers)


def _dollarless(row: dict) -> str:
    return str(row["answer"]).replace("$", "").strip()


@dataclass(frozen=True)
class Benchmark:
    """How to read one benchmark: question field, gold answer, id and level of a row."""

    name: str
    question: str  # field holding the question
    gold: Callable[[dict], str]
    id_field: str | None  # None: the 0-based line number (the file's own ids are not unique)
    level_field: str | None = None
    meta_fields: tuple[str, ...] = ()  # kept under "meta" (subject, type, answer_type, ...)
    description: str = ""
    # its questions are the very prompts its models know, its answers in its own format: read
    # with no template, the family's extractor and the simple grader (the built-in family's task)
    own_format: bool = False


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("math500", "problem", lambda r: str(r["answer"]).strip(), "unique_id", "level",
              ("subject",), "MATH500 (prm800k split), levels 1-5"),
    Benchmark("gsm8k", "question", _gsm8k_gold, "idx", description="GSM8K test"),
    Benchmark("aime24", "question", _aime_gold, "id", description="AIME 2024"),
    Benchmark("amc23", "question", _number_gold, "id", description="AMC 2023"),
    Benchmark("minerva_math", "problem", _last_boxed, "idx", meta_fields=("type",),
              description="Minerva Math (MIT OCW)"),
    Benchmark("olympiadbench", "question", _olympiad_gold, "id",
              meta_fields=("answer_type", "is_multiple_answer", "unit", "subfield"),
              description="OlympiadBench (math, English)"),
    Benchmark("college_math", "question", _dollarless, None,
              meta_fields=("data_topic", "question_number"), description="College Math"),
    Benchmark(FAMILY_BENCHMARK, "question", lambda r: str(r["answer"]).strip(), "id", "level",
              description="the built-in family's chained-arithmetic task (l2s zoo export)",
              own_format=True),
)}
PAPER_BENCHMARKS = ("gsm8k", "math500", "aime24", "minerva_math", "olympiadbench", "college_math")


def benchmark_path(name: str, data_dir: str | os.PathLike, split: str = "test") -> Path:
    """``data_dir/<name>/<split>.jsonl``, checked to exist."""
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    path = Path(data_dir) / name / f"{split}.jsonl"
    if not path.is_file():
        raise BenchmarkError(
            f"benchmark {name!r}: {path} does not exist; data_dir must hold <name>/{split}.jsonl "
            "for each benchmark, as the Qwen2.5-Math evaluation toolkit's data/ folder does")
    return path


def load_benchmark(name: str, data_dir: str | os.PathLike, *, prompt: str | None = "qwen25-math-cot",
                   tokenizer=None, limit: int | None = None,
                   levels: tuple[int, ...] | None = None, split: str = "test") -> list[dict]:
    """Rows of benchmark ``name`` from ``data_dir/<name>/<split>.jsonl``, in file order.

    Each row: ``id`` (string), ``dataset``, ``level`` (int or None), ``question``, ``gold``
    (string), ``meta`` (dict of the fields in ``BENCHMARKS[name].meta_fields``) and ``prompt``,
    the question rendered with the template ``prompt`` (see :mod:`l2s_kit.evaluate.prompts`; None
    leaves the question as it is). ``levels`` keeps only rows of those levels (MATH500), ``limit``
    the first ``limit`` rows after that. Errors name the file, the line and the missing field.
    """
    bench = BENCHMARKS.get(name)
    path = benchmark_path(name, data_dir, split)
    if levels is not None and bench.level_field is None:
        raise BenchmarkError(f"benchmark {name!r} has no difficulty levels (only math500 has)")
    rows: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(rows) >= limit:
                break
            try:
                raw = json.loads(line)
                question = raw[bench.question]
                gold = bench.gold(raw)
                id_ = str(raw[bench.id_field]) if bench.id_field else str(lineno - 1)
                level = parse_level(raw[bench.level_field]) if bench.level_field else None
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{path}, line {lineno}: not valid JSON ({e})") from None
            except KeyError as e:
                raise BenchmarkError(f"{path}, line {lineno}: no field {e.args[0]} (benchmark "
                                     f"{name!r} reads question from {bench.question!r})") from None
            if levels is not None and level not in levels:
                continue
            rows.append({"id": id_, "dataset": name, "level": level, "question": question,
                         "gold": gold, "meta": {k: raw.get(k) for k in bench.meta_fields},
                         "prompt": question if prompt is None
                         else render_prompt(prompt, question, tokenizer)})
    return rows


def parse_level(value) -> int | None:
    """1 for 1, "1" or "Level 1"; None when there is no level ("Level ?", None, NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    m = re.search(r"\d+", str(value))
    return int(m.group()) if m else None


@dataclass(frozen=True)
class OwnFormat:
    """How the family's task is read wherever it is evaluated (the built-in study, a pair given
    by paths on ``l2s_family``, ``l2s eval --benchmark l2s_family``): its questions as prompts,
    its generation settings, extractor, answer finder and grader."""

    settings: object
    extract: Callable
    candidates: Callable
    grader: str = "simple"


def family_format() -> OwnFormat:
    from l2s_kit.evaluate.backends import FAMILY_SETTINGS
    from l2s_kit.evaluate.extract import extract_family
    from l2s_kit.zoo import task

    return OwnFormat(FAMILY_SETTINGS, extract_family, task.candidates)


def own_format(names, prompt: str | None = None) -> bool:
    """Whether the benchmarks ``names`` carry their own prompt and answer format (the family's
    task: no template, its own extractor and grader). Such a benchmark is evaluated alone and
    with no prompt template given; anything else is refused, naming it."""
    names = [names] if isinstance(names, str) else list(names)
    own = [n for n in names if n in BENCHMARKS and BENCHMARKS[n].own_format]
    if own and len(own) < len(names):
        raise BenchmarkError(f"benchmark {own[0]} carries its own prompt and answer format: "
                             "evaluate it on its own, not with "
                             + ", ".join(n for n in names if n not in own))
    if own and prompt is not None:
        raise BenchmarkError(f"benchmark {own[0]} carries its own prompt (its questions are the "
                             f"prompts its models know): drop --prompt {prompt}")
    return bool(own)


def load_benchmarks(names, data_dir: str | os.PathLike, **kwargs) -> list[dict]:
    """Rows of several benchmarks, one after the other (ids are unique within a dataset)."""
    names = [names] if isinstance(names, str) else list(names)
    return [row for n in names for row in load_benchmark(n, data_dir, **kwargs)]
