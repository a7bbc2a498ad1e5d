"""The built-in family: the task, its tokenizer, deterministic builds, and the L2S effect itself."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from l2s_kit.evaluate import extract_family
from l2s_kit.zoo import FamilySpec, build_family, save_tokenizer, task

MICRO = FamilySpec(hidden=32, layers=1, heads=2, kv_heads=1, mlp=64, base_steps=8, base_check=3,
                   base_cooldown=2, s2_steps=3, batch=4)


# ---- the task ---------------------------------------------------------------------------------

def test_problem_is_worked_left_to_right_mod_10():
    p = task.Problem(3, ("+5", "*2", "+7"))
    assert p.chain == [8, 6, 3]                      # 3+5=8, 8*2=16→6, 6+7=13→3
    assert p.answer == 3 and p.level == 3
    assert p.chain_text == "3 8 6 3"
    assert p.prompt == "Q 3 +5 *2 +7 _ _ _ _ A"
    assert task.direct(p) == "The answer is 3 ."
    assert task.worked(p) == "Let's compute : 3 8 6 3 . So the answer is 3 ."
    assert task.reflective(p) == (
        "Let's compute : 3 8 6 3 . Wait , let me double-check : 3 . Let me verify : 3 . "
        "To recap : 3 . Let me verify : 3 . So the answer is 3 .")
    assert task.reflective(p, 0) == (
        "Let's compute : 3 8 6 3 . Wait , let me double-check : 3 . So the answer is 3 .")


def test_generator_is_deterministic_and_splits_never_overlap():
    a, b = task.rows("test", 30, seed=4), task.rows("test", 30, seed=4)
    assert a == b and task.rows("test", 30, seed=5) != a
    test = {r["id"] for r in task.rows("test", 100)}
    val = {r["id"] for r in task.rows("validation", 100)}
    rng = random.Random(0)
    train = {f"chain-test-{task.sample(rng, 'train', lv).key.replace(' ', '')}"
             for lv in task.LEVELS for _ in range(2000)}
    assert not test & val and not train & test
    levels = pd.Series([r["level"] for r in task.rows("test", 100)]).value_counts().sort_index()
    assert list(levels.index) == [1, 2, 3, 4, 5] and (levels[2:] == 100).all()
    assert 20 <= levels[1] <= 50  # level 1 has only 170 problems in all, ~20% of them test


@pytest.mark.parametrize("text, answer", [
    ("The answer is 3 .", "3"),
    (" Let's compute : 1 2 . Wait , let me double-check : 2 . So the answer is 2 .", "2"),
    ("So the answer is 4 . To recap : 4 . So the answer is 5 .", "5"),
    ("Let's compute : 1 2 . Wait , let me double-check :", None),   # cut off: no final answer
    ("", None),
])
def test_extract(text, answer):
    assert extract_family(text) == answer


def test_tokenizer_loads_as_real_qwen2_tokenizers_do(tmp_path):
    """transformers loads every Qwen2 checkpoint's tokenizer as Qwen2Tokenizer (byte-level BPE
    with Qwen2's pre-tokenizer); the family's tokenizer must survive that with the same ids."""
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    p = task.Problem(9, ("*4", "+1", "*9", "+2", "*3"))
    text = f"{p.prompt} {task.reflective(p)}"
    ids = tok(text)["input_ids"]
    assert ids == task.encode(text)
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(task.encode(" 4 *3")) == ["Ġ", "4", "Ġ*", "3"]
    # every prompt has the same number of tokens: operations sit at fixed positions
    assert len({len(task.encode(r["prompt"])) for r in task.rows("validation", 20)}) == 1


# ---- builds -----------------------------------------------------------------------------------

def test_build_is_deterministic_cached_and_a_real_qwen2_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    a = build_family(tmp_path / "a", MICRO, progress=False)
    b = build_family(tmp_path / "b", MICRO, progress=False)
    assert a.manifest["weights_hash"] == b.manifest["weights_hash"]
    assert a.manifest["weights_hash"]["system1"] != a.manifest["weights_hash"]["system2"]
    assert a.root.name == b.root.name == a.manifest["family"]
    # cached: a second call trains nothing and returns the same folder
    stamp = (a.system2 / "model.safetensors").stat().st_mtime_ns
    again = build_family(tmp_path / "a", MICRO, progress=False)
    assert again.root == a.root and (a.system2 / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp left
    cfg = json.loads((a.system1 / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["architectures"] == ["Qwen2ForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(a.system2)
    names = set(model.state_dict())
    assert "model.layers.0.self_attn.q_proj.bias" in names and "model.norm.weight" in names
    from l2s_kit.io import Checkpoint, weights_hash
    assert weights_hash(Checkpoint(a.system2)) == a.manifest["weights_hash"]["system2"]


def test_system2_is_fine_tuned_from_system1(tmp_path):
    fam = build_family(tmp_path, MICRO, progress=False)
    from l2s_kit.io import Checkpoint

    s1, s2 = Checkpoint(fam.system1), Checkpoint(fam.system2)
    assert s1.names == s2.names
    w = "model.layers.0.mlp.up_proj.weight"
    d = (s2.read(w) - s1.read(w)).abs().max()
    assert 0 < d < s1.read(w).abs().max()  # moved, but from System 1's weights


def test_the_default_family_ships_with_the_package_and_is_what_build_family_gives():
    """The shipped checkpoints are the default spec's (a spec change without a rebuild fails
    here), their files hash to the manifest's weights hashes, and asking for the default family
    returns them without training."""
    from l2s_kit.io import Checkpoint, weights_hash
    from l2s_kit.zoo import DEFAULT, SHIPPED, shipped_family, spec_hash

    fam = shipped_family()
    assert fam is not None, f"no shipped family under {SHIPPED}: run scripts/ship_family.py"
    assert fam.root.name == fam.manifest["family"] == f"family-{spec_hash(DEFAULT)}"
    assert fam.manifest["spec"] == json.loads(json.dumps(DEFAULT.to_dict()))
    for which in ("system1", "system2"):
        assert weights_hash(Checkpoint(fam.root / which)) == fam.manifest["weights_hash"][which]
    assert build_family(progress=False).root == fam.root  # no root: the shipped one, no training
    assert shipped_family(FamilySpec(seed=DEFAULT.seed + 1)) is None
    assert [p.name for p in SHIPPED.iterdir()] == [fam.root.name]  # one family, no stale one


def test_statistics_of_the_shipped_family_are_never_cached_inside_the_package(monkeypatch, tmp_path):
    from l2s_kit.io.identity import cache_dir
    from l2s_kit.zoo import SHIPPED, shipped_family

    monkeypatch.delenv("L2S_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    fam = shipped_family()
    assert cache_dir(fam.system1).is_relative_to(tmp_path / ".cache" / "l2s_kit")
    assert not cache_dir(fam.system1).is_relative_to(SHIPPED)
    assert not cache_dir(tmp_path / "m").is_relative_to(tmp_path / "m")  # nor a user's folder


# ---- the family: what makes it worth having (the cached default family) -----------------------

@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """The study on the shipped default family, task arithmetic over the study's α grid."""
    from l2s_kit.merging.methods.settings import GRID
    from l2s_kit.study import run_study

    grid = [(m, p) for m, p in GRID if m == "task_arithmetic"]
    out = tmp_path_factory.mktemp("study")
    return run_study(out / "runs", out / "figures", n_per_level=60, grid=grid, progress=False)


