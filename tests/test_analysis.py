"""Difficulty tables, frontiers, outside outputs and keyword highlighting, on hand-made tables and
on real outputs with reference grades."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from l2s_kit import analysis
from l2s_kit.analysis import AnalysisError, by_level, pareto_front, read_outputs, reflection


def test_read_outputs_takes_the_qwen_toolkit_layout_with_its_grades(shared_data):
    path = shared_data / "samples" / "math_cot_100.jsonl"
    df = read_outputs(path)
    assert len(df) == 800 and df["correct"].sum() == 728  # the toolkit's grades, as its README says
    assert df.groupby("level").size().to_dict() == {1: 88, 2: 128, 3: 192, 4: 192, 5: 200}
    first = json.loads(path.read_text().splitlines()[0])
    row = df.iloc[3]
    assert row["response"] == first["code"][3] and row["answer"] == first["pred"][3]
    assert row["n_words"] == len(first["code"][3].split()) and pd.isna(row["n_tokens"])
    assert analysis.length_column(df) == "n_words"
    assert set(df["model"]) == {"math_cot_100"}


def test_read_outputs_reads_l2s_responses_and_refuses_other_files(tmp_path):
    rows = [{"model": "m", "dataset": "d", "id": i, "level": lv, "sample": 0, "prompt": "q",
             "response": "wait, 4", "n_tokens": 3 + i, "answer": "4", "gold": "4",
             "correct": i % 2 == 0} for i, lv in enumerate([1, 1, 2])]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = read_outputs(f, model="renamed")
    assert list(df["n_tokens"]) == [3, 4, 5] and set(df["model"]) == {"renamed"}
    assert analysis.length_column(df) == "n_tokens"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answers": []}) + "\n")
    with pytest.raises(AnalysisError, match="bad.jsonl: not a sample file.*fields: question, answers"):
        read_outputs(bad)
    with pytest.raises(AnalysisError, match="does not exist"):
        read_outputs(tmp_path / "missing.jsonl")


def test_by_level_by_hand():
    df = pd.DataFrame({
        "model": ["a", "a", "a", "b"], "level": [1, 1, 2, 1],
        "response": ["Wait, 3", "3", "let me verify: 5. Wait", "x"],
        "n_tokens": [10, 20, 40, 5], "correct": [True, False, False, True]})
    t = by_level(df).set_index(["model", "level"])
    assert t.loc[("a", 1), "n"] == 2 and t.loc[("a", 1), "accuracy"] == 50
    assert t.loc[("a", 1), "mean_length"] == 15 and t.loc[("a", 1), "length_unit"] == "tokens"
    assert t.loc[("a", 1), "reflection_ratio"] == 0.5 and t.loc[("a", 2), "mean_keywords"] == 2
    assert t.loc[("a", 2), "false_reflection"] == 1.0  # reflective and wrong
    assert t.loc[("b", 1), "reflection_ratio"] == 0
    with pytest.raises(AnalysisError, match="no length column 'n_words'"):
        by_level(df, length="n_words")


def test_pareto_front_keeps_only_unbeaten_points():
    df = pd.DataFrame({"model": list("abcde"), "mean_tokens": [10, 20, 20, 30, 15],
                       "accuracy": [50, 90, 80, 90, 40]})
    assert list(pareto_front(df)["model"]) == ["a", "b"]  # c: same length, less; d, e: beaten


def test_highlight_marks_keywords_and_escapes_the_rest():
    out = reflection.highlight("Wait, <x> let me double check. await recap")
    assert out == ("<mark>Wait</mark>, &lt;x&gt; let me <mark>double check</mark>. await "
                   "<mark>recap</mark>")
    assert reflection.highlight("await", rule="published") == "a<mark>wait</mark>"
    df = pd.DataFrame({"model": ["m", "m"], "id": [1, 2], "level": [1, 1],
                       "response": ["no keyword", "Wait"], "correct": [True, False]})
    html = reflection.examples_html(df)
    assert "<mark>Wait</mark>" in html and "no keyword" not in html and "wrong" in html


def test_param_grid_is_each_methods_own_product():
    from l2s_kit.study.spec import param_grid

    got = param_grid({"task_arithmetic": {"alpha": [0.2, 0.5]},
                      "ties": {"k": [0.5, 0.8], "alpha": [1.0]}})
    assert got == [("task_arithmetic", {"alpha": 0.2}), ("task_arithmetic", {"alpha": 0.5}),
                   ("ties", {"k": 0.5, "alpha": 1.0}), ("ties", {"k": 0.8, "alpha": 1.0})]
    with pytest.raises(ValueError, match="task_arithmetic has no parameter k; it takes alpha"):
        param_grid({"task_arithmetic": {"k": [0.5]}})
    # a wrapping method's parameters are checked against each combination's inner merge
    with pytest.raises(ValueError, match="aim wrapping twin has no parameter k"):
        param_grid({"aim": {"inner": ["ties", "twin"], "k": [0.8]}})
    assert param_grid({"aim": {"inner": ["twin"], "lam": [0.3]}}) == [
        ("aim", {"inner": "twin", "lam": 0.3})]


def test_shortest_takes_fewest_tokens_and_breaks_ties_by_accuracy():
    from l2s_kit.analysis import shortest

    c = pd.DataFrame({"method": ["ta", "ta", "ta", "ties", "ties"],
                      "model": ["a", "b", "c", "d", "e"],
                      "mean_tokens": [300.0, 200.0, 200.0, 500.0, 400.0],
                      "accuracy": [0.9, 0.5, 0.7, 0.9, 0.8]})
    assert shortest(c)["model"].tolist() == ["c"]
    per = shortest(c, by="method")
    assert dict(zip(per["method"], per["model"])) == {"ta": "c", "ties": "e"}
