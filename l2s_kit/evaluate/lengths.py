"""Response lengths in tokens, by rule.

- ``"generated"`` (default): the number of generated token ids, as the backends count them
  (``n_tokens`` in responses.jsonl: up to and including the EOS or the token that completed a
  stop string). Exact, and free: nothing is tokenized again.
- ``"published"``: the rule of the published evaluation scripts, which re-tokenize the decoded
  response text: ``len(tokenizer.encode(response))`` with the tokenizer's defaults. It leaves out
  the EOS (decoded text skips special tokens) and can differ where decoding and re-encoding do not
  round-trip (merged byte pieces, normalized whitespace). Use it to compare with published numbers.
"""

from __future__ import annotations

import os

import pandas as pd

from l2s_kit.errors import L2SError

LENGTH_RULES = ("generated", "published")


class LengthError(L2SError, ValueError):
    """An unknown length rule, or one used without what it needs."""


def retokenized_length(text: str, tokenizer) -> int:
    """Tokens of ``text`` under the published rule: ``len(tokenizer.encode(text))``."""
    return len(tokenizer.encode(text))


def token_lengths(df: pd.DataFrame, rule: str = "generated", tokenizer=None,
                  text: str = "response") -> pd.Series:
    """Length of each response under ``rule`` (an int Series aligned with ``df``).

    ``"generated"`` reads ``n_tokens``; ``"published"`` re-tokenizes column ``text`` with
    ``tokenizer`` (an object, or a folder to load one from with ``AutoTokenizer``).
    """
    if rule == "generated":
        if "n_tokens" not in df.columns:
            raise LengthError("length rule 'generated' reads column 'n_tokens', which the "
                              f"responses lack (columns: {', '.join(map(str, df.columns))})")
        return df["n_tokens"].astype(int)
    if rule == "published":
        if tokenizer is None:
            raise LengthError("length rule 'published' re-tokenizes the responses: give the "
                              "model's tokenizer (tokenizer=... or its folder)")
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if text not in df.columns:
            raise LengthError(f"length rule 'published' needs the response text in column {text!r}")
        return pd.Series([retokenized_length(t, tokenizer) for t in df[text].fillna("")],
                         index=df.index, dtype=int)
    raise LengthError(f"unknown length rule {rule!r}; choose one of {LENGTH_RULES}")


def with_lengths(df: pd.DataFrame, rule: str = "generated", tokenizer=None,
                 text: str = "response") -> pd.DataFrame:
    """A copy of ``df`` whose ``n_tokens`` follow ``rule`` (recorded in a ``length_rule`` column),
    so that :func:`l2s_kit.evaluate.summarize` and ``table1`` report lengths by that rule."""
    return df.assign(n_tokens=token_lengths(df, rule, tokenizer, text), length_rule=rule)
