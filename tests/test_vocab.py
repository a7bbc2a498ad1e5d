"""``tokenizer_source: union`` (mergekit's ``tokenizer: {source: union}``) and ``chat_template``
(``auto``, ``chatml``, a template or a .jinja file), on tiny pairs with the family's byte-level
BPE tokenizer, System 2 adding tokens as DeepSeek-R1-Distill adds ``<think>`` / ``</think>``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from l2s_kit.cli import main
from l2s_kit.errors import RecipeError
from l2s_kit.io import Checkpoint
from l2s_kit.merging import load_recipe, merge
from l2s_kit.merging.compat import check_pair
from l2s_kit.merging.vocab import BUILTIN_TEMPLATES, build_union
from l2s_kit.zoo import make_think_pair, save_tokenizer
from l2s_kit.zoo.synthetic import SHAPES, make_pair

EMBED = "model.embed_tokens.weight"


def edit_json(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def add_tokens(folder, *contents, start):
    """Add special-free tokens at ids start, start + 1, ... to a folder's tokenizer.json."""
    def f(d):
        for i, c in enumerate(contents):
            d["added_tokens"].append({"id": start + i, "content": c, "single_word": False,
                                      "lstrip": False, "rstrip": False, "normalized": False,
                                      "special": False})
    edit_json(folder / "tokenizer.json", f)


def weights(folder) -> dict:
    """Every tensor of a checkpoint folder, by name."""
    c = Checkpoint(folder)
    return {n: c.read(n) for n in c.names}


@pytest.fixture
def think_pair(tmp_path):
    """(base, model, n): System 1 with the family's n tokens (its embedding has n rows); System 2
    adding <think> and </think> at n and n + 1 (two more rows)."""
    base, model = make_think_pair(tmp_path / "p")
    return base, model, json.loads((base / "config.json").read_text())["vocab_size"]


def test_union_adds_system_2s_tokens_with_its_rows_and_merges_the_rest(think_pair, tmp_path):
    """The union is System 1's tokens, then <think> and </think>; the merged rows of shared
    tokens are the merge's, those of <think> / </think> System 2's own (only it has them, so
    every input takes its row: mergekit's rule); config, tokenizer and card say so."""
    from transformers import AutoTokenizer

    base, model, n = think_pair
    r = load_recipe({"merge_method": "task_arithmetic", "base_model": str(base),
                     "models": [{"model": str(model)}], "parameters": {"alpha": 0.5},
                     "tokenizer": {"source": "union"}})
    assert r.tokenizer_source == "union"
    merge(r, tmp_path / "m", progress=False)
    b, m, out = weights(base)[EMBED], weights(model)[EMBED], weights(tmp_path / "m")[EMBED]
    assert out.shape[0] == n + 2
    assert torch.allclose(out[:n], b[:n] + 0.5 * (m[:n] - b[:n]), atol=1e-6)
    assert torch.equal(out[n:], m[n:])
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [n, n + 1]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["vocab_size"] == n + 2
    card = (tmp_path / "m" / "README.md").read_text()
    assert "the union of the inputs' vocabularies" in card and "'<think>', '</think>'" in card


def test_union_matches_rows_by_token_where_the_ids_differ(think_pair, tmp_path, capsys):
    """System 2 with two tokens' ids (and their embedding rows) swapped is the same model: a
    union merge with it equals the union merge with the unswapped one, where a merge by id
    mixes the two tokens' rows (l2s check says it blocks, and takes it with union)."""
    base, model, n = think_pair
    swapped = tmp_path / "swapped"
    shutil.copytree(model, swapped)
    vocab = json.loads((swapped / "tokenizer.json").read_text())["model"]["vocab"]
    a, b = "a", "b"
    ia, ib = vocab[a], vocab[b]

    def swap(d):
        d["model"]["vocab"][a], d["model"]["vocab"][b] = ib, ia
    edit_json(swapped / "tokenizer.json", swap)
    w = weights(swapped)
    e = w[EMBED].clone()
    e[[ia, ib]] = e[[ib, ia]]
    w[EMBED] = e
    for f in swapped.glob("*.safetensors"):
        f.unlink()
    save_file(w, swapped / "model.safetensors", metadata={"format": "pt"})

    def union_merge(m, out):
        merge({"merge_method": "task_arithmetic", "base_model": str(base),
               "models": [{"model": str(m)}], "tokenizer_source": "union"}, out, progress=False)
        return weights(out)[EMBED]

    assert torch.equal(union_merge(swapped, tmp_path / "u1"), union_merge(model, tmp_path / "u2"))
    table = check_pair(base, swapped)
    row = table[table["item"] == "tokens at the same id"].iloc[0]
    assert row.verdict == "blocks" and "tokenizer_source: union" in row.note
    table = check_pair(base, swapped, tokenizer_source="union")
    assert table[table["item"] == "tokens at the same id"].iloc[0].verdict == "takes"


