"""Activation-based merging: calibration sets, AIM statistics (layer by layer = whole model with
hooks), the statistics cache, AIM and Sens-Merging against the METHODS hand checks, and the
composition "ties, then aim" through every entry point."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from l2s_kit.errors import RecipeError
from l2s_kit.io.identity import cache_dir
from l2s_kit.merging import get_method, load_recipe, merge, merge_in_memory, merge_state_dicts
from l2s_kit.merging.calibration import activations
from l2s_kit.merging.calibration.cache import cache_file, checkpoint_key
from l2s_kit.merging.calibration.sensitivity import layer_group, sens_coefficients
from l2s_kit.merging.calibration.sets import CalibrationError, CalibrationSpec, texts
from l2s_kit.merging.methods.activation import aim_importance, aim_relax, sens_table
from l2s_kit.zoo.synthetic import make_pair

T = torch.tensor


def close(a, b, tol=1e-4):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64),
                          torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


# ---- calibration sets ----------------------------------------------------------------------------

def test_family_calibration_parts():
    from l2s_kit.zoo import task

    short = texts(CalibrationSpec("family", "question+short", samples=10, seed=0))
    long = texts(CalibrationSpec("family", "question+long", samples=10, seed=0))
    both = texts(CalibrationSpec("family", "question+both", samples=10, seed=0))
    assert len(short) == len(long) == len(both) == 10
    for s, lg, b, i in zip(short, long, both, range(10)):
        q, _, ans = s.partition(" A ")
        assert s.startswith("Q ") and ans.startswith("The answer is ")  # System 1's direct answer
        assert lg.startswith(q + " A ") and "Wait , let me double-check" in lg
        assert b == (s if i % 2 == 0 else lg)  # both: alternately short and long
    levels = [s.split(" A ")[0].count("_") for s in short[:5]]  # levels 1..5 in turn
    assert levels == [8, 6, 4, 2, 0]
    for s in short:  # never evaluation problems
        start, *ops = [w for w in s.split(" A ")[0].split()[1:] if w != "_"]
        assert task.Problem(int(start), tuple(ops)).split == "train"
    assert texts(CalibrationSpec(samples=10, seed=1)) != short


def test_s1k_calibration(shared_data, monkeypatch):
    monkeypatch.setenv("L2S_SHARED_DATA", str(shared_data))
    rows = json.loads((shared_data / "calibration" / "s1k_questions_solutions.json").read_text())
    a = texts(CalibrationSpec("s1k", samples=20, seed=0))
    assert len(a) == 20 and len(set(a)) == 20
    by_q = {r["problem"]: r["solution"] for r in rows}
    for t in a:
        q, _, sol = t.partition("\n\n")
        assert by_q.get(q) == sol or any(t == f"{p}\n\n{s}" for p, s in by_q.items())
    assert a == texts(CalibrationSpec("s1k", samples=20, seed=0))
    assert a != texts(CalibrationSpec("s1k", samples=20, seed=1))
    with pytest.raises(CalibrationError, match="no long answer"):
        texts(CalibrationSpec("s1k", "question+long", samples=5))


def test_jsonl_calibration_with_chosen_fields(tmp_path):
    f = tmp_path / "cal.jsonl"
    f.write_text("\n".join(json.dumps({"q": f"q{i}", "s": f"s{i}", "l": f"l{i}"}) for i in range(5)))
    got = texts(CalibrationSpec(str(f), "question+long", samples=5, fields="q,s,l"))
    assert sorted(got) == [f"q{i}\n\nl{i}" for i in range(5)]
    with pytest.raises(CalibrationError, match="no field 'question'"):
        texts(CalibrationSpec(str(f), samples=2))
    with pytest.raises(CalibrationError, match="parts"):
        CalibrationSpec(parts="question+answer")


# ---- AIM: hand check, statistics -----------------------------------------------------------------

def test_aim_hand_check():
    imp = aim_importance(T([1.0, 2.0, 4.0]))
    assert close(1 - imp * (1 - 0.4), [0.85, 0.7, 0.4], 1e-6)
    base = torch.zeros(2, 3)
    merged = T([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    assert close(aim_relax(base, merged, imp, 0.4), [[0.85, 0.7, 0.4], [1.7, 1.4, 0.8]], 1e-6)
    out = get_method("aim")(base + 1, [base], [1.0], omega=0.4, merged=merged + 1, importance=imp)
    assert close(out, [[1.85, 1.7, 1.4], [2.7, 2.4, 1.8]], 1e-6)  # relaxed towards the base
    assert torch.equal(get_method("aim")(base, [base], [1.0], omega=1.0, merged=merged,
                                         importance=imp), merged)  # ω = 1: no relaxation


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    return tuple(str(p) for p in make_pair(tmp_path_factory.mktemp("act"), "small", seed=5,
                                           delta_std=0.02))


def _check_equal(a, b, tol=1e-4):
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=tol, atol=1e-6 * float(b[k].abs().max())), k


@pytest.mark.slow
def test_layerwise_statistics_equal_whole_model_hooks_on_the_family(family):
    spec = CalibrationSpec("family", "question+both", samples=12, seed=0)
    batches = activations.tokenize(family.system1, texts(spec), 512, batch_size=5)
    assert any(not m.all() for _, m in batches)  # padding is there, and left out
    layer = activations.stats_layerwise(family.system1, batches)
    whole = activations.stats_whole_model(family.system1, batches)
    n_layers = json.loads((family.system1 / "config.json").read_text())["num_hidden_layers"]
    assert len(layer) == 9 * n_layers + 1  # 4 attention + 3 MLP linears, 2 norms; final norm
    assert "lm_head" not in layer and "model.embed_tokens" not in layer
    _check_equal(layer, whole)
    # batch size does not matter (each sample is its own batch in the sum)
    one = activations.stats_layerwise(family.system1, activations.tokenize(
        family.system1, texts(spec), 512, batch_size=1))
    _check_equal(one, layer)


def test_layerwise_statistics_equal_whole_model_on_a_synthetic_pair(small_pair):
    spec = CalibrationSpec("family", samples=6, seed=2)
    batches = activations.tokenize(small_pair[0], texts(spec), 64, batch_size=4)
    _check_equal(activations.stats_layerwise(small_pair[0], batches),
                 activations.stats_whole_model(small_pair[0], batches))


def test_statistics_are_hand_checkable_for_the_first_norm(small_pair):
    """a of the first input_layernorm = Σ over samples of token means of |embedding|."""
    from l2s_kit.io import Checkpoint

    spec = CalibrationSpec("family", samples=3, seed=0)
    batches = activations.tokenize(small_pair[0], texts(spec), 64, batch_size=3)
    emb = Checkpoint(small_pair[0]).read("model.embed_tokens.weight").float()
    ids, mask = batches[0]
    expect = sum(emb[ids[b][mask[b]]].abs().mean(0).double() for b in range(3))
    got = activations.stats_layerwise(small_pair[0], batches)["model.layers.0.input_layernorm"]
    assert close(got, expect, 1e-5)


# ---- the cache -----------------------------------------------------------------------------------

def test_cache_reuses_and_is_invalidated_by_the_calibration_set(small_pair, monkeypatch, tmp_path):
    monkeypatch.setenv("L2S_CACHE", str(tmp_path / "cache"))
    spec = CalibrationSpec("family", samples=4, seed=0, max_tokens=32)
    first = activations.activation_stats(small_pair[0], spec)
    f = cache_file("activations", [small_pair[0]], spec.key())
    assert f.exists() and f.parent == tmp_path / "cache" / "checkpoints" / f.parent.name

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(activations, "stats_layerwise", boom)
    again = activations.activation_stats(small_pair[0], spec)
    _check_equal(again, first, 0)
    for other in (CalibrationSpec("family", samples=5, seed=0, max_tokens=32),
                  CalibrationSpec("family", "question+long", samples=4, seed=0, max_tokens=32),
                  CalibrationSpec("family", samples=4, seed=1, max_tokens=32)):
        assert cache_file("activations", [small_pair[0]], other.key()) != f
        with pytest.raises(AssertionError, match="recomputed"):
            activations.activation_stats(small_pair[0], other)


def test_cache_key_follows_file_contents_and_checkpoint(tmp_path, small_pair):
    f = tmp_path / "cal.jsonl"
    f.write_text(json.dumps({"question": "a", "short": "b"}) + "\n")
    key = CalibrationSpec(str(f), samples=1).key()
    f.write_text(json.dumps({"question": "a", "short": "c"}) + "\n")
    assert CalibrationSpec(str(f), samples=1).key() != key
    assert checkpoint_key(small_pair[0]) != checkpoint_key(small_pair[1])
    a, b = make_pair(tmp_path / "p", "tiny", seed=0, delta_std=0.02)
    fp = checkpoint_key(a)
    from safetensors.torch import load_file, save_file
    w = load_file(a / "model.safetensors")
    w["model.norm.weight"][0] += 1.0  # same header and size, one value changed
    save_file(w, a / "model.safetensors", metadata={"format": "pt"})
    assert checkpoint_key(a) != fp


def test_cache_lives_in_the_user_cache_never_inside_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("L2S_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    a, _ = make_pair(tmp_path / "p", "tiny", seed=0, delta_std=0.02)
    assert cache_dir(a).parent == tmp_path / "home" / ".cache" / "l2s_kit" / "checkpoints"
    monkeypatch.setenv("L2S_CACHE", str(tmp_path / "c"))
    assert cache_dir(a).parent == tmp_path / "c" / "checkpoints"


# ---- Sens-Merging --------------------------------------------------------------------------------

def test_sens_merging_hand_check():
    S = T([[3.0, 4.0], [4.0, 3.0]])
    g = T([[0.0, 1.0], [3.0, 0.0]])  # g12 = 1, g21 = 3 -> tau = [.25, .75]
    c = sens_coefficients(S, g, 1.0)
    assert close(c[:, 0], [0.7787, 1.2213]) and close(c[:, 1] / 2, [0.4378, 0.5622])
    base = torch.zeros(2)
    out = get_method("sens_merging")(base, [T([1.0, 1.0]), T([2.0, 2.0])], [1.0, 1.0], alpha=0.5,
                                     coefficients=c[:, 0].tolist())
    assert close(out, 0.5 * (0.7787 + 2 * 1.2213) * torch.ones(2))


def test_layer_groups():
    assert layer_group("model.layers.12.mlp.up_proj.weight") == "model.layers.12"
    assert layer_group("model.layers.3.self_attn.q_proj.bias") == "model.layers.3"
    assert layer_group("model.norm.weight") == "model.norm"
    assert layer_group("lm_head.weight") == "lm_head"


@pytest.mark.slow
def test_sens_merging_applies_its_layer_coefficients(small_pair):
    base, model = small_pair
    params = dict(alpha=0.7, temperature=2.0, calib_samples=4, calib_max_tokens=32)
    sd = merge_state_dicts("sens_merging", base, [model], **params)
    resolved = get_method("sens").resolve(params, "test")
    table = sens_table([base, model], resolved)
    assert set(table) >= {f"model.layers.{i}" for i in range(4)} | {"model.embed_tokens"}
    coeffs = {g: c[0] for g, c in table.items()}
    assert all(0 < c < 2 for c in coeffs.values()) and len(set(coeffs.values())) > 1
    from l2s_kit.io import Checkpoint
    b, m = Checkpoint(base), Checkpoint(model)
    for name in ("model.layers.2.mlp.down_proj.weight", "model.norm.weight",
                 "model.embed_tokens.weight"):
        c = coeffs[layer_group(name)]
        expect = b.read(name) + 0.7 * c * (m.read(name) - b.read(name))
        assert torch.allclose(sd[name], expect, atol=1e-6), name
    # without the base as participant one model gets n·σ = 1: task arithmetic
    ta = merge_state_dicts("ta", base, [model], alpha=0.7)
    solo = merge_state_dicts("sens", base, [model], include_base=False, **params)
    _check_equal(solo, ta, 0)


# ---- "ties, then aim": every entry point ---------------------------------------------------------

AIM = {"omega": 0.4, "inner": "ties", "k": 0.5, "alpha": 1.0, "calib_samples": 4,
       "calib_max_tokens": 32}


def test_aim_ties_recipe_validates_hashes_and_composes(small_pair, tmp_path):
    base, model = small_pair
    r = load_recipe({"merge_method": "aim", "base_model": base, "models": [model],
                     "parameters": AIM})
    assert r.parameters["trim"] == "topk" and r.parameters["inner"] == "ties"
    assert r.hash != r.with_parameters(omega=0.5).hash
    assert r.with_parameters(inner="task_arithmetic").parameters.get("k") is None
    with pytest.raises(RecipeError, match="unknown parameter 'p' for method 'aim' wrapping 'ties'"):
        load_recipe({"merge_method": "aim", "base_model": base, "models": [model],
                     "parameters": {**AIM, "p": 0.3}})
    with pytest.raises(RecipeError, match="cannot wrap"):
        load_recipe({"merge_method": "aim", "base_model": base, "models": [model],
                     "parameters": {"inner": "sens_merging"}})
    with pytest.raises(RecipeError, match="calib_source"):
        load_recipe({"merge_method": "aim", "base_model": base, "models": [model],
                     "parameters": {"calib_source": str(tmp_path / "missing.jsonl")}})

    # the maths, from the package's statistics: θ₀ + (TIES − θ₀) ⊙ (1 − I(1 − ω))
    ties = merge_state_dicts("ties", base, [model], k=0.5, alpha=1.0)
    stats = activations.activation_stats(base, CalibrationSpec(samples=4, max_tokens=32))
    sd = merge_state_dicts("aim", base, [model], **AIM)
    from l2s_kit.io import Checkpoint
    b = Checkpoint(base)
    for name in ("model.layers.1.self_attn.o_proj.weight", "model.layers.0.input_layernorm.weight"):
        imp = aim_importance(stats[name.removesuffix(".weight")]).float()
        assert torch.allclose(sd[name], aim_relax(b.read(name), ties[name], imp, 0.4), atol=1e-6)
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.bias"):
        assert torch.equal(sd[name], ties[name])  # embeddings and biases are not relaxed
    assert not torch.equal(sd["model.layers.1.mlp.up_proj.weight"],
                           ties["model.layers.1.mlp.up_proj.weight"])
    one = merge_state_dicts("aim", base, [model], **{**AIM, "omega": 1.0})
    _check_equal(one, ties, 0)

    # the same weights through merge_in_memory, l2s_kit.merge and `l2s merge`
    _check_equal(merge_in_memory(r), sd, 0)
    out = merge(r, tmp_path / "aim", progress=False)
    from l2s_kit.cli import main
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r.to_dict()))
    assert main(["merge", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert main(["merge", "--method", "aim", "--base", base, "--model", model, "--out",
                 str(tmp_path / "cli2"), "--quiet",
                 *[f"--param={k}={v}" for k, v in AIM.items()]]) == 0
    for folder in (out, tmp_path / "cli", tmp_path / "cli2"):
        ck = Checkpoint(folder)
        _check_equal({n: ck.read(n) for n in ck.names}, sd, 0)
        info = json.loads((folder / "l2s_merge.json").read_text())
        assert info["recipe_hash"] == r.hash
        card = (folder / "README.md").read_text()
        assert "**aim**" in card and "Applied on top of: `ties`" in card and "omega = 0.4" in card
    assert not (tmp_path / "aim" / ".l2s_cache").exists()


def test_sensitivity_and_logit_distance_equal_a_naive_reference(small_pair, monkeypatch):
    """S per layer group and g_ij recomputed by hand: own cross-entropy, own sums, two samples."""
    from transformers import AutoModelForCausalLM

    from l2s_kit.merging.calibration import sensitivity

    base, model = small_pair
    spec = CalibrationSpec("family", "question+long", samples=2, seed=3, max_tokens=48)
    got = sensitivity.sensitivities(base, spec, cache=False)
    m = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    want: dict[str, float] = {}
    batches = activations.tokenize(base, texts(spec), 48, batch_size=1)
    for ids, _ in batches:
        m.zero_grad()
        logits = m(input_ids=ids).logits[0, :-1]
        torch.nn.functional.cross_entropy(logits, ids[0, 1:]).backward()
        for name, p in m.named_parameters():
            g = layer_group(name)
            want[g] = want.get(g, 0.0) + float((p.detach() * p.grad).abs().sum()) / len(batches)
    assert set(got) == set(want)
    assert all(got[g] == pytest.approx(want[g], rel=1e-5) for g in want)
    # g_ij: mean over model j's tokens of the L2 distance between the two models' logits
    mj = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        d = torch.cat([(m(input_ids=ids).logits - mj(input_ids=ids).logits)[0].norm(dim=-1)
                       for ids, _ in activations.tokenize(model, texts(spec), 48, batch_size=1)])
    assert sensitivity.logit_distance(base, model, spec, cache=False) == pytest.approx(
        float(d.mean()), rel=1e-5)
    # a sweep over T or alpha reuses the cached statistics
    params = get_method("sens").resolve({"calib_samples": 2, "calib_max_tokens": 48}, "test")
    first = sens_table([base, model], params)
    monkeypatch.setattr(sensitivity, "_model", lambda *a: (_ for _ in ()).throw(
        AssertionError("statistics recomputed")))
    again = sens_table([base, model], {**params, "temperature": 5.0})
    assert set(again) == set(first) and again != first


@pytest.mark.slow
@pytest.mark.parametrize("which", ["family", "untied"])
def test_layer_by_layer_sensitivities_equal_the_whole_model(which, family, sharded_pair):
    """A backward through one decoder layer at a time (recomputing its forward) gives the whole
    model's S^l: tied embeddings (the family) and an untied, sharded head with extra rows."""
    from l2s_kit.merging.calibration import sensitivity

    path = str(family.system2) if which == "family" else str(sharded_pair[1])
    spec = CalibrationSpec("family", "question+long", samples=3, seed=1, max_tokens=48)
    whole = sensitivity.sensitivities(path, spec, cache=False, layerwise=False)
    for chunk in (1, 2):
        got = sensitivity.sensitivities_layerwise(path, sensitivity._batches(path, spec),
                                                  chunk=chunk)
        assert set(got) == set(whole)
        for g in whole:
            assert float(got[g]) == pytest.approx(whole[g], rel=1e-5), g
    # the default picks layer by layer above LAYERWISE_ABOVE bytes of weights and gradients
    orig = sensitivity.LAYERWISE_ABOVE
    try:
        sensitivity.LAYERWISE_ABOVE = 0
        auto = sensitivity.sensitivities(path, spec, cache=False)
    finally:
        sensitivity.LAYERWISE_ABOVE = orig
    assert auto == pytest.approx(whole, rel=1e-5)
