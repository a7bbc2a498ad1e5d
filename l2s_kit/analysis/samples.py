"""The sample files of the field's harnesses, read into the kit's responses table.

Responses a researcher already has are analysed as the kit's own are, without a model:

- **lm-evaluation-harness** (``lm_eval --log_samples``): ``samples_<task>_<date>.jsonl``, one line
  per problem (``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``, ``filtered_resps``,
  ``filter``, and the task's metrics); the model is named by the ``results_<date>.json`` beside it.
- **lighteval** (``--save-details``): ``details_<task>_<date>.parquet``, one row per problem
  (``doc``: query, choices, gold_index, id; ``model_response``: text; ``metric``).
- **plain JSONL** (what a vLLM or OpenAI batch run is easily turned into): ``prompt``,
  ``response``, ``gold`` and optionally ``id``, ``level``, ``sample``, ``model``, ``correct``,
  ``dataset``.
- the kit's own ``responses.jsonl`` and the Qwen2.5-Math toolkit's output (one row per question,
  lists ``code`` and ``score``).

Each format is told by its content, never by its name. The harness's own grade is kept as
``correct`` and named in ``grader`` (``lm-eval:exact_match[strict-match]``); the problem id is the
dataset's own (``id``, ``unique_id``, ``idx``, ...) where the document has one, so the same
problem is joined across models; the level is read where the task has one (MATH500's ``level``).
Lengths: ``n_words`` and ``n_chars`` always; ``n_tokens`` with a tokenizer (the decoded response
re-tokenized: the published rule, no EOS counted). What a format lacks is named in one line in
``df.attrs["notes"]``, never guessed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

from l2s_kit.analysis.outputs import AnalysisError, read_own, read_toolkit
from l2s_kit.evaluate import COLUMNS, parse_level

FORMATS = ("lm-eval", "lighteval", "jsonl", "l2s", "qwen-math-toolkit")
ID_FIELDS = ("id", "unique_id", "idx", "problem_id", "question_id", "task_id")
LEVEL_FIELDS = ("level", "difficulty")
_LM_EVAL_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.jsonl$")
_LIGHTEVAL_NAME = re.compile(r"^details_(?P<task>.+?)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.:]+)"
                             r"\.parquet$")


def sniff(path: Path) -> str:
    """The format of ``path`` (one of :data:`FORMATS`), told by its content."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise AnalysisError(f"{path}: reading parquet files (lighteval's details) needs "
                                "pyarrow: pip install 'l2s_kit[parquet]'") from None

        names = set(pq.read_schema(path).names)
        if {"doc", "model_response"} <= names:
            return "lighteval"
        raise AnalysisError(f"{path}: a parquet file without lighteval's 'doc' and "
                            f"'model_response' columns (it has: {', '.join(sorted(names))})")
    first = _first_row(path)
    if {"doc_id", "doc", "resps", "filtered_resps"} <= set(first):
        return "lm-eval"
    if "code" in first and "score" in first:
        return "qwen-math-toolkit"
    if "response" in first and "row_hash" in first:
        return "l2s"
    if {"prompt", "response", "gold"} <= set(first):
        return "jsonl"
    raise AnalysisError(
        f"{path}: not a sample file the kit reads (lm-evaluation-harness samples_*.jsonl, "
        "lighteval details_*.parquet, the kit's responses.jsonl, the Qwen2.5-Math toolkit's "
        "output, or a JSONL with prompt, response, gold); its first row's fields: "
        + ", ".join(first))


