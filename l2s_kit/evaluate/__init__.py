"""Evaluation: generate responses, extract and grade answers, summarize accuracy and length.

>>> from l2s_kit.evaluate import GenerationSettings, evaluate, summarize, table1
>>> df = evaluate("merged/ties-7b", rows, "runs/responses.jsonl",
...               settings=GenerationSettings(max_new_tokens=4096))
>>> summarize(df, by=("model", "dataset"))          # n, accuracy (%), mean_tokens per group

Real benchmarks (the Qwen2.5-Math toolkit's data layout) and math-verify grading:

>>> from l2s_kit.evaluate import MathGrader, extract_labelled, load_benchmark
>>> rows = load_benchmark("math500", "data/benchmarks", prompt="qwen25-math-cot")
>>> with MathGrader() as grader:                      # worker process, hard per-sample timeout
...     df = evaluate("merged/ties-7b", rows, "runs/math500.jsonl", extract=extract_labelled,
...                   grader=grader)
"""

from l2s_kit.evaluate.backends import (
    Backend,
    Generation,
    GenerationError,
    GenerationSettings,
    TransformersBackend,
)
from l2s_kit.evaluate.benchmarks import (
    BENCHMARKS,
    PAPER_BENCHMARKS,
    BenchmarkError,
    load_benchmark,
    load_benchmarks,
)
from l2s_kit.evaluate.extract import Extraction, extract_answer, extract_labelled, grade, normalize
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
from l2s_kit.evaluate.summary import SummaryError, format_table1, summarize, table1

__all__ = [
    "BENCHMARKS",
    "LENGTH_LIMITS",
    "LENGTH_RULES",
    "LengthError",
    "token_lengths",
    "with_lengths",
    "PAPER_BENCHMARKS",
    "PROMPTS",
    "Backend",
    "BenchmarkError",
    "Extraction",
    "GradeError",
    "GradeResult",
    "MathGrader",
    "PromptError",
    "extract_labelled",
    "get_prompt",
    "grade_responses",
    "length_limit",
    "load_benchmark",
    "load_benchmarks",
    "render_prompt",
    "COLUMNS",
    "Generation",
    "GenerationError",
    "GenerationSettings",
    "ResponsesError",
    "SummaryError",
    "TransformersBackend",
    "evaluate",
    "extract_answer",
    "format_table1",
    "grade",
    "load_responses",
    "load_rows",
    "normalize",
    "summarize",
    "table1",
]