@pytest.mark.slow
def test_system2_beats_system1_on_hard_levels_and_thinks_longer(study):
    lv = study.by_level.set_index(["model", "level"])
    for level in (3, 4, 5):
        assert lv.loc[("system2", level), "accuracy"] - lv.loc[("system1", level), "accuracy"] >= 50
    s2 = lv.loc["system2"]
    assert s2["mean_tokens"].is_monotonic_increasing and s2["mean_tokens"].iloc[-1] > s2["mean_tokens"].iloc[0]
    assert (s2["reflection_ratio"] >= 0.95).all()
    t = study.summary[study.summary["split"] == "test"].set_index("model")
    assert t.loc["system2", "mean_tokens"] >= 4 * t.loc["system1", "mean_tokens"]


@pytest.mark.slow
def test_a_merge_chosen_on_validation_is_shorter_at_equal_accuracy(study):
    s = study.summary
    chosen = s[(s["split"] == "test") & s["selected"]].set_index("model")
    assert len(chosen) == 1  # one method in this grid; chosen on the validation split
    m = chosen.iloc[0]
    assert m["length_change"] <= -30 and m["accuracy_change"] >= -3
    lv = study.by_level[study.by_level["model"] == chosen.index[0]].sort_values("level")
    assert lv["mean_tokens"].is_monotonic_increasing


@pytest.mark.slow
def test_too_close_to_system1_a_merge_answers_at_once(study):
    """The merge's other failure: too little of System 2 and it answers at once, as System 1
    does, with System 1's accuracy; the chosen merge works the chain and drops the checks."""
    t = study.summary[study.summary["split"] == "test"].set_index("model")
    s1 = t.loc["system1"]
    first = t.loc["task_arithmetic alpha=0.1"]
    assert first["mean_tokens"] == s1["mean_tokens"] and abs(first["accuracy"] - s1["accuracy"]) <= 10
    test = study.responses["test"]
    chosen = t[t["selected"]].index[0]
    rows = test[test["model"] == chosen]
    assert rows["response"].str.strip().str.startswith("Let's compute").mean() >= 0.95
    assert rows["reflective"].mean() <= 0.2


@pytest.mark.slow
def test_system2_responses_match_the_format_exactly(study):
    """Hand-checkable rows: System 2 works the chain, then the exact reflective text."""
    test = study.responses["test"]
    s2 = test[test["model"] == "system2"].head(40)
    for r in s2.itertuples():
        key = r.id.removeprefix("chain-test-")
        start = int(key[0])
        ops = tuple(key[i:i + 2] for i in range(1, len(key), 2))
        p = task.Problem(start, ops)
        assert r.response.strip() == task.reflective(p)
        assert r.n_tokens == len(task.encode(r.response)) + 1  # + the EOS token
        assert r.correct == (r.answer == str(p.answer)) and r.gold == str(p.answer)
    s1 = test[test["model"] == "system1"].head(40)
    assert all(r.strip().startswith("The answer is ") for r in s1["response"])
