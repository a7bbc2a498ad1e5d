"""Evaluation: generation backend contracts, answer extraction and grading, resumable evaluate,
summaries and Table 1, and ``l2s eval``."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
import torch

import l2s_kit.evaluate.run as run_mod
from l2s_kit.analysis import format_table1, stats, summarize, table1
from l2s_kit.cli import main
from l2s_kit.evaluate import (
    GenerationError,
    GenerationSettings,
    ResponsesError,
    TransformersBackend,
    evaluate,
    extract_answer,
    grade,
    load_responses,
)
from l2s_kit.evaluate.backends import _SeededSampler
from l2s_kit.zoo.synthetic import WORDS

EOS = 1  # the synthetic tokenizer's <eos>
MAX_NEW = 16
# Prompts of 1 to 8 words from the synthetic vocabulary: different lengths, so left padding matters.
_rng = random.Random(0)
PROMPTS = [" ".join(_rng.choice(WORDS[3:]) for _ in range(_rng.randint(1, 8))) for _ in range(12)]


@pytest.fixture(scope="module")
def varied_model(tiny_pair, tmp_path_factory) -> Path:
    """The tiny System 2 checkpoint with its layer matrices scaled ×30.

    At the synthetic weights' scale a random model repeats its last input token forever; scaled up,
    greedy outputs vary from token to token and some end with EOS, which the tests need. The folder
    also gets an ``l2s_merge.json`` with a recipe hash, as ``l2s merge`` writes.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("eval") / "tiny-varied"
    model = AutoModelForCausalLM.from_pretrained(tiny_pair[1], dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name and p.ndim == 2:
                p.mul_(30.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_pair[1]).save_pretrained(out)
    (out / "l2s_merge.json").write_text(json.dumps({"recipe_hash": "recipe-abc"}))
    return out


@pytest.fixture(scope="module")
def backend(varied_model) -> TransformersBackend:
    return TransformersBackend(varied_model, progress=False)


@pytest.fixture(scope="module")
def reference_ids(backend) -> list[list[int]]:
    """Greedy ids of each prompt from a direct ``model.generate``, cut after the first EOS."""
    out = []
    for p in PROMPTS:
        enc = backend.tokenizer(p, return_tensors="pt")
        ids = backend.model.generate(**enc, max_new_tokens=MAX_NEW, do_sample=False,
                                     pad_token_id=0, eos_token_id=EOS)
        gen = ids[0, enc["input_ids"].shape[1]:].tolist()
        out.append(gen[:gen.index(EOS) + 1] if EOS in gen else gen)
    return out


def decode(backend, ids: list[int]) -> str:
    return backend.tokenizer.decode(ids, skip_special_tokens=True)


# -- backend -------------------------------------------------------------------------------------

def test_batched_greedy_equals_one_at_a_time(backend):
    settings = GenerationSettings(max_new_tokens=MAX_NEW, batch_size=5)
    batched = backend.generate(PROMPTS, settings)
    single = [backend.generate([p], settings)[0] for p in PROMPTS]
    assert [len(s) for s in batched] == [1] * len(PROMPTS)
    assert batched == single  # texts, token counts and finish reasons
    assert len({s[0].text for s in batched}) >= 8  # the outputs really differ between prompts


def test_n_tokens_counts_generated_ids(backend, reference_ids):
    got = backend.generate(PROMPTS, GenerationSettings(max_new_tokens=MAX_NEW, batch_size=4))
    for (g,), ids in zip(got, reference_ids):
        assert g.n_tokens == len(ids)
        assert g.text == decode(backend, ids)
        assert g.finish_reason == ("stop" if ids[-1] == EOS else "length")
    reasons = [g.finish_reason for (g,) in got]
    assert "stop" in reasons and "length" in reasons  # both endings are covered
    assert min(g.n_tokens for (g,) in got) < MAX_NEW


def _crafted_stop(backend, reference_ids) -> tuple[int, int, str]:
    """(prompt, k, stop): a two-token string from the middle of a greedy output, ending at
    token k, that does not occur earlier in that output."""
    for i, ids in enumerate(reference_ids):
        if len(ids) < MAX_NEW:
            continue
        for k in range(6, 11):
            stop = decode(backend, ids[k - 1:k + 1])
            before = decode(backend, ids[:k])
            if decode(backend, [ids[k]]) and stop not in before \
                    and decode(backend, ids[:k + 1]).endswith(stop):
                return i, k, stop
    raise AssertionError("no prompt gives a usable stop string")


def test_stop_string_cuts_text_and_tokens(backend, reference_ids):
    i, k, stop = _crafted_stop(backend, reference_ids)
    settings = GenerationSettings(max_new_tokens=MAX_NEW, stop=(stop,), batch_size=5)
    got = backend.generate(PROMPTS, settings)
    g = got[i][0]
    assert g.text == decode(backend, reference_ids[i][:k + 1])
    assert g.text.endswith(stop) and g.text.count(stop) == 1
    assert g.n_tokens == k + 1
    assert g.finish_reason == "stop"
    # every other prompt of the batch agrees with a naive search over its greedy ids
    for (g,), ids in zip(got, reference_ids):
        expect = (decode(backend, ids), len(ids), "stop" if ids[-1] == EOS else "length")
        for m in range(1, len(ids) + 1):
            text = decode(backend, ids[:m])
            if stop in text:
                expect = (text[:text.index(stop) + len(stop)], m, "stop")
                break
        assert (g.text, g.n_tokens, g.finish_reason) == expect


def test_stop_string_found_after_generation(backend, reference_ids):
    # the post-processing alone (no step recorded during generation) finds the same cut
    i, k, stop = _crafted_stop(backend, reference_ids)
    settings = GenerationSettings(max_new_tokens=MAX_NEW, stop=(stop,))
    g = backend._finish(reference_ids[i] + [0, 0], [EOS], (stop,), None, settings)
    assert (g.text, g.n_tokens, g.finish_reason) == (
        decode(backend, reference_ids[i][:k + 1]), k + 1, "stop")


def test_stop_string_ending_inside_a_token(backend, reference_ids):
    # cut after the first character of a multi-character token: the token is counted
    for i, ids in enumerate(reference_ids):
        k = next((k for k in range(len(ids)) if len(decode(backend, [ids[k]])) > 1), None)
        if k is None:
            continue
        word = decode(backend, [ids[k]])
        before = decode(backend, ids[:k])
        stop = before[-1:] + word[0] if before else word[0]
        if stop in before:
            continue
        g = backend.generate([PROMPTS[i]], GenerationSettings(max_new_tokens=MAX_NEW,
                                                              stop=(stop,)))[0][0]
        assert g.text == before + word[0]
        assert g.n_tokens == k + 1
        return
    pytest.fail("no output with a multi-character token to cut inside")


def test_special_token_stop_string_ends_like_eos(backend, reference_ids):
    # "<pad>" (id 0) is skipped by decoding, so as a stop string it must be matched by id
    got = backend.generate(PROMPTS, GenerationSettings(max_new_tokens=MAX_NEW, stop=("<pad>",)))
    cut = 0
    for (g,), ids in zip(got, reference_ids):
        k = next((k for k, t in enumerate(ids) if t in (0, EOS)), None)
        expect = ids if k is None else ids[:k + 1]
        cut += k is not None and ids[k] == 0
        assert (g.text, g.n_tokens) == (decode(backend, expect), len(expect))
    assert cut >= 1  # some greedy output does hold id 0 before any EOS


def test_sampling_repeats_with_its_seed(backend):
    def sample(seed, batch_size=4):
        return backend.generate(PROMPTS[:5], GenerationSettings(
            max_new_tokens=MAX_NEW, temperature=1.0, n=3, seed=seed, batch_size=batch_size))

    a = sample(1)
    assert [len(s) for s in a] == [3] * 5
    assert sample(1) == a
    assert sample(1, batch_size=1) == a  # a sample does not depend on its batch
    assert sample(2) != a
    assert any(len({g.text for g in s}) > 1 for s in a)  # the n samples of a prompt differ
    greedy = backend.generate(PROMPTS[:5], GenerationSettings(max_new_tokens=MAX_NEW))
    assert [s[0] for s in a] != [s[0] for s in greedy]


def test_seeded_sampler_draws_from_tempered_top_p_distribution():
    rows, temperature = 4000, 0.7
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0]).expand(rows, 4)
    probs = (logits[0] / temperature).softmax(-1)
    picks = _SeededSampler(list(range(rows)), temperature, 1.0)(None, logits).argmax(-1)
    freq = torch.bincount(picks, minlength=4) / rows
    assert torch.allclose(freq, probs, atol=0.03)
    # top_p = 0.8 keeps the two tokens that first reach 80 % of the mass (0.763 + 0.183)
    picks = _SeededSampler(list(range(rows)), temperature, 0.8)(None, logits).argmax(-1)
    freq = torch.bincount(picks, minlength=4) / rows
    kept = probs[:2] / probs[:2].sum()
    assert freq[2:].sum() == 0
    assert torch.allclose(freq[:2], kept, atol=0.03)