def test_union_rule_for_a_token_several_inputs_have(think_pair, tmp_path):
    """<b>: in the base and the first model, not the second: the second takes the base's row.
    <x>: in both models, not the base: the base takes their mean. With task arithmetic
    (weights 1, 1): <b> ends as the first model's row, <x> as the mean."""
    base, model, n = think_pair
    root = tmp_path / "three"
    b, m1 = make_pair(root / "a", {**SHAPES["tiny"], "vocab_size": n + 1}, seed=6,
                      tokenizer=False, extra_rows=1, delta_std=0.05)
    _, m2 = make_pair(root / "b", {**SHAPES["tiny"], "vocab_size": n + 1}, seed=6,
                      tokenizer=False, delta_std=0.05, delta_seed=9)
    for f in (b, m1, m2):
        save_tokenizer(f)
    add_tokens(b, "<b>", start=n)
    add_tokens(m1, "<b>", "<x>", start=n)
    add_tokens(m2, "<x>", start=n)
    u = build_union([str(b), str(m1), str(m2)], [n + 1, n + 2, n + 1])
    assert u.rows == n + 2 and u.fallback == {n: [(0, n)], n + 1: [(1, n + 1), (2, n)]}
    merge({"merge_method": "task_arithmetic", "base_model": str(b), "models": [
        {"model": str(m1)}, {"model": str(m2)}], "tokenizer_source": "union"}, root / "out",
        progress=False)
    e1, e2, out = weights(m1)[EMBED], weights(m2)[EMBED], weights(root / "out")[EMBED]
    assert torch.allclose(out[n], e1[n], atol=1e-6)
    assert torch.allclose(out[n + 1], (e1[n + 1] + e2[n]) / 2, atol=1e-6)


def test_union_refuses_a_base_tokenizer_past_its_rows(tmp_path, capsys):
    base, model = make_pair(tmp_path / "p", "tiny", seed=5, tokenizer=False)  # 64 rows
    for f in (base, model):
        save_tokenizer(f)
    assert main(["merge", "--method", "task_arithmetic", "--base", str(base), "--model",
                 str(model), "--tokenizer-source", "union", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 2
    assert "the tokenizer of" in capsys.readouterr().err  # names the base and its rows
    assert not (tmp_path / "m").exists()


def test_chat_template_auto_chatml_text_and_file(think_pair, tmp_path):
    from transformers import AutoTokenizer

    base, model, _ = think_pair
    a = "{% for m in messages %}A{{ m['content'] }}{% endfor %}"
    bb = "{% for m in messages %}B{{ m['content'] }}{% endfor %}"
    edit_json(base / "tokenizer_config.json", lambda d: d.update(chat_template=a))
    (model / "chat_template.jinja").write_text(bb + "\n")
    pair = {"merge_method": "task_arithmetic", "base_model": str(base),
            "models": [{"model": str(model)}], "tokenizer_source": "base"}

    def template_of(choice, name, **more):
        out = tmp_path / name
        merge({**pair, **more, "chat_template": choice}, out, progress=False)
        assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
        text = (out / "chat_template.jinja").read_text()
        assert AutoTokenizer.from_pretrained(out).chat_template == text
        return text, (out / "README.md").read_text()

    # auto: one input each: equally common, the tokenizer source's own (the base's here)
    text, card = template_of("auto", "auto")
    assert text == a and "equally common" in card
    # auto: the template most inputs have (System 2's, given twice)
    text, card = template_of("auto", "auto2", models=[{"model": str(model)}] * 2)
    assert text == bb and "the template 2 of the 3 inputs have" in card
    text, _ = template_of("chatml", "chatml")
    assert text == BUILTIN_TEMPLATES["chatml"]
    text, _ = template_of(bb, "inline")
    assert text == bb
    (tmp_path / "t.jinja").write_text(bb)
    r = load_recipe({**pair, "chat_template": str(tmp_path / "t.jinja")})
    assert r.chat_template == bb
    with pytest.raises(RecipeError, match="chat_template must be auto, chatml, a .jinja file"):
        load_recipe({**pair, "chat_template": "vicuna"})
    with pytest.raises(RecipeError, match=r"tokenizer.tokens \(mergekit\) is not supported"):
        load_recipe({**pair, "tokenizer_source": None,
                     "tokenizer": {"source": "union", "tokens": {"<x>": {"source": "base"}}}})


def test_union_is_refused_where_it_cannot_apply(think_pair):
    from l2s_kit.merging import merge_in_memory

    base, model, _ = think_pair
    with pytest.raises(RecipeError, match="a layer stack keeps the first slice's model's vocabulary"):
        load_recipe({"merge_method": "passthrough", "tokenizer_source": "union", "slices": [
            {"sources": [{"model": str(base), "layer_range": [0, 1]}]}]})
    with pytest.raises(RecipeError, match="a union vocabulary makes a new checkpoint"):
        merge_in_memory({"merge_method": "task_arithmetic", "base_model": str(base),
                         "models": [{"model": str(model)}], "tokenizer_source": "union"})
