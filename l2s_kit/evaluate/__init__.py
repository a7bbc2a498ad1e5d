"""Evaluation: generate responses, extract and grade answers, summarize accuracy and length.

>>> from l2s_kit.evaluate import GenerationSettings, evaluate, summarize, table1
>>> df = evaluate("merged/ties-7b", rows, "runs/responses.jsonl",
...               settings=GenerationSettings(max_new_tokens=4096))
>>> summarize(df, by=("model", "dataset"))          # n, accuracy (%), mean_tokens per group
"""

from l2s_kit.evaluate.backends import (
    Backend,
    Generation,
    GenerationError,
    GenerationSettings,
    TransformersBackend,
)
from l2s_kit.evaluate.extract import extract_answer, grade, normalize
from l2s_kit.evaluate.run import COLUMNS, ResponsesError, evaluate, load_responses, load_rows
from l2s_kit.evaluate.summary import SummaryError, format_table1, summarize, table1

__all__ = [
    "Backend",
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