def test_model_generation_config_does_not_change_greedy(varied_model, backend):
    # real checkpoints ship repetition penalties and top-k in generation_config.json
    tweaked = TransformersBackend(varied_model, progress=False)
    tweaked.model.generation_config.repetition_penalty = 5.0
    tweaked.model.generation_config.no_repeat_ngram_size = 1
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    assert tweaked.generate(PROMPTS, settings) == backend.generate(PROMPTS, settings)


@pytest.mark.parametrize("kwargs, field", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"n": 2}, "n=2"), ({"stop": ("",)}, "stop"),
    ({"batch_size": 0}, "batch_size"),
])
def test_settings_are_validated(kwargs, field):
    with pytest.raises(GenerationError, match=field):
        GenerationSettings(**kwargs)


def test_settings_record_what_determines_outputs():
    s = GenerationSettings(max_new_tokens=8, stop=["x"], batch_size=7)
    assert s.to_dict() == {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "n": 1,
                           "seed": 0, "stop": ["x"]}
    assert s == GenerationSettings(max_new_tokens=8, stop=("x",), batch_size=1)


# -- extraction and grading ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (r"First \boxed{3}, then \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{\{1, 2\} \cup {3}}", r"\{1, 2\} \cup {3}"),
    (r"so \boxed{7} and finally \boxed{8", "7"),  # an unclosed box is skipped
    ("The answer is 42.", "42"),
    ("Thus the ANSWER is: $3.5$. Done.", "3.5"),
    ("the answer is 1\nthe answer is x + 1\nbye", "x + 1"),
    ("I think it's 12 or 13", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_last_number_fallback():
    assert extract_answer("we get 12, then 1,234.5 apples") is None
    assert extract_answer("we get 12, then 1,234.5 apples", fallback_last_number=True) == "1234.5"
    assert extract_answer("x is -3", fallback_last_number=True) == "-3"
    assert extract_answer("no digits", fallback_last_number=True) is None
    assert extract_answer(r"\boxed{5} and 6", fallback_last_number=True) == "5"


@pytest.mark.parametrize("answer, gold, ok", [
    ("5", "5.0", True), (" 7 ", "7", True), ("3", "4", False), ("$12$.", "12", True),
    ("025", 25, True), ("1,000", "1000", True), (r"\frac{1}{2}", r"\frac{1}{2}", True),
    (r"\frac{1}{2}", "0.5", False), (None, "3", False), ("inf", "infinity", False),
])
def test_grade(answer, gold, ok):
    assert grade(answer, gold) is ok


# -- evaluate ------------------------------------------------------------------------------------

ROWS = [{"id": f"q{k}", "prompt": PROMPTS[k], "gold": "0", "dataset": "toy",
         "level": k % 3 + 1 if k < 7 else None, "ignored": "x"} for k in range(10)]


class CountingBackend:
    """Wraps a backend and counts the prompts it is asked to generate for."""

    def __init__(self, inner):
        self.inner, self.name, self.prompts = inner, "counting", 0

    def generate(self, prompts, settings):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, settings)


