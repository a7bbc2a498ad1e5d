"""Responses written by the Qwen2.5-Math evaluation toolkit or by l2s, read into the responses
DataFrame (one row per sample, :data:`l2s_kit.evaluate.COLUMNS`); every format, the field's
harnesses included, is read through :func:`l2s_kit.analysis.samples.read_samples`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from l2s_kit.errors import L2SError
from l2s_kit.evaluate import load_responses


class AnalysisError(L2SError, ValueError):
    """Responses cannot give the analysis asked of them."""


def read_own(path: Path, model: str | None = None) -> pd.DataFrame:
    """An l2s ``responses.jsonl`` (``model`` renames its model)."""
    df = load_responses(path)
    return df.assign(model=model) if model is not None else df


def read_toolkit(path: Path, model: str | None = None) -> pd.DataFrame:
    """The Qwen2.5-Math evaluation toolkit's output: one row per question with lists ``code``
    and ``score`` of its samples (``score``: the toolkit's own grade), ``level`` like
    "Level 3"; ``model`` names the model (default: the file's stem)."""
    model = model or path.stem
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            codes, scores = r.get("code"), r.get("score")
            if not isinstance(codes, list) or not isinstance(scores, list) or \
                    len(codes) != len(scores):
                raise AnalysisError(f"{path}, line {lineno}: 'code' and 'score' must be lists of "
                                    "the same length (one per sample)")
            preds = r.get("pred") or [None] * len(codes)
            for j, (text, ok) in enumerate(zip(codes, scores)):
                rows.append({"model": model, "dataset": path.stem, "id": r.get("idx", lineno - 1),
                             "level": r.get("level"), "sample": j,
                             "prompt": r.get("question", ""), "response": text,
                             "n_tokens": None, "answer": preds[j] if j < len(preds) else None,
                             "gold": r.get("gt", r.get("answer")), "correct": bool(ok)})
    df = pd.DataFrame(rows)
    df["n_tokens"] = df["n_tokens"].astype(float)
    return df


def length_column(df: pd.DataFrame, length: str | None = None) -> str:
    """``length`` if given, else ``n_tokens`` when every row has one, else ``n_words``."""
    if length is not None:
        if length not in df.columns:
            raise AnalysisError(f"the responses have no length column {length!r}; "
                                f"columns: {', '.join(map(str, df.columns))}")
        return length
    if "n_tokens" in df.columns and df["n_tokens"].notna().all():
        return "n_tokens"
    if "n_words" in df.columns:
        return "n_words"
    raise AnalysisError("the responses have no token counts; read them with read_outputs(path, "
                        "tokenizer=...) to count tokens, or add an 'n_words' column")
