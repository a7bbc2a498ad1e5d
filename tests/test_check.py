"""``l2s check``: every difference between a pair, with a verdict, on tiny pairs with byte-level BPE
tokenizers (the family's) made to differ in each way the paper's users and mergekit's met."""

from __future__ import annotations

import json
import shutil

import pytest

from l2s_kit.cli import main
from l2s_kit.merging.compat import check_pair
from l2s_kit.zoo import make_think_pair, save_tokenizer
from l2s_kit.zoo.synthetic import make_pair


@pytest.fixture
def pair(tmp_path):
    base, model = make_pair(tmp_path / "p", "tiny", seed=5, tokenizer=False)
    for f in (base, model):
        save_tokenizer(f)
    return base, model


def edit_json(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def rows(table, item):
    return table[table["item"] == item]


def test_an_identical_pair_has_no_differences(pair, capsys):
    assert check_pair(*pair).empty
    assert main(["check", str(pair[0]), str(pair[1])]) == 0
    assert "0 differences: 0 block the merge" in capsys.readouterr().out


def test_config_keys_that_govern_generation_are_named_with_where_the_merge_takes_them(pair):
    base, model = pair
    edit_json(base / "config.json", lambda d: d.update(max_position_embeddings=4096,
                                                       initializer_range=0.01))
    edit_json(model / "config.json", lambda d: d.update(max_position_embeddings=131072,
                                                        rope_theta=1e6, sliding_window=4096,
                                                        initializer_range=0.03))
    t = check_pair(base, model)
    r = rows(t, "max_position_embeddings").iloc[0]
    assert (r.base_value, r.model_value, r.verdict) == ("4096", "131072", "takes")
    assert f"from model ({model})" in r.note  # generation: System 2's by default
    assert "context length, rope and sliding window are one choice" in r.note
    assert f"takes the value of base ({base})" in rows(t, "initializer_range").iloc[0].note
    assert set(t["item"]) >= {"rope_theta", "sliding_window"}
    # the merge takes them so, and its card lists every choice
    import l2s_kit

    recipe = {"merge_method": "task_arithmetic", "base_model": str(base),
              "models": [{"model": str(model)}]}
    out = l2s_kit.merge(recipe, base.parent / "merged", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["max_position_embeddings"], cfg["rope_theta"], cfg["initializer_range"]) == \
        (131072, 1e6, 0.01)  # generation keys from System 2, the rest from System 1
    card = (out / "README.md").read_text()
    assert "config.json max_position_embeddings: 131072 from System 2 (the first model) " \
           "(System 1 has 4096)" in card
    assert "config.json initializer_range differs (base 0.01, model 0.03)" in card
    # overridable; the context keys as one choice: the length and its rope from one side
    out = l2s_kit.merge({**recipe, "config_keys": {"max_position_embeddings": "base"}},
                        base.parent / "merged-2", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    base_cfg = json.loads((base / "config.json").read_text())
    assert (cfg["max_position_embeddings"], cfg.get("rope_theta")) == (4096, base_cfg.get("rope_theta"))
    assert cfg.get("sliding_window") == base_cfg.get("sliding_window")
    with pytest.raises(ValueError, match="one choice"):
        l2s_kit.load_recipe({**recipe, "config_keys": {"max_position_embeddings": "base",
                                                       "rope_theta": "model"}})
    # the paper's presets keep the paper's choice (System 1's), with a note saying so
    preset = l2s_kit.load_recipe({"preset": "ta-7b", "base_model": str(base),
                                  "models": [{"model": str(model)}]})
    assert preset.tokenizer_source == "base"
    assert set(preset.config_keys.values()) == {"base"}
    assert any("keeps the paper's choice" in n for n in preset.notes)
    out = l2s_kit.merge(preset, base.parent / "merged-3", progress=False)
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 4096


def test_different_tokens_at_the_same_id_block(pair, capsys):
    base, model = pair

    def swap(d):
        vocab = d["model"]["vocab"]
        a, b = sorted(vocab, key=vocab.get)[40:42]
        vocab[a], vocab[b] = vocab[b], vocab[a]

    edit_json(model / "tokenizer.json", swap)
    t = check_pair(base, model)
    r = rows(t, "tokens at the same id").iloc[0]
    assert r.verdict == "blocks" and r.base_value == "2 differ"
    assert main(["check", str(base), str(model)]) == 1
    assert "1 block the merge" in capsys.readouterr().out
    # and l2s merge refuses what l2s check says blocks, unless forced
    out = base.parent / "merged"
    argv = ["merge", "--method", "task_arithmetic", "--base", str(base), "--model", str(model),
            "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "l2s check finds what blocks this merge: check (blocks): tokenizer tokens at the same " \
        "id differs" in err and "--force" in err
    assert not out.exists()
    assert main([*argv, "--force"]) == 0
    assert "check (blocks): tokenizer tokens at the same id" in (out / "README.md").read_text()


def test_special_tokens_chat_template_and_generation_config(pair):
    base, model = pair

    def add(content):
        def f(d):
            top = max(a["id"] for a in d["added_tokens"])
            d["added_tokens"].append({"id": top + 1, "content": content, "single_word": False,
                                      "lstrip": False, "rstrip": False, "normalized": False,
                                      "special": True})
        return f

    edit_json(base / "tokenizer.json", add("<|box_start|>"))
    edit_json(model / "tokenizer.json", add("<think>"))
    edit_json(model / "tokenizer_config.json",
              lambda d: d.update(chat_template="{{ messages[0]['content'] }}"))
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": 7}))
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": 3}))
    t = check_pair(base, model)
    r = rows(t, "special tokens at the same id").iloc[0]
    assert r.verdict == "takes" and "'<|box_start|>' / '<think>'" in r.model_value
    ct = rows(t, "chat_template").iloc[0]
    assert "missing in base" in ct.note and ct.verdict == "takes"
    g = t[(t["area"] == "generation_config") & (t["item"] == "eos_token_id")].iloc[0]
    assert (g.base_value, g.model_value) == ("3", "7")
    assert not (t["verdict"] == "blocks").any()
    assert f"takes the one of model ({model})" in rows(t, "chat_template").iloc[0].note
    t2 = check_pair(base, model, tokenizer_source="base")  # as the paper's presets do
    assert f"takes the one of base ({base})" in rows(t2, "chat_template").iloc[0].note


def test_architecture_and_dtype(tmp_path, capsys):
    import torch

    a, _ = make_pair(tmp_path / "a", "tiny", seed=1)
    _, b = make_pair(tmp_path / "b", "small", seed=1)
    t = check_pair(a, b)
    assert (t["verdict"] == "blocks").sum() >= 2  # the tensors, and hidden_size etc.
    assert "hidden_size" in set(t["item"])
    assert main(["check", str(a), str(b)]) == 1
    c, d = make_pair(tmp_path / "c", "tiny", seed=1)
    e, _ = make_pair(tmp_path / "e", "tiny", seed=1, dtype=torch.bfloat16)
    t = check_pair(c, e)
    assert set(t["verdict"]) == {"harmless"} and "weights" in set(t["item"])
    capsys.readouterr()
    assert main(["check", str(c), str(e)]) == 0
    assert "(--all shows them)" in capsys.readouterr().out
    shutil.rmtree(d)
    assert main(["check", str(c), str(d)]) == 2  # not a checkpoint folder: named, exit 2
    assert f"model {d}: not a checkpoint folder" in capsys.readouterr().err


def test_the_papers_pair_shape_think_tokens_a_jinja_template_and_one_context_choice(tmp_path,
                                                                                    capsys):
    """System 2 adds <think> / </think> (two embedding rows) and ships its chat template as
    chat_template.jinja, with a longer context and its own rope_parameters: the check names both
    tokens and the templates' difference, and the merge takes the context length with System
    2's rope, never System 1's rope beside System 2's length."""
    base, model = make_think_pair(tmp_path / "p")
    vocab = json.loads((base / "config.json").read_text())["vocab_size"]
    edit_json(base / "tokenizer_config.json", lambda d: d.update(
        chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}"))
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['content'] }}{% endfor %}<think>\n")
    edit_json(base / "config.json", lambda d: d.update(
        max_position_embeddings=4096, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"}))
    edit_json(model / "config.json", lambda d: d.update(
        max_position_embeddings=131072,
        rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"}))
    t = check_pair(base, model)
    tokens = rows(t, "tokens only one side has").iloc[0]
    assert f"<think> ({vocab})" in tokens.model_value and f"</think> ({vocab + 1})" in tokens.model_value
    assert tokens.base_value == "none"
    ct = rows(t, "chat_template").iloc[0]
    assert ct.base_value.startswith("tokenizer_config.json: ")
    assert ct.model_value.startswith("chat_template.jinja: ")
    assert "different (line 1:" in ct.note
    assert main(["check", str(base), str(model)]) == 0
    printed = capsys.readouterr().out
    assert "<think>" in printed and "</think>" in printed and "chat_template" in printed

    import l2s_kit

    recipe = {"merge_method": "task_arithmetic", "base_model": str(base),
              "models": [{"model": str(model)}]}
    out = l2s_kit.merge(recipe, tmp_path / "merged", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 131072
    assert cfg["rope_parameters"] == {"rope_theta": 1000000.0, "rope_type": "default"}
    assert "are one choice, all from System 2" in (out / "README.md").read_text()
    # System 2 without rope_parameters (rope_theta at the top level): none of System 1's is kept
    edit_json(model / "config.json", lambda d: (d.pop("rope_parameters"), d.update(rope_theta=1e6)))
    out = l2s_kit.merge(recipe, tmp_path / "merged-2", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert "rope_parameters" not in cfg and cfg["rope_theta"] == 1e6


def test_the_same_folder_as_base_and_model_says_so(pair, capsys):
    base, _ = pair
    assert main(["check", str(base), str(base) + "/"]) == 2
    assert "is the base" in capsys.readouterr().err
