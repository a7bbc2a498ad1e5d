"""Reflection keywords on crafted strings (near-misses included) and on real model outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from l2s_kit.analysis.reflection import (
    annotate,
    is_reflective,
    keyword_counts,
    keyword_frequency,
    reflection_summary,
)


@pytest.mark.parametrize("text,n", [
    ("Wait, let me double-check: 3 + 4 = 7.", 2),
    ("Let me verify this. To recap, the answer is 5.", 2),
    ("We should double check and re-examine; let me just check.", 3),
    ("Reexamine the step. Let me   just verify.", 2),
    ("WAIT. wait", 2),
])
def test_keywords_counted_as_whole_words(text, n):
    assert sum(keyword_counts(text).values()) == n


@pytest.mark.parametrize("text", [
    "We await the result.", "The waiter brought 3 plates.", "Recapture the flag.",
    "He was waiting.", "Let me checkout the store.", "double-checker",
])
def test_near_misses_are_not_reflection(text):
    assert not is_reflective(text)


def test_published_rule_matches_substrings_without_let_me_verify():
    assert keyword_counts("We await.", "published")["wait"] == 1
    assert "let me verify" not in keyword_counts("x", "published")
    assert not is_reflective("Let me verify.", "published")
    assert is_reflective("Let me verify.")


def test_summary_on_a_hand_made_table():
    df = pd.DataFrame({
        "model": ["s1", "s1", "s2", "s2"],
        "response": ["The answer is 4.", "Wait, 5.", "Wait, let me verify: 4.", "Recap: 6."],
        "correct": [True, False, True, False],
    })
    s = reflection_summary(df, by=["model"]).set_index("model")
    assert s.loc["s1", "reflection_ratio"] == 0.5 and s.loc["s2", "reflection_ratio"] == 1.0
    assert s.loc["s2", "mean_keywords"] == 1.5
    assert s.loc["s1", "false_reflection"] == 0.5 and s.loc["s2", "false_reflection"] == 0.5
    assert s.loc["s1", "wrong_among_reflective"] == 1.0
    freq = keyword_frequency(df, by=["model"]).set_index(["model", "keyword"])["count"]
    assert freq[("s2", "wait")] == 1 and freq[("s2", "recap")] == 1 and freq[("s1", "wait")] == 1


def test_real_quick_thinking_outputs_are_nearly_never_reflective(shared_data):
    samples = shared_data / "samples" / "math_cot_100.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    df = pd.DataFrame([{"level": r["level"], "response": c, "correct": s}
                       for r in rows for c, s in zip(r["code"], r["score"])])
    assert len(df) == 800 and int(df["correct"].sum()) == 728
    a = annotate(df)
    assert int(a["reflective"].sum()) == 0  # a Qwen2.5-Math model, chain-of-thought, no "wait"
    assert int(annotate(df, rule="published")["reflective"].sum()) == 0
    by_level = reflection_summary(a, by=["level"])
    assert list(by_level["n"]) == [88, 128, 192, 192, 200]  # 11/16/24/24/25 problems x 8