def _first_row(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise AnalysisError(f"{path}: line 1 is not a JSON object")
                    return row
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnalysisError(f"{path}: not JSON lines ({e})") from None
    raise AnalysisError(f"{path} is empty")


def read_samples(path: str | os.PathLike, *, model: str | None = None,
                 tokenizer=None) -> pd.DataFrame:
    """The responses table of one sample file (see the module docstring); ``model`` names the
    model (default: what the file or the run beside it says, else the file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"sample file {path} does not exist (or is not a file)")
    kind = sniff(path)
    if kind in ("l2s", "qwen-math-toolkit"):
        df = (read_own if kind == "l2s" else read_toolkit)(path, model)
        notes = []
    else:
        reader = {"lm-eval": _lm_eval, "lighteval": _lighteval, "jsonl": _plain}[kind]
        df, notes = reader(path, model)
    if tokenizer is not None:
        df = with_token_counts(df, tokenizer)
    elif df["n_tokens"].isna().any():
        notes.append("no token counts and no tokenizer given: lengths in words (n_words) and "
                     "characters; give --tokenizer to count tokens")
    df["level"] = df["level"].map(parse_level).astype("Int64")
    df["n_words"] = df["response"].fillna("").str.split().str.len()
    df["n_chars"] = df["response"].fillna("").str.len()
    df["source"] = kind
    df = df.reindex(columns=[*COLUMNS, *[c for c in df.columns if c not in COLUMNS]])
    df.attrs["notes"] = [f"{path.name}: {n}" for n in notes]
    return df


def read_outputs(path: str | os.PathLike, model: str | None = None,
                 tokenizer=None) -> pd.DataFrame:
    """A responses table from ``path``, whatever wrote it (:func:`read_samples`). For files of
    other tools, ``model`` names the model and ``correct`` is the tool's own grade;
    ``n_tokens`` is counted with ``tokenizer`` (a tokenizer or a local folder to load one from)
    when given; ``n_words`` (whitespace-separated words) and ``n_chars`` are always added, so
    lengths can be compared without one."""
    return read_samples(path, model=model, tokenizer=tokenizer)


def with_token_counts(df: pd.DataFrame, tokenizer) -> pd.DataFrame:
    """``n_tokens``: each response re-tokenized (the published rule: no special tokens added)."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"])
              for t in df["response"].fillna("")]
    return df.assign(n_tokens=pd.Series(counts, index=df.index, dtype=float))


def _doc_id(doc: dict, fallback) -> str:
    for k in ID_FIELDS:
        if isinstance(doc, dict) and doc.get(k) not in (None, ""):
            return str(doc[k])
    return "" if fallback is None else str(fallback)


def _doc_level(doc: dict):
    for k in LEVEL_FIELDS:
        if isinstance(doc, dict) and doc.get(k) not in (None, ""):
            return doc[k]
    return None


def _lm_eval_run(path: Path) -> dict:
    """The ``results_<date>.json`` written with ``path`` (empty when there is none)."""
    m = _LM_EVAL_NAME.match(path.name)
    if m:
        results = path.with_name(f"results_{m['date']}.json")
        if results.is_file():
            try:
                return json.loads(results.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                return {}
    return {}


def _model_label(value: str) -> str:
    """A model's name from a path or hub id: its last part."""
    return Path(str(value).rstrip("/")).name or str(value)


def _lm_eval(path: Path, model: str | None) -> tuple[pd.DataFrame, list[str]]:
    run = _lm_eval_run(path)
    notes = []
    if model is None:
        named = run.get("model_name") or ""
        model = _model_label(named) if named else path.parent.name
        if not named:
            notes.append(f"no results_*.json beside it: the model is named by its folder "
                         f"({model})")
    m = _LM_EVAL_NAME.match(path.name)
    task = m["task"] if m else path.stem
    version = run.get("lm_eval_version") or ""
    rows, filters, metrics_seen = [], set(), []
    for lineno, r in enumerate(_lines(path), 1):
        if not {"doc_id", "doc", "resps"} <= set(r):
            raise AnalysisError(f"{path}, line {lineno}: not an lm-evaluation-harness sample "
                                "(doc_id, doc, resps expected)")
        filters.add(r.get("filter"))
        resps = r["resps"][0] if r["resps"] else []
        resps = resps if isinstance(resps, list) else [resps]
        answers = r.get("filtered_resps") or [None]
        answer = answers[0][0] if isinstance(answers[0], list) and answers[0] else answers[0]
        metric = next((k for k in r.get("metrics") or [] if k in r), None)
        if metric and metric not in metrics_seen:
            metrics_seen.append(metric)
        args = (r.get("arguments") or {}).get("gen_args_0") or {}
        for j, text in enumerate(resps):
            rows.append({
                "model": model, "dataset": task, "id": _doc_id(r["doc"], r["doc_id"]),
                "level": _doc_level(r["doc"]), "sample": j, "prompt": args.get("arg_0", ""),
                "response": text,
                "answer": None if answer in (None, "[invalid]") else str(answer),
                "gold": r.get("target"),
                "correct": bool(float(r[metric]) >= 0.5) if metric and len(resps) == 1 else None,
                "generation": args.get("arg_1"), "n_tokens": None,
                "grader": f"lm-eval:{metric}[{r.get('filter')}]" if metric else None,
            })
    if len(filters) > 1:
        raise AnalysisError(f"{path}: samples of several filters ({', '.join(map(str, filters))})"
                            "; lm-eval writes one row per problem and filter: keep one filter's "
                            "rows")
    df = _frame(rows, path)
    notes += _lacks(df, "lm-eval" + (f" {version}" if version else ""))
    return df, notes


def _lighteval(path: Path, model: str | None) -> tuple[pd.DataFrame, list[str]]:
    table = pd.read_parquet(path)
    notes = []
    m = _LIGHTEVAL_NAME.match(path.name)
    task = (m["task"] if m else path.stem).split("|")[0]  # "math_500|0": the task, its shots
    if model is None:
        # lighteval writes details/<model name>/<date>/details_<task>_<date>.parquet
        model = path.parent.parent.name or path.parent.name
    rows = []
    for i, r in enumerate(table.itertuples(index=False)):
        doc = _plain_dict(r.doc)
        response = _plain_dict(r.model_response)
        metric = _plain_dict(getattr(r, "metric", None)) or {}
        texts = list(response.get("text") or [])
        graded = next((k for k, v in metric.items() if v is not None), None)
        specific = _plain_dict(doc.get("specific"))
        for j, text in enumerate(texts):
            rows.append({
                "model": model, "dataset": task,
                "id": _doc_id(specific, None) if _doc_id(specific, "") else _doc_id(doc, i),
                "level": _doc_level(specific) or _doc_level(doc), "sample": j,
                "prompt": doc.get("query", ""), "response": text, "answer": None,
                "gold": _gold(doc),
                "correct": bool(float(metric[graded]) >= 0.5)
                if graded and len(texts) == 1 else None,
                # not output_tokens: they hold a batch's padding after the row's end
                "n_tokens": None, "grader": f"lighteval:{graded}" if graded else None,
            })
    df = _frame(rows, path)
    notes += _lacks(df, "lighteval")
    return df, notes


def _plain_dict(value) -> dict:
    """A parquet struct cell as a dict of plain Python values."""
    if value is None or (isinstance(value, float) and value != value):
        return {}
    if isinstance(value, dict):
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in value.items()}
    return dict(value)


