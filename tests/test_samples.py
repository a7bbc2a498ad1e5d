"""The field's sample files as inputs: files written by lm-evaluation-harness 0.4.13 and lighteval
0.13.0 on the shipped family (tests/data/harness, see its README) read into the responses table,
and `l2s analyze` on them giving the numbers the kit gives on its own responses of the same
problems."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from l2s_kit.analysis.analyze import analyze
from l2s_kit.analysis.outputs import AnalysisError
from l2s_kit.analysis.samples import read_samples, sniff
from l2s_kit.cli import main

HARNESS = Path(__file__).parent / "data" / "harness"
MODELS = ("family-s1", "family-s2", "family-ta05")
KEPT = [json.loads(line) for line in open(HARNESS / "rows.jsonl")]


def lm_eval(model: str) -> Path:
    return next((HARNESS / "lm-eval" / model).glob("samples_*.jsonl"))


def lighteval(model: str) -> Path:
    return next((HARNESS / "lighteval" / "details" / model).glob("*/details_*.parquet"))


def test_lm_eval_samples_are_read_with_the_harness_grade_and_the_problem_ids():
    df = read_samples(lm_eval("family-s1"))
    assert sniff(lm_eval("family-s1")) == "lm-eval"
    assert len(df) == 15 and set(df["model"]) == {"family-s1"}  # named by results_*.json
    assert set(df["dataset"]) == {"l2s_family"}
    assert sorted(df["id"]) == sorted(r["id"] for r in KEPT)  # the dataset's own ids
    assert sorted(df["level"].tolist()) == sorted(r["level"] for r in KEPT)
    assert set(df["grader"]) == {"lm-eval:exact_match[strict-match]"}
    raw = [json.loads(line) for line in open(lm_eval("family-s1"))]
    by_id = {r["doc"]["id"]: r for r in raw}
    for row in df.itertuples():
        r = by_id[row.id]
        assert row.correct == (r["exact_match"] == 1.0)
        assert row.response == r["resps"][0][0] and row.gold == r["target"]
        assert row.answer == (None if r["filtered_resps"][0] == "[invalid]"
                              else r["filtered_resps"][0])
    # System 1 of the family answers directly: some right, most wrong, on these 15
    assert 0 < df["correct"].sum() < 15
    assert df["n_tokens"].isna().all() and (df["n_words"] > 0).all()
    assert any("no token counts" in n for n in df.attrs["notes"])


def test_lighteval_details_are_read_and_agree_with_lm_eval_on_every_grade():
    for m in MODELS:
        le, lm = read_samples(lighteval(m)), read_samples(lm_eval(m))
        assert sniff(lighteval(m)) == "lighteval"
        assert set(le["model"]) == {m} and set(le["dataset"]) == {"l2s_family"}
        assert set(le["grader"]) == {"lighteval:answer_match"}
        a = le.set_index("id").sort_index()
        b = lm.set_index("id").sort_index()
        assert list(a.index) == list(b.index)
        assert (a["correct"] == b["correct"]).all()
        assert (a["level"] == b["level"]).all() and (a["gold"] == b["gold"]).all()
        assert (a["response"].str.strip() == b["response"].str.strip()).all()


@pytest.fixture(scope="module")
def kit_responses(family, tmp_path_factory):
    """The kit's own responses of the same 15 problems, by the same three models."""
    tmp = tmp_path_factory.mktemp("kit")
    rows = tmp / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in KEPT))
    merge = tmp / "family-ta05"
    assert main(["merge", "--method", "task_arithmetic", "--base", str(family.system1),
                 "--model", str(family.system2), "--param", "alpha=0.5", "--out", str(merge),
                 "--quiet"]) == 0
    files = []
    for name, folder in zip(MODELS, (family.system1, family.system2, merge)):
        out = tmp / f"{name}.jsonl"
        assert main(["eval", str(folder), "--data", str(rows), "--out", str(out),
                     "--model-name", name, "--max-new-tokens", "96", "--quiet"]) == 0
        files.append(out)
    return files, family.system2


COMPARED = ["n", "accuracy", "accuracy_lo", "accuracy_hi", "mean_tokens", "tokens_lo",
            "tokens_hi", "length_change", "length_change_lo", "length_change_hi",
            "accuracy_change", "mcnemar_p", "reflection_ratio", "after_answer_share"]


