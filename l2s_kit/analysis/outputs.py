"""Responses written by other tools (the Qwen2.5-Math evaluation toolkit) or by l2s, read into
the responses DataFrame (one row per sample, :data:`l2s_kit.evaluate.COLUMNS`), with lengths in
tokens, words and characters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from l2s_kit.errors import L2SError
from l2s_kit.evaluate import COLUMNS, load_responses, parse_level


class AnalysisError(L2SError, ValueError):
    """Responses cannot give the analysis asked of them."""


def read_outputs(path: str | os.PathLike, model: str | None = None,
                 tokenizer=None) -> pd.DataFrame:
    """A responses table from ``path``: an l2s ``responses.jsonl``, or the output jsonl of the
    Qwen2.5-Math evaluation toolkit (one row per question with lists ``code`` and ``score`` of
    its samples, ``level`` like "Level 3").

    For toolkit files, ``model`` names the model (default: the file's stem) and ``correct`` is
    the toolkit's own grade. ``n_tokens`` is counted with ``tokenizer`` (a tokenizer or a local
    folder to load one from) when given, and left empty otherwise; ``n_words`` (whitespace-
    separated words) and ``n_chars`` are always added, so lengths can be compared without one.
    """
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"responses file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        first = json.loads(f.readline() or "{}")
    if "code" in first and "score" in first:
        df = _read_toolkit(path, model or path.stem)
    elif "response" in first:
        df = load_responses(path)
        if model is not None:
            df = df.assign(model=model)
    else:
        raise AnalysisError(f"{path}: rows have neither 'response' (an l2s responses file) nor "
                            f"'code' and 'score' (the Qwen2.5-Math toolkit's output); first row's "
                            f"fields: {', '.join(first)}")
    if tokenizer is not None:
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        df["n_tokens"] = [len(tokenizer(t, add_special_tokens=False)["input_ids"])
                          for t in df["response"]]
    df["level"] = df["level"].map(parse_level).astype("Int64")
    df["n_words"] = df["response"].str.split().str.len()
    df["n_chars"] = df["response"].str.len()
    return df.reindex(columns=[*COLUMNS, *[c for c in df.columns if c not in COLUMNS]])


def _read_toolkit(path: Path, model: str) -> pd.DataFrame:
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