def _gold(doc: dict):
    """The gold answer of a lighteval document: its choice at gold_index."""
    choices, index = doc.get("choices"), doc.get("gold_index")
    if choices is None or index is None:
        return None
    index = index[0] if isinstance(index, (list, tuple)) else index
    return choices[int(index)] if int(index) < len(choices) else None


def _plain(path: Path, model: str | None) -> tuple[pd.DataFrame, list[str]]:
    rows = []
    samples: dict[str, int] = {}
    for lineno, r in enumerate(_lines(path), 1):
        missing = [k for k in ("prompt", "response", "gold") if k not in r]
        if missing:
            raise AnalysisError(f"{path}, line {lineno}: field '{missing[0]}' is missing "
                                "(a plain JSONL row has prompt, response, gold)")
        pid = str(r.get("id", r["prompt"]))
        sample = r.get("sample", samples.get(pid, 0))
        samples[pid] = int(sample) + 1
        rows.append({"model": model or r.get("model") or path.stem,
                     "dataset": r.get("dataset") or path.stem, "id": pid,
                     "level": r.get("level"), "sample": int(sample), "prompt": r["prompt"],
                     "response": r["response"], "answer": r.get("answer"),
                     "gold": r["gold"], "correct": r.get("correct"), "n_tokens": r.get("n_tokens"),
                     "grader": "given" if r.get("correct") is not None else None})
    df = _frame(rows, path)
    notes = _lacks(df, "the file")
    if "id" not in _first_row(path):
        notes.append("no 'id': a problem is known by its prompt text")
    return df, notes


def _lines(path: Path):
    from l2s_kit.io.jsonl import json_objects

    for _, row in json_objects(path, AnalysisError):
        yield row


def _frame(rows: list[dict], path: Path) -> pd.DataFrame:
    if not rows:
        raise AnalysisError(f"{path} holds no responses")
    df = pd.DataFrame(rows)
    df["n_tokens"] = pd.to_numeric(df["n_tokens"], errors="coerce").astype(float)
    df["correct"] = df["correct"].astype(object)
    return df


def _lacks(df: pd.DataFrame, who: str) -> list[str]:
    """One line per thing the format did not give (never guessed)."""
    notes = []
    if df["level"].isna().all():
        notes.append(f"{who} gives no difficulty level: views by level are views by dataset")
    if df["correct"].isna().any():
        many = int(df["sample"].max()) + 1 if len(df) else 1
        why = (f"the harness grades a problem, not each of its {many} samples"
               if many > 1 else "some rows carry no grade")
        notes.append(f"{who}: {why}: grade with the kit's graders (--grader)")
    return notes
