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

What ``l2s eval`` is asked to do is one checked object, run whole:

>>> from l2s_kit.evaluate import EvalSpec, run_eval
>>> spec = EvalSpec.from_options(model="merged/ties-7b", out="runs/math500.jsonl",
...                              benchmarks="math500", data_dir="data/benchmarks")
>>> df, report = run_eval(spec)
"""

from l2s_kit.io.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "backends": ("DEFAULT_SETTINGS", "FAMILY_SETTINGS", "Backend", "Generation",
                 "GenerationError", "GenerationSettings", "LENGTH_LIMITS", "TransformersBackend"),
    "benchmarks": ("BENCHMARKS", "FAMILY_BENCHMARK", "PAPER_BENCHMARKS", "BenchmarkError", "family_format",
                   "own_format",
                   "load_benchmark", "load_benchmarks", "parse_level"),
    "extract": ("Extraction", "answer_candidates", "extract_answer", "extract_family",
                "extract_labelled", "grade", "normalize"),
    "grading": ("GradeError", "GradeResult", "Grader", "MathGrader", "grade_responses"),
    "lengths": ("LENGTH_RULES", "LengthError", "token_lengths", "with_lengths"),
    "prompts": ("PROMPTS", "PromptError", "get_prompt",
                "render_prompt"),
    "run": ("COLUMNS", "ResponsesError", "evaluate", "load_responses", "load_rows"),
    "spec": ("EvalSpec", "EvalSpecError", "run_eval"),
})
