"""Response lengths: generated ids by default, the published re-tokenization rule by name."""

from __future__ import annotations

import pandas as pd
import pytest

from l2s_kit.analysis import summarize
from l2s_kit.evaluate.lengths import LengthError, token_lengths, with_lengths
from l2s_kit.zoo.synthetic import save_word_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    save_word_tokenizer(path, 64)  # word-level: one token per word of l2s_kit.zoo.synthetic.WORDS
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_generated_and_published_lengths(tokenizer, tokenizer_dir):
    df = pd.DataFrame({"model": ["m", "m"], "dataset": ["d", "d"], "correct": [True, False],
                       # generated ids: 4 words + EOS, and 2 words cut by the token limit
                       "response": ["Wait let me double-check", "So the"], "n_tokens": [5, 2]})
    assert token_lengths(df).tolist() == [5, 2]
    assert token_lengths(df, "published", tokenizer).tolist() == [4, 2]  # no EOS in the text
    assert token_lengths(df, "published", tokenizer_dir).tolist() == [4, 2]  # a folder works too
    out = with_lengths(df, "published", tokenizer)
    assert out["length_rule"].tolist() == ["published"] * 2
    assert summarize(out)["mean_tokens"].tolist() == [3.0]
    assert summarize(df)["mean_tokens"].tolist() == [3.5]
    assert df["n_tokens"].tolist() == [5, 2]  # the input is not changed


def test_length_rule_errors():
    df = pd.DataFrame({"response": ["a"]})
    with pytest.raises(LengthError, match="'n_tokens'"):
        token_lengths(df)
    with pytest.raises(LengthError, match="give the model's tokenizer"):
        token_lengths(df, "published")
    with pytest.raises(LengthError, match="unknown length rule 'chars'"):
        token_lengths(df, "chars")
