"""The streamed merge against a naive whole-state-dict implementation, and the output folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import l2s_kit
from l2s_kit.io import Checkpoint, weights_hash
from l2s_kit.io.shared import shown_path
from l2s_kit.merging import (
    engine,
    load_recipe,
    merge,
    merge_in_memory,
    merge_state_dicts,
    read_merge_info,
    registry,
)
from l2s_kit.merging.registry import State, merge_method  # module level: annotations resolve here


# -- a naive reference: whole state dicts, plain torch ---------------------------------------------
def load_all(path):
    sd = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    cfg = json.loads((path / "config.json").read_text())
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # tied
    return sd, cfg


def naive_trim_mask(flat_abs, k):
    n = flat_abs.numel()
    keep = n - int(round(k * n, 9) // 1)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.topk(flat_abs, keep).indices] = True
    return mask


def naive_merge(base_dir, model_dir, method, **p):
    """Whole-model reference: merge the shared rows, copy extra rows, all in float64."""
    b, bcfg = load_all(base_dir)
    m, mcfg = load_all(model_dir)
    tied = bcfg["tie_word_embeddings"] and mcfg["tie_word_embeddings"]
    names = [n for n in b if not (tied and n == "lm_head.weight")]
    rows = {n: min(b[n].shape[0], m[n].shape[0]) for n in names}
    deltas = {n: m[n][: rows[n]].double() - b[n][: rows[n]].double() for n in names}
    if method == "ties" and p.get("trim") == "global":
        flat = torch.cat([deltas[n].reshape(-1) for n in names])
        mask = naive_trim_mask(flat.abs(), p["k"])
        i = 0
        for n in names:
            c = deltas[n].numel()
            deltas[n] = deltas[n] * mask[i:i + c].reshape(deltas[n].shape)
            i += c
    out = {}
    for n in names:
        base = b[n][: rows[n]].double()
        d = deltas[n]
        if method == "task_arithmetic":
            r = base + p["alpha"] * d
        elif method == "average":
            r = (base + m[n][: rows[n]].double()) / 2
        elif method == "ties":
            if p.get("trim", "topk") == "topk":
                d = d * naive_trim_mask(d.abs().reshape(-1), p["k"]).reshape(d.shape)
            r = base + p["alpha"] * d
        extra = m[n][rows[n]:] if m[n].shape[0] > rows[n] else b[n][rows[n]:]
        out[n] = torch.cat([r.to(b[n].dtype), extra.to(b[n].dtype)])
    return out


def assert_same(got_dir, expected, atol=1e-6):
    got = Checkpoint(got_dir)
    assert sorted(got.names) == sorted(expected)
    for n, e in expected.items():
        g = got.read(n)
        assert g.shape == e.shape, n
        assert torch.allclose(g.double(), e.double(), atol=atol, rtol=0), n


CASES = [
    ("task_arithmetic", {"alpha": 0.7}),
    ("average", {}),
    ("ties", {"k": 0.8, "alpha": 1.0, "trim": "topk"}),
    ("ties", {"k": 0.6, "alpha": 0.5, "trim": "global"}),
]


@pytest.mark.parametrize("pair", ["tiny_pair", "sharded_pair", "mixed_tie_pair"])
@pytest.mark.parametrize("method,params", CASES)
def test_streamed_merge_equals_naive_reference(pair, method, params, request, tmp_path):
    base, model = request.getfixturevalue(pair)
    recipe = {"merge_method": method, "base_model": str(base), "models": [{"model": str(model)}],
              "parameters": params}
    out = merge(recipe, tmp_path / "out", progress=False, shard_size=25_000)
    assert_same(out, naive_merge(base, model, method, **params))


@pytest.mark.parametrize("method,params", [
    ("ties", {"k": 0.8, "trim": "topk"}),
    ("ties", {"k": 0.8, "trim": "reference"}),
    ("ties", {"k": 0.7, "trim": "global"}),
    ("dare", {"p": 0.3, "seed": 5}),
    ("dare_ties", {"p": 0.3, "k": 0.5}),
])
def test_result_does_not_depend_on_block_size(sharded_pair, method, params, monkeypatch):
    base, model = sharded_pair
    recipe = {"merge_method": method, "base_model": str(base), "models": [{"model": str(model)}],
              "parameters": params}
    whole = merge_in_memory(recipe)
    monkeypatch.setattr(engine, "BLOCK_ELEMS", 96)  # every matrix streamed in many row blocks
    blocked = merge_in_memory(recipe)
    assert whole.keys() == blocked.keys()
    for n in whole:
        assert torch.equal(whole[n], blocked[n]), n
    if method != "dare":  # a streamed tensor's trim planned by a radix select over its blocks
        from l2s_kit.merging.methods import task_vector  # rather than from one whole read

        monkeypatch.setattr(task_vector, "WHOLE_PLAN_ELEMS", 0)
        radix = merge_in_memory(recipe)
        for n in whole:
            assert torch.equal(whole[n], radix[n]), n


def test_global_trim_keeps_exactly_n_minus_floor_kn_over_the_model(tiny_pair, tmp_path):
    base, model = tiny_pair
    out = merge({"merge_method": "ties", "base_model": str(base),
                 "models": [{"model": str(model)}], "parameters": {"k": 0.9, "trim": "global"}},
                tmp_path / "g", progress=False)
    b, o = Checkpoint(base), Checkpoint(out)
    changed = total = 0
    per_tensor = []
    for n in b.names:
        d = (o.read(n) - b.read(n)) != 0
        changed += int(d.sum())
        total += d.numel()
        per_tensor.append(float(d.float().mean()))
    assert changed == total - int(0.9 * total)
    assert max(per_tensor) - min(per_tensor) > 0.05  # not 10% of every tensor: a global choice


def test_global_trim_two_models_uses_majority_sign_for_zero_sums(tmp_path):
    # base 0; deltas cancel exactly on entry 0 and the other entries vote negative
    base = {"w": torch.zeros(4)}
    m1 = {"w": torch.tensor([1.0, -3.0, -3.0, -3.0])}
    m2 = {"w": torch.tensor([-1.0, -2.0, -2.0, -2.0])}
    out = engine.merge_state_dicts("ties", base, [m1, m2], k=0.0, trim="global")
    assert torch.equal(out["w"], torch.tensor([-1.0, -2.5, -2.5, -2.5]))
    per_tensor = engine.merge_state_dicts("ties", base, [m1, m2], k=0.0, trim="topk")
    assert torch.equal(per_tensor["w"], torch.tensor([1.0, -2.5, -2.5, -2.5]))


def test_dare_masks_are_seeded_by_tensor_name_not_read_order(tiny_pair):
    base, model = tiny_pair
    b, m = Checkpoint(base), Checkpoint(model)
    sd_b = {n: b.read(n) for n in b.names}
    sd_m = {n: m.read(n) for n in m.names}
    rev_b = dict(reversed(list(sd_b.items())))
    rev_m = dict(reversed(list(sd_m.items())))
    a = engine.merge_state_dicts("dare", sd_b, [sd_m], p=0.5, seed=3)
    r = engine.merge_state_dicts("dare", rev_b, [rev_m], p=0.5, seed=3)
    assert all(torch.equal(a[n], r[n]) for n in a)


def test_same_recipe_twice_same_weight_hash_whatever_the_sharding(sharded_pair, tmp_path):
    base, model = sharded_pair
    recipe = {"merge_method": "dare_ties", "base_model": str(base),
              "models": [{"model": str(model)}], "parameters": {"p": 0.3, "seed": 1}}
    a = merge(recipe, tmp_path / "a", progress=False, shard_size=10_000)
    b = merge(recipe, tmp_path / "b", progress=False, shard_size=10**9)
    assert a.weights_hash == b.weights_hash == weights_hash(Checkpoint(b))
    assert len(list(a.glob("*.safetensors"))) > 1 and (a / "model.safetensors.index.json").exists()
    assert [p.name for p in b.glob("*.safetensors")] == ["model.safetensors"]


def test_merge_in_memory_equals_the_written_checkpoint(sharded_pair, tmp_path):
    base, model = sharded_pair
    recipe = {"merge_method": "ties", "base_model": str(base), "models": [{"model": str(model)}],
              "parameters": {"k": 0.5}}
    disk = Checkpoint(merge(recipe, tmp_path / "d", progress=False))
    mem = merge_in_memory(recipe)
    assert sorted(mem) == sorted(disk.names)
    assert all(torch.equal(mem[n], disk.read(n)) for n in mem)


def test_stored_dtype_is_the_base_dtype_unless_told(tmp_path):
    from l2s_kit.zoo.synthetic import make_pair

    base, model = make_pair(tmp_path / "bf", "tiny", dtype=torch.bfloat16)
    r = {"merge_method": "task_arithmetic", "base_model": str(base),
         "models": [{"model": str(model)}], "parameters": {"alpha": 0.5}}
    kept = Checkpoint(merge(r, tmp_path / "kept", progress=False))
    assert {kept.info(n).dtype for n in kept.names} == {torch.bfloat16}
    # computed in float32, rounded once at the end
    b, m = Checkpoint(base), Checkpoint(model)
    n = "model.layers.0.mlp.up_proj.weight"
    expected = (b.read(n).float() + 0.5 * (m.read(n).float() - b.read(n).float())).bfloat16()
    assert torch.equal(kept.read(n), expected)
    f32 = merge({**r, "out_dtype": "float32"}, tmp_path / "f32", progress=False)
    assert {Checkpoint(f32).info(x).dtype for x in Checkpoint(f32).names} == {torch.float32}
    assert json.loads((f32 / "config.json").read_text())["torch_dtype"] == "float32"


def test_output_loads_in_transformers_and_generates(mixed_tie_pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, model = mixed_tie_pair
    recipe = {"merge_method": "ties", "base_model": str(base), "models": [{"model": str(model)}],
              "parameters": {"k": 0.8, "alpha": 1.0}}
    out = merge(recipe, tmp_path / "m", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False  # the model stores its own lm_head
    lm = AutoModelForCausalLM.from_pretrained(out)
    sd = merge_in_memory(recipe)
    assert torch.equal(lm.lm_head.weight.detach(), sd["lm_head.weight"])
    assert torch.equal(lm.model.embed_tokens.weight.detach(), sd["model.embed_tokens.weight"])
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Q 1 + 2 =", return_tensors="pt")
    gen = lm.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape == (1, ids["input_ids"].shape[1] + 4)


def test_extra_embedding_rows_come_from_the_model_that_has_them(sharded_pair, tmp_path):
    base, model = sharded_pair
    out = merge({"merge_method": "task_arithmetic", "base_model": str(base),
                 "models": [{"model": str(model)}], "parameters": {"alpha": 0.5}},
                tmp_path / "x", progress=False)
    o, m = Checkpoint(out), Checkpoint(model)
    for n in ("model.embed_tokens.weight", "lm_head.weight"):
        assert o.info(n).shape[0] == m.info(n).shape[0] == 64 + 3
        assert torch.equal(o.read(n)[64:], m.read(n)[64:])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == 67
    card = (out / "README.md").read_text()
    assert "rows 64..66" in card and "copied from it" in card


def test_model_card_and_merge_record(tiny_pair, tmp_path):
    base, model = tiny_pair
    out = merge({"merge_method": "ties", "base_model": str(base),
                 "models": [{"model": str(model)}], "parameters": {"k": 0.8}},
                tmp_path / "card", progress=False)
    card = (out / "README.md").read_text()
    info = read_merge_info(out)
    assert "https://arxiv.org/abs/2306.01708" in card  # TIES paper
    assert f"l2s_kit {l2s_kit.__version__}" in card
    assert info["weights_hash"] in card and str(base) not in card  # no path of this machine
    assert f"`{shown_path(base)}`" in card and f"`{shown_path(model)}`" in card
    assert "k: 0.8" in card  # the full recipe as YAML
    assert load_recipe(out / "l2s_recipe.yaml").parameters == info["recipe"]["parameters"]
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / f).exists(), f


def test_tokenizer_files_come_from_the_chosen_source(tiny_pair, tmp_path):
    base, model = tiny_pair
    (model / "tokenizer_config.json").write_text(
        (model / "tokenizer_config.json").read_text().replace("}", ', "marker": "S2"}', 1))
    try:
        out = merge({"merge_method": "average", "base_model": str(base),
                     "models": [{"model": str(model)}], "tokenizer_source": str(model)},
                    tmp_path / "tok", progress=False)
        assert '"marker": "S2"' in (out / "tokenizer_config.json").read_text()
    finally:
        (model / "tokenizer_config.json").write_text(
            (base / "tokenizer_config.json").read_text())


def test_output_folder_gets_the_usual_permissions(tiny_pair, tmp_path):
    import os
    import stat

    base, model = tiny_pair
    umask = os.umask(0o022)
    try:
        out = merge({"merge_method": "average", "base_model": str(base),
                     "models": [{"model": str(model)}]}, tmp_path / "perm", progress=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_methods_that_need_whole_matrices_get_them(sharded_pair, monkeypatch):
    from l2s_kit.merging.registry import _REGISTRY, merge_method

    seen = []

    @merge_method("_whole_probe", paper="https://example.org", elementwise=False)
    def probe(base, models, weights):
        seen.append(tuple(base.shape))
        return base

    monkeypatch.setattr(engine, "BLOCK_ELEMS", 96)
    try:
        b, m = sharded_pair
        engine.merge_state_dicts("_whole_probe", str(b), [str(m)])
    finally:
        _REGISTRY.pop("_whole_probe")
    assert (64, 32) in seen  # the embedding's 64 shared rows in one piece, not blocks of 3 rows
    assert len(seen) == len(Checkpoint(b).names)  # one call per tensor


def test_a_method_plans_its_own_per_tensor_state(tiny_pair):
    """A new method that needs per-tensor state declares it (State) and plans it in its own
    prepare hook; the engine passes it through without knowing its parameters."""
    seen = []

    def prepare(run, params):
        seen.append((len(run.jobs), run.n, params["shift"]))

        def state(job):
            return lambda rows: {"offset": params["shift"] * job.out.numel}
        return state

    def by_size(base, models, weights, *, shift: float = 1.0, offset: State = 0.0):
        return base + offset

    try:
        merge_method("test_by_size", paper="-", prepare=prepare)(by_size)
        sd = merge_state_dicts("test_by_size", tiny_pair[0], [tiny_pair[1]], shift=0.5)
    finally:
        registry._REGISTRY.pop("test_by_size", None)
    base = Checkpoint(tiny_pair[0])
    assert seen == [(len(sd), 1, 0.5)]
    for name, t in sd.items():
        if t.dtype.is_floating_point:
            assert torch.allclose(t, base.read(name) + 0.5 * t.numel()), name


def test_state_arguments_need_a_prepare_hook():
    def bad(base, models, weights, *, masks: State = None):
        return base

    with pytest.raises(TypeError, match="need a prepare hook"):
        merge_method("test_bad_state", paper="-")(bad)