def test_analyze_gives_the_kit_s_numbers_from_either_harness(kit_responses, tmp_path):
    """Accuracy, length (the responses re-tokenized: the published rule), intervals and the
    paired tests against System 2 are the same from lm-eval's files, lighteval's files and the
    kit's own responses of the same problems."""
    kit_files, tokenizer = kit_responses
    roles = dict(system1="family-s1", system2="family-s2", tokenizer=tokenizer)
    kit = analyze(kit_files, **roles, progress=False).summary.set_index("model")
    lm = analyze([lm_eval(m) for m in MODELS], tmp_path / "lm", **roles, progress=False)
    le = analyze([lighteval(m) for m in MODELS], **roles, progress=False).summary.set_index("model")
    got = lm.summary.set_index("model")
    assert list(got.index) == ["system1", "system2", "family-ta05"]
    pd.testing.assert_frame_equal(got[COMPARED], kit[COMPARED])
    pd.testing.assert_frame_equal(le[COMPARED], kit[COMPARED])
    assert got.loc["system2", "accuracy"] == 100.0
    assert got.loc["family-ta05", "length_change"] < -40  # the merge is shorter
    # what a harness does not record is not measured, never 0
    assert math.isnan(got.loc["system2", "truncation_rate"])
    assert kit.loc["system2", "truncation_rate"] == 0
    report = (tmp_path / "lm" / "report.md").read_text()
    assert "| system1 | accuracy (%) |" in report and "System 2 is family-s2" in report
    assert {"summary.csv", "by_level.csv", "accuracy_vs_length.html", "report.md"} <= {
        p.name for p in (tmp_path / "lm").iterdir()}


def test_the_kit_s_grader_beside_the_harness_s_with_their_agreement(tmp_path):
    rows = [{"id": "a", "prompt": "Q", "response": "so the answer is 4", "gold": "4",
             "correct": True, "level": 1},
            {"id": "b", "prompt": "Q", "response": "the answer is 5", "gold": "5.0",
             "correct": False, "level": 2},  # a harness's string match misses 5 = 5.0
            {"id": "c", "prompt": "Q", "response": "I do not know", "gold": "1",
             "correct": False, "level": 2}]
    f = tmp_path / "vllm_out.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = analyze([f"mine={f}"], tmp_path / "out", grader="simple", progress=False)
    assert a.responses["correct"].tolist() == [True, True, False]
    assert a.agreement.to_dict("records") == [
        {"model": "mine", "n": 3, "agreement": pytest.approx(200 / 3), "disagree": 1}]
    differ = pd.read_csv(tmp_path / "out" / "disagreements.csv")
    assert differ["id"].tolist() == ["b"] and differ["harness_correct"].tolist() == [False]


def test_a_plain_jsonl_names_what_it_lacks(tmp_path):
    f = tmp_path / "batch.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"p{i % 2}", "response": "the answer is 1",
                                     "gold": "1"}) + "\n" for i in range(4)))
    df = read_samples(f)
    assert df["sample"].tolist() == [0, 0, 1, 1]  # samples of a prompt counted in order
    notes = " ".join(df.attrs["notes"])
    assert "no difficulty level" in notes and "no 'id'" in notes and "grade" in notes
    with pytest.raises(AnalysisError, match="carry no grade of their own"):
        analyze([f], progress=False)


def test_shared_outputs_give_pass_at_k_and_maj_at_k_with_intervals(shared_data):
    """The shared real outputs (8 samples per problem): pass@1..8 and maj@8 as a naive count
    gives them, each with its bootstrap interval."""
    path = shared_data / "samples" / "math_cot_100.jsonl"
    a = analyze([path], ks=[1, 2, 4, 8], progress=False)
    s = a.summary.iloc[0]
    raw = [json.loads(line) for line in open(path)]
    assert s["pass@1"] == pytest.approx(100 * sum(sum(r["score"]) / 8 for r in raw) / len(raw))
    assert s["pass@8"] == pytest.approx(100 * sum(any(r["score"]) for r in raw) / len(raw))
    for k in ("pass@1", "pass@8", "maj@8"):
        assert s[f"{k}_lo"] <= s[k] <= s[f"{k}_hi"] and s[f"{k}_hi"] - s[f"{k}_lo"] > 1


@pytest.mark.parametrize("args, message", [
    (["nothing.jsonl"], "does not exist"),
    ([str(HARNESS / "README.md")], "not JSON lines"),
    ([str(HARNESS / "rows.jsonl")], "not a sample file the kit reads"),
    ([str(HARNESS / "lm-eval" / "family-s1" / "x")], "does not exist"),
])
def test_files_the_kit_cannot_read_are_named_in_one_line(args, message, tmp_path, capsys):
    assert main(["analyze", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_a_system2_that_is_not_among_the_models_is_named(tmp_path, capsys):
    assert main(["analyze", str(lm_eval("family-s1")), "--system2", "family-s9",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--system2 'family-s9' is not a model of the files" in capsys.readouterr().err