SETTINGS = GenerationSettings(max_new_tokens=8, batch_size=3)


def test_evaluate_rows(varied_model, backend, tmp_path):
    out = tmp_path / "responses.jsonl"
    df = evaluate(varied_model, ROWS, out, backend=backend, settings=SETTINGS, progress=False)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == len(df) == 10
    first = lines[0]
    assert list(first) == run_mod.COLUMNS
    assert first["model"] == "tiny-varied" and first["recipe_hash"] == "recipe-abc"
    assert (first["dataset"], first["id"], first["level"], first["sample"]) == ("toy", "q0", 1, 0)
    assert first["generation"] == SETTINGS.to_dict()
    expect = backend.generate([ROWS[0]["prompt"]], SETTINGS)[0][0]
    assert (first["response"], first["n_tokens"]) == (expect.text, expect.n_tokens)
    assert first["answer"] is None and first["correct"] is False
    assert [r["level"] for r in lines] == [r["level"] for r in ROWS]
    assert df["id"].tolist() == [r["id"] for r in ROWS]


def test_evaluate_resumes_after_interruption(varied_model, backend, tmp_path, monkeypatch):
    full = tmp_path / "full.jsonl"
    evaluate(varied_model, ROWS, full, backend=backend, settings=SETTINGS, progress=False)

    out = tmp_path / "resumed.jsonl"
    counting = CountingBackend(backend)
    evaluate(varied_model, ROWS, out, backend=counting, settings=SETTINGS, progress=False)
    assert counting.prompts == 10
    lines = out.read_bytes().split(b"\n")
    out.write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][:len(lines[4]) // 2])

    counting.prompts = 0
    with pytest.warns(UserWarning, match="incomplete last line"):
        df = evaluate(varied_model, ROWS, out, backend=counting, settings=SETTINGS,
                      progress=False)
    assert counting.prompts == 6  # rows 5..10 only
    assert out.read_bytes() == full.read_bytes()
    assert len(df) == 10
    assert not df.duplicated(["model", "dataset", "id", "sample"]).any()

    # all done: nothing is generated, and no model is even loaded
    def no_backend(*args, **kwargs):
        raise AssertionError("a backend was built although nothing was left to generate")

    monkeypatch.setattr(run_mod, "TransformersBackend", no_backend)
    counting.prompts = 0
    df = evaluate(varied_model, ROWS, out, backend=counting, settings=SETTINGS, progress=False)
    df2 = evaluate(varied_model, ROWS, out, settings=SETTINGS, progress=False)
    assert counting.prompts == 0
    assert len(df) == len(df2) == 10 and out.read_bytes() == full.read_bytes()


def test_evaluate_resumes_missing_samples(backend, tmp_path):
    out = tmp_path / "sampled.jsonl"
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, n=3, batch_size=2)
    full = evaluate(None, ROWS[:4], tmp_path / "full.jsonl", backend=backend, settings=settings,
                    model_name="m", progress=False)
    evaluate(None, ROWS[:4], out, backend=backend, settings=settings, model_name="m",
             progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:7]))  # sample 0 of the third prompt only
    df = evaluate(None, ROWS[:4], out, backend=backend, settings=settings, model_name="m",
                  progress=False)
    assert len(df) == 12
    key = ["id", "sample"]
    pd.testing.assert_frame_equal(df.sort_values(key).reset_index(drop=True),
                                  full.sort_values(key).reset_index(drop=True))


