"""Evaluation: generate responses, extract and grade answers, one row per sample.

>>> from l2s_kit.evaluate import GenerationSettings, evaluate
>>> df = evaluate("merged/ties-7b", rows, "runs/responses.jsonl",
...               settings=GenerationSettings(max_new_tokens=4096))
>>> from l2s_kit.analysis import summarize          # summaries live in l2s_kit.analysis
>>> summarize(df, by=("model", "dataset"))          # n, accuracy (%), mean_tokens per group

Real benchmarks (the Qwen2.5-Math toolkit's data layout) and math-verify grading:

>>> from l2s_kit.evaluate import MathGrader, extract_labelled, load_benchmark
>>> rows = load_benchmark("math500", "data/benchmarks", prompt="qwen25-math-cot")
>>> with MathGrader() as grader:                      # worker process, hard per-sample timeout
...     df = evaluate("merged/ties-7b", rows, "runs/math500.jsonl", extract=extract_labelled,
...                   grader=grader)
"""

from l2s_kit.evaluate.backends import (
    DEFAULT_SETTINGS,
    FAMILY_SETTINGS,
    Backend,
    Generation,
    GenerationError,
    GenerationSettings,
    TransformersBackend,
)
from l2s_kit.evaluate.benchmarks import (
    BENCHMARKS,
    FAMILY_BENCHMARK,
    PAPER_BENCHMARKS,
    BenchmarkError,
    load_benchmark,
    load_benchmarks,
    parse_level,
)
from l2s_kit.evaluate.extract import (
    Extraction,
    answer_candidates,
    extract_answer,
    extract_family,
    extract_labelled,
    grade,
    normalize,
)
from l2s_kit.evaluate.grading import GradeError, GradeResult, MathGrader, grade_responses
from l2s_kit.evaluate.lengths import LENGTH_RULES, LengthError, token_lengths, with_lengths
from l2s_kit.evaluate.prompts import (
    LENGTH_LIMITS,
    PROMPTS,
    PromptError,
    get_prompt,
    length_limit,
    render_prompt,
)
from l2s_kit.evaluate.run import COLUMNS, ResponsesError, evaluate, load_responses, load_rows

__all__ = [
    "BENCHMARKS",
    "COLUMNS",
    "answer_candidates",
    "DEFAULT_SETTINGS",
    "FAMILY_BENCHMARK",
    "FAMILY_SETTINGS",
    "LENGTH_LIMITS",
    "LENGTH_RULES",
    "PAPER_BENCHMARKS",
    "PROMPTS",
    "Backend",
    "BenchmarkError",
    "Extraction",
    "GradeError",
    "GradeResult",
    "Generation",
    "GenerationError",
    "GenerationSettings",
    "LengthError",
    "MathGrader",
    "PromptError",
    "ResponsesError",
    "TransformersBackend",
    "evaluate",
    "extract_answer",
    "extract_family",
    "extract_labelled",
    "get_prompt",
    "grade",
    "grade_responses",
    "length_limit",
    "load_benchmark",
    "load_benchmarks",
    "load_responses",
    "load_rows",
    "normalize",
    "parse_level",
    "render_prompt",
    "token_lengths",
    "with_lengths",
]
