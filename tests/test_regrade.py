"""``l2s regrade``: saved responses graded again into a new file, the input byte-identical; the
answer taken after a closed <think> block by default; ``l2s eval --k``."""

from __future__ import annotations

import json

import pytest

from l2s_kit.cli import main
from l2s_kit.evaluate import FAMILY_SETTINGS, ResponsesError, evaluate, load_responses, load_rows


def _file(path, responses):
    rows = [{"model": "m", "dataset": "d", "id": i, "sample": 0, "prompt": "p", "response": text,
             "n_tokens": len(text.split()), "answer": None, "gold": gold, "correct": False,
             "grader": "grade"} for i, (text, gold) in enumerate(responses)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


RESPONSES = [("The answer is 1/2 .", "0.5"),
             ("<think>so \\boxed{3}. Wait, no.</think> So the answer is 4.", "4"),
             ("so \\boxed{2}", "2")]


def test_regrade_writes_new_grades_and_leaves_the_input_as_it_was(tmp_path, capsys):
    src = _file(tmp_path / "responses.jsonl", RESPONSES)
    before = src.read_bytes()
    assert main(["regrade", str(src), "--grader", "simple", "--out", str(tmp_path / "simple.jsonl"),
                 "--quiet"]) == 0
    simple = load_responses(tmp_path / "simple.jsonl")
    # "1/2" is not "0.5" to the simple grader; the answer after </think> is 4, not the boxed 3
    assert simple["correct"].tolist() == [False, True, True]
    assert simple["answer"].tolist() == ["1/2", "4", "2"]
    assert simple["answer_scope"].tolist() == ["whole", "after_think", "whole"]
    assert main(["regrade", str(src), "--grader", "math-verify", "--out",
                 str(tmp_path / "mv.jsonl"), "--quiet"]) == 0
    mv = load_responses(tmp_path / "mv.jsonl")
    assert mv["correct"].tolist() == [True, True, True]
    assert set(mv["grader"]) == {"math-verify (strict)"}
    assert "3 of 3 grades changed" in capsys.readouterr().out  # the input said all wrong
    assert main(["regrade", str(src), "--grader", "simple", "--whole-response", "--out",
                 str(tmp_path / "whole.jsonl"), "--quiet"]) == 0
    whole = load_responses(tmp_path / "whole.jsonl")
    assert whole["answer"].tolist()[1] == "3" and not whole["correct"].iloc[1]
    assert src.read_bytes() == before
    origin = json.loads((tmp_path / "mv.jsonl").read_text().splitlines()[0])["regraded_from"]
    assert origin["file"] == str(src) and len(origin["sha256"]) == 64


def test_regrade_with_the_same_grader_gives_the_same_grades(family, tmp_path):
    rows = family.rows("test", 2)
    out = tmp_path / "eval.jsonl"
    first = evaluate(family.system2, rows, out, settings=FAMILY_SETTINGS, progress=False)
    before = out.read_bytes()
    again = tmp_path / "again.jsonl"
    assert main(["regrade", str(out), "--grader", "simple", "--out", str(again), "--quiet"]) == 0
    second = load_responses(again)
    assert second["correct"].tolist() == first["correct"].tolist()
    assert second["answer"].tolist() == first["answer"].tolist()
    assert set(second["grader"]) == set(first["grader"])
    assert out.read_bytes() == before
    # a file graded by another grader is another run: eval refuses to resume into it
    other = tmp_path / "mv.jsonl"
    assert main(["regrade", str(out), "--grader", "math-verify", "--out", str(other),
                 "--quiet"]) == 0
    with pytest.raises(ResponsesError, match="graded by 'math-verify \\(strict\\)'"):
        evaluate(family.system2, rows, other, settings=FAMILY_SETTINGS, progress=False)


@pytest.mark.parametrize("args, message", [
    (["--out", "{src}"], "is the responses file"),
    (["--out", "{taken}"], "exists; pass --overwrite"),
    (["--out", "{new}", "--grader", "nope"], "invalid choice: 'nope'"),
])
def test_regrade_refuses_with_a_clear_message(tmp_path, capsys, args, message):
    src = _file(tmp_path / "responses.jsonl", RESPONSES)
    taken = tmp_path / "taken.jsonl"
    taken.write_text("mine\n")
    before = src.read_bytes()
    argv = [a.format(src=src, taken=taken, new=tmp_path / "new.jsonl") for a in args]
    try:
        rc = main(["regrade", str(src), "--quiet", *argv])
    except SystemExit as e:  # argparse's own refusal
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert src.read_bytes() == before and taken.read_text() == "mine\n"
    assert not (tmp_path / "new.jsonl").exists()


def test_regrade_names_a_missing_field(tmp_path, capsys):
    src = tmp_path / "r.jsonl"
    src.write_text(json.dumps({"model": "m", "gold": "1"}) + "\n")
    assert main(["regrade", str(src), "--out", str(tmp_path / "o.jsonl"), "--quiet"]) == 2
    assert "row 1: no field 'response'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_eval_reports_sampling_metrics_and_refuses_k_above_n(family, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in family.rows("test", 1)))
    out = tmp_path / "r.jsonl"
    base = ["eval", str(family.system2), "--data", str(data), "--out", str(out), "--quiet",
            "--max-new-tokens", str(FAMILY_SETTINGS.max_new_tokens)]
    assert main([*base, "--n", "2", "--temperature", "0.7", "--k", "4"]) == 2
    assert "--k 4 is larger than --n 2" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--n", "2", "--temperature", "0.7", "--k", "1,2"]) == 0
    text = capsys.readouterr().out
    assert "pass@2" in text and "maj@2" in text and "accuracy_lo" in text
    assert len(load_rows(data)) * 2 == len(load_responses(out))