def test_evaluate_refuses_other_settings(varied_model, backend, tmp_path):
    out = tmp_path / "r.jsonl"
    evaluate(varied_model, ROWS[:2], out, backend=backend, settings=SETTINGS, progress=False)
    other = GenerationSettings(max_new_tokens=9)
    with pytest.raises(ResponsesError, match="another output path") as ei:
        evaluate(varied_model, ROWS[:2], out, backend=backend, settings=other, progress=False)
    assert str(out) in str(ei.value)
    # another model may share the file with its own settings
    df = evaluate(varied_model, ROWS[:2], out, backend=backend, settings=other,
                  model_name="other", progress=False)
    assert len(df) == 2 and len(load_responses(out)) == 4


def test_evaluate_rejects_bad_rows(backend, tmp_path):
    with pytest.raises(ResponsesError, match="row 1 .*'gold'"):
        evaluate(None, [ROWS[0], {"id": 1, "prompt": "Q"}], tmp_path / "x.jsonl",
                 backend=backend, model_name="m", progress=False)
    with pytest.raises(ResponsesError, match="id 'q0' of dataset 'toy' twice"):
        evaluate(None, [ROWS[0], ROWS[0]], tmp_path / "x.jsonl", backend=backend,
                 model_name="m", progress=False)


# -- summaries -------------------------------------------------------------------------------------

def _responses() -> pd.DataFrame:
    rows = []
    spec = {  # model, dataset: (correct, n_tokens, level)
        ("S2", "a"): ([1, 1, 0, 1], [100, 200, 300, 400], [1, 1, 2, 2]),
        ("S2", "b"): ([1, 0], [50, 150], [None, None]),
        ("M", "a"): ([1, 0, 0, 1], [100, 100, 100, 100], [1, 1, 2, 2]),
        ("M", "b"): ([1, 1], [60, 40], [None, None]),
    }
    for (model, dataset), (correct, tokens, levels) in spec.items():
        for k, (c, t, lv) in enumerate(zip(correct, tokens, levels)):
            rows.append({"model": model, "dataset": dataset, "id": k, "level": lv,
                         "correct": bool(c), "n_tokens": t})
    return pd.DataFrame(rows)


def test_summarize_by_dataset_against_reference():
    s = summarize(_responses(), reference="S2").set_index(["model", "dataset"])
    assert s.loc[("S2", "a"), ["n", "accuracy", "mean_tokens"]].tolist() == [4, 75.0, 250.0]
    assert s.loc[("M", "b"), ["n", "accuracy", "mean_tokens"]].tolist() == [2, 100.0, 50.0]
    assert s.loc[("M", "a"), "length_change"] == pytest.approx(-60.0)
    assert s.loc[("M", "b"), "length_change"] == pytest.approx(-50.0)
    assert s.loc[("M", "a"), "accuracy_change"] == pytest.approx(-25.0)
    assert s.loc[("M", "b"), "accuracy_change"] == pytest.approx(50.0)
    assert s.loc["S2", "length_change"].tolist() == [0.0, 0.0]
    assert "length_change" not in summarize(_responses()).columns


def test_summarize_by_level():
    s = summarize(_responses(), by=("model", "dataset", "level"), reference="S2")
    assert list(s.columns[:3]) == ["model", "dataset", "level"]
    m = s[s["model"] == "M"].set_index(["dataset", "level"], drop=False)
    assert len(s) == 6  # levels 1, 2 and "none" (dataset b) for each model
    assert m.loc[("a", 1.0), "length_change"] == pytest.approx((100 / 150 - 1) * 100)
    assert m.loc[("a", 2.0), "length_change"] == pytest.approx((100 / 350 - 1) * 100)
    nolevel = m[m["level"].isna()].iloc[0]
    assert (nolevel["n"], nolevel["accuracy"], nolevel["length_change"]) == (2, 100.0, -50.0)


def test_summarize_errors():
    with pytest.raises(ValueError, match="'X'.*models: S2, M"):
        summarize(_responses(), reference="X")
    with pytest.raises(ValueError, match="'n_tokens'"):
        summarize(_responses().drop(columns="n_tokens"))


def test_table1():
    t = table1(_responses(), reference="S2")
    assert list(t.columns) == ["a", "b", "Avg.", "ratio", "ratio (pooled)"]
    assert list(t.index) == [("S2", "accuracy"), ("S2", "tokens"), ("M", "accuracy"),
                             ("M", "tokens")]
    assert t.loc[("S2", "accuracy")].tolist()[:3] == [75.0, 50.0, 62.5]
    assert t.loc[("S2", "tokens")].tolist() == [250.0, 100.0, 175.0, 0.0, 0.0]
    assert t.loc[("M", "accuracy")].tolist()[:3] == [50.0, 100.0, 75.0]
    # the paper's ratio: the mean of −60% and −50%; pooled: 150 tokens against 350
    assert t.loc[("M", "tokens")].tolist() == [100.0, 50.0, 75.0, pytest.approx(-55.0),
                                               pytest.approx((150 / 350 - 1) * 100)]
    assert math.isnan(t.loc[("M", "accuracy"), "ratio"])
    text = format_table1(t)
    assert "| S2 | accuracy (%) | 75.0 | 50.0 | 62.5 |  |  |" in text
    assert "|  | tokens | 100 | 50 | 75 | -55.0% | -57.1% |" in text
    only_b = table1(_responses(), datasets=["b"])
    assert only_b.loc[("M", "tokens")].tolist()[:2] == [50.0, 50.0]
    assert only_b["ratio"].isna().all()


# -- command line -----------------------------------------------------------------------------------

def test_cli_eval(varied_model, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    out = tmp_path / "runs" / "responses.jsonl"
    rc = main(["eval", str(varied_model), "--data", str(data), "--out", str(out),
               "--max-new-tokens", "6", "--batch-size", "2", "--model-name", "tv", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["q0", "q1", "q2"]
    assert {r["model"] for r in lines} == {"tv"}
    assert all(r["n_tokens"] <= 6 for r in lines)
    mean = sum(r["n_tokens"] for r in lines) / 3
    table = captured.out.split("\n\n")[0].splitlines()
    assert table[0].split() == ["model", "dataset", "n", "accuracy", "accuracy_lo", "accuracy_hi",
                                "mean_tokens", "tokens_lo", "tokens_hi", "truncation_rate",
                                "think_closure_rate", "after_answer_share"]
    row = table[1].split()
    assert row[:4] == ["tv", "toy", "3", "0.0"] and row[6] == f"{round(mean, 2):g}"
    lo, hi = stats.wilson(0, 3)
    assert [float(row[4]), float(row[5])] == pytest.approx([round(lo, 2), round(hi, 2)])
    assert "level" in captured.out  # the rows have levels
    assert str(out) in captured.out


def test_cli_eval_bad_data(varied_model, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"id": 2, "prompt": "Q"}) + "\n")
    rc = main(["eval", str(varied_model), "--data", str(data), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(data) in err and "line 2" in err and "'gold'" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_evaluate_refuses_a_model_name_merged_by_another_recipe(backend, tmp_path):
    out = tmp_path / "r.jsonl"
    evaluate(None, ROWS[:2], out, backend=backend, settings=SETTINGS, model_name="merge",
             recipe_hash="aaaa", progress=False)
    with pytest.raises(ResponsesError, match="merged by another recipe") as ei:
        evaluate(None, ROWS[:2], out, backend=backend, settings=SETTINGS, model_name="merge",
                 recipe_hash="bbbb", progress=False)
    assert str(out) in str(ei.value) and "aaaa" in str(ei.value)
    # the same recipe resumes: nothing is generated again
    df = evaluate(None, ROWS[:2], out, backend=backend, settings=SETTINGS, model_name="merge",
                  recipe_hash="aaaa", progress=False)
    assert list(df["recipe_hash"]) == ["aaaa", "aaaa"] and len(load_responses(out)) == 2


def test_the_same_weights_under_a_recipe_spelled_otherwise_resume(backend, tmp_path):
    """A merge's recipe names its inputs by path: the same merge run from another folder has
    another recipe hash but the same weights, and its responses are reused, not refused."""
    out = tmp_path / "r.jsonl"
    evaluate(None, ROWS[:2], out, backend=backend, settings=SETTINGS, model_name="merge",
             recipe_hash="aaaa", weights_hash="w" * 64, progress=False)
    df = evaluate(None, ROWS[:2], out, backend=backend, settings=SETTINGS, model_name="merge",
                  recipe_hash="bbbb", weights_hash="w" * 64, progress=False)
    assert len(df) == 2 and len(load_responses(out)) == 2  # nothing generated again
    with pytest.raises(ResponsesError, match="other weights"):
        evaluate(None, ROWS[:2], out, backend=backend, settings=SETTINGS, model_name="merge",
                 recipe_hash="bbbb", weights_hash="v" * 64, progress=False)


@pytest.mark.parametrize("gold", [None, "", "  ", [], ["3", ""], float("nan"), True, {"a": 1}])
def test_a_row_without_a_gradable_gold_is_refused_naming_its_line(tmp_path, gold):
    from l2s_kit.errors import L2SError
    from l2s_kit.evaluate.run import load_rows

    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"id": 1, "prompt": "1+1", "gold": "2"}) + "\n"
                 + json.dumps({"id": 2, "prompt": "2+2", "gold": gold}) + "\n")
    with pytest.raises(L2SError, match=r"rows.jsonl, line 2: field 'gold' must be the answer"):
        load_rows(f)


def test_golds_that_can_be_graded_are_taken(tmp_path):
    from l2s_kit.evaluate.run import load_rows

    f = tmp_path / "rows.jsonl"
    golds = ["2", 4, 0.5, ["3", "4"], "\\frac{1}{2}"]
    f.write_text("".join(json.dumps({"id": i, "prompt": "q", "gold": g}) + "\n"
                         for i, g in enumerate(golds)))
    assert [r["gold"] for r in load_rows(f)] == golds


def test_levels_are_one_kind_and_digit_strings_are_numbers(tmp_path):
    from l2s_kit.errors import L2SError
    from l2s_kit.evaluate.run import load_rows

    f = tmp_path / "rows.jsonl"
    f.write_text("".join(json.dumps({"id": i, "prompt": "q", "gold": "1", "level": lv}) + "\n"
                         for i, lv in enumerate([1, "1", " 2", None])))
    assert [r["level"] for r in load_rows(f)] == [1, 1, 2, None]
    f.write_text("".join(json.dumps({"id": i, "prompt": "q", "gold": "1", "level": lv}) + "\n"
                         for i, lv in enumerate([1, "hard"])))
    with pytest.raises(L2SError, match=r"levels mix numbers and names \(row 1: 1, row 2: 'hard'\)"):
        load_rows(f)
    f.write_text(json.dumps({"id": 0, "prompt": "q", "gold": "1", "level": 1.5}) + "\n")
    with pytest.raises(L2SError, match="row 1: field 'level' must be a whole number or a name"):
        load_rows(f)
