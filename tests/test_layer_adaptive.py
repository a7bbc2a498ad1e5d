"""ACM and FIM-Merging: their maths against hand checks (METHODS.md), their statistics against
naive whole-model references, and the merges against the inner merge scaled per layer."""

from __future__ import annotations

import math

import pytest
import torch

from l2s_kit.errors import RecipeError
from l2s_kit.io import Checkpoint
from l2s_kit.merging import get_method, merge_state_dicts
from l2s_kit.merging.calibration import fisher, mutual_info
from l2s_kit.merging.calibration.activations import tokenize
from l2s_kit.merging.calibration.sensitivity import layer_group
from l2s_kit.merging.calibration.sets import CalibrationSpec, texts
from l2s_kit.merging.methods.layer_adaptive import (
    acm_coefficients,
    acm_table,
    fim_coefficient,
    fim_scores,
    fim_table,
)
from l2s_kit.zoo.synthetic import make_pair

T = torch.tensor


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tuple(str(p) for p in make_pair(tmp_path_factory.mktemp("layer_adaptive"), "small",
                                           seed=7, delta_std=0.02))


# ---- hand checks ---------------------------------------------------------------------------------

def test_nmi_hand_checks():
    x = T([0.0, 0.0, 1.0, 1.0])
    assert mutual_info.nmi(x, x.clone(), 2) == pytest.approx(1.0)
    assert mutual_info.nmi(x, T([0.0, 1.0, 0.0, 1.0]), 2) == pytest.approx(0.0, abs=1e-12)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    hy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    got = mutual_info.nmi(x, T([0.0, 0.0, 0.0, 1.0]), 2)
    assert got == pytest.approx(mi / math.sqrt(math.log(2) * hy)) == pytest.approx(0.34559, abs=1e-5)
    assert mutual_info.nmi(x, T([3.0, 3.0, 3.0, 3.0]), 2) == 0.0  # a constant tells nothing
    # NMI depends on ranks only: any increasing map of one side keeps it
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5000, generator=g)
    b = a + 0.5 * torch.randn(5000, generator=g)
    assert mutual_info.nmi(a, b, 16) == pytest.approx(mutual_info.nmi(a, b.exp() * 3, 16))
    assert 0.1 < mutual_info.nmi(a, b, 16) < 0.9


def test_acm_coefficients_hand_check():
    c = acm_coefficients({"a": 0.8, "b": 0.6, "c": 0.2, "lm_head": 0.2})
    assert c["a"] == pytest.approx(3 / 7) and c["b"] == pytest.approx(6 / 7)
    assert c["c"] == pytest.approx(12 / 7) and c["lm_head"] == pytest.approx(12 / 7)
    assert acm_coefficients({"a": 1.0, "b": 1.0}) == {"a": 1.0, "b": 1.0}


def test_fim_coefficients_hand_check():
    z = fim_scores({"a": 1e-2, "b": 1e-4, "c": 1e-6, "d": 5.0}, {"a": 1, "b": 1, "c": 1, "d": 0})
    assert z["a"] == pytest.approx(1.2247449) and z["b"] == pytest.approx(0, abs=1e-12)
    assert z["c"] == pytest.approx(-1.2247449) and z["d"] == 0.0  # nothing to merge there
    alpha = [fim_coefficient(z[g], 0.0, 1.0, 1.0) for g in "abc"]
    assert alpha == pytest.approx([0.2271, 0.5, 0.7729], abs=1e-4)
    assert fim_coefficient(1.2247449, 0.2, 0.6, 2.0) == pytest.approx(
        0.2 + 0.4 / (1 + math.exp(2 * 1.2247449)))


# ---- statistics against naive references --------------------------------------------------------

def test_paired_states_equal_the_whole_models_hidden_states(pair):
    from transformers import AutoModelForCausalLM

    base, model = pair
    spec = CalibrationSpec("family", "question+both", samples=5, seed=2, max_tokens=40)
    batches = tokenize(base, texts(spec), 40, batch_size=3)
    assert any(not m.all() for _, m in batches)  # padded batches: masks matter
    got = list(mutual_info.paired_states(base, model, batches))
    assert [g for g, *_ in got][:2] == ["model.embed_tokens", "model.layers.0"]
    for side, path in enumerate((base, model)):
        whole = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     attn_implementation="sdpa").eval()
        for b, (ids, mask) in enumerate(batches):
            with torch.no_grad():
                hs = whole(input_ids=ids, attention_mask=mask.long(),
                           output_hidden_states=True).hidden_states
            # hidden_states: the embeddings, each layer's output, the last one after the norm
            expect = list(hs[:-1]) + [hs[-1]]
            states = [s[1 + side][b] for s in got]
            assert len(states) == len(expect) + 1
            for k, e in enumerate(expect[:-1]):
                assert torch.allclose(states[k][mask], e[mask], atol=1e-4), (path, k)
            assert torch.allclose(states[-1][mask], expect[-1][mask], atol=1e-4)


def test_layer_nmi_pairs_real_tokens_and_is_cached(pair, monkeypatch):
    base, model = pair
    spec = CalibrationSpec("family", "question+short", samples=4, seed=0, max_tokens=32)
    same = mutual_info.layer_nmi(base, base, spec, bins=8, pairs=4096)
    assert all(v == pytest.approx(1.0) for v in same.values())  # a model against itself
    got = mutual_info.layer_nmi(base, model, spec, bins=8, pairs=4096)
    assert set(got) == {"model.embed_tokens", "model.norm", "lm_head"} | {
        f"model.layers.{i}" for i in range(4)}
    assert all(0 < v < 1 for v in got.values())
    monkeypatch.setattr(mutual_info, "paired_states", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("recomputed")))
    assert mutual_info.layer_nmi(base, model, spec, bins=8, pairs=4096) == got


@pytest.mark.parametrize("which", ["small", "untied"])
def test_fisher_equals_a_naive_reference_and_layer_by_layer(which, pair, sharded_pair):
    """F^l = mean over parameters and samples of (∂L/∂θ)²: per-sample backward passes of the
    whole model, squared and summed by hand; the layer-by-layer pass gives the same."""
    from transformers import AutoModelForCausalLM

    path = pair[0] if which == "small" else str(sharded_pair[1])
    vocab = fisher.vocabulary(path)
    got = fisher.fisher_diagonal(path, samples=3, tokens=16, seed=4, cache=False,
                                 layerwise=False)
    batches = fisher.random_batches(vocab, 3, 16, 4)
    assert all(int(ids.max()) < vocab for ids, _ in batches)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    sums, sizes = {}, {}
    for n, p in m.named_parameters():
        sizes[layer_group(n)] = sizes.get(layer_group(n), 0) + p.numel()
    for ids, _ in batches:
        m.zero_grad(set_to_none=True)
        m(input_ids=ids, labels=ids).loss.backward()
        for n, p in m.named_parameters():
            g = layer_group(n)
            sums[g] = sums.get(g, 0.0) + float(p.grad.double().square().sum()) / 3
    assert set(got) == set(sums)
    for g in sums:
        assert got[g] == pytest.approx(sums[g] / sizes[g], rel=1e-5), g
    layerwise = fisher.fisher_diagonal(path, samples=3, tokens=16, seed=4, cache=False,
                                       layerwise=True)
    assert layerwise == pytest.approx(got, rel=1e-5)


def test_delta_norms_equal_a_naive_sum(pair):
    base, model = pair
    b, m = Checkpoint(base), Checkpoint(model)
    expect = {}
    for n in b.names:
        g = layer_group(n)
        expect[g] = expect.get(g, 0.0) + float((m.read(n).double() - b.read(n).double())
                                               .square().sum())
    assert fisher.delta_norms(base, model, cache=False) == pytest.approx(expect, rel=1e-9)


# ---- the merges ----------------------------------------------------------------------------------

def _scaled(sd, inner, base, coefficient_of):
    b = Checkpoint(base)
    for name, t in sd.items():
        c = coefficient_of(name)
        expect = b.read(name).float() + c * (inner[name] - b.read(name).float())
        assert torch.allclose(t, expect, atol=1e-6), name


def test_acm_scales_the_inner_merge_per_layer(pair):
    base, model = pair
    params = {"scale": 0.9, "inner": "ties", "k": 0.5, "alpha": 1.0, "calib_samples": 4,
              "calib_max_tokens": 32, "bins": 8, "pairs": 4096}
    sd = merge_state_dicts("acm", base, [model], **params)
    inner = merge_state_dicts("ties", base, [model], k=0.5, alpha=1.0)
    table = acm_table([base, model], get_method("acm").resolve(params, "test"))
    assert len(set(round(v, 6) for v in table.values())) > 3  # the layers differ
    assert sum(v for g, v in table.items() if g != "lm_head") / (len(table) - 1) == \
        pytest.approx(1.0)
    _scaled(sd, inner, base, lambda n: 0.9 * table[layer_group(n)])


def test_fim_scales_the_inner_merge_per_layer_and_protects_gates(pair):
    base, model = pair
    params = {"lo": 0.1, "hi": 0.9, "sharpness": 2.0, "gate_scale": 0.7, "inner": "task_arithmetic",
              "alpha": 1.0, "fim_samples": 2, "fim_tokens": 16}
    sd = merge_state_dicts("fim", base, [model], **params)
    inner = merge_state_dicts("task_arithmetic", base, [model], alpha=1.0)
    z = fim_table([base, model], get_method("fim").resolve(params, "test"))
    assert sum(z.values()) == pytest.approx(0.0, abs=1e-9) and len(set(z.values())) > 3

    def c(name):
        a = fim_coefficient(z[layer_group(name)], 0.1, 0.9, 2.0)
        return a * 0.7 if "gate_proj" in name else a
    assert any("gate_proj" in n for n in sd)
    _scaled(sd, inner, base, c)


def test_the_model_card_lists_the_per_layer_values(pair, tmp_path):
    from l2s_kit.merging import merge

    base, model = pair
    recipe = {"merge_method": "fim", "base_model": base, "models": [model],
              "parameters": {"inner": "task_arithmetic", "fim_samples": 2, "fim_tokens": 16}}
    merge(recipe, tmp_path / "out", progress=False)
    card = (tmp_path / "out" / "README.md").read_text()
    z = fim_table([base, model], get_method("fim").resolve(recipe["parameters"], "t"))
    assert f"layers.2 {z['model.layers.2']:.4g}" in card and "standardised log Fisher" in card


def test_layer_adaptive_recipes_are_validated_before_any_tensor_is_read():
    acm, fim = get_method("acm"), get_method("fim")
    for method, params, words in [
        (acm, {"scale": -1.0}, ["scale", "out of range"]),
        (acm, {"inner": "aim"}, ["cannot wrap", "aim"]),
        (acm, {"calib_parts": "question+long", "calib_source": "s1k"}, ["s1K", "long"]),
        (fim, {"hi": 11.0}, ["hi", "out of range"]),
        (fim, {"fim_tokens": [8, 16]}, ["fim_tokens"]),
        (fim, {"inner": "ties", "bogus": 1}, ["unknown parameter 'bogus'", "fim"]),
    ]:
        with pytest.raises(RecipeError) as e:
            method.resolve(params, "recipe.yaml")
        assert all(w in str(e.value) for w in words), str(e.value)
    with pytest.raises(RecipeError, match="must be checkpoint folders, not in-memory models"):
        sd = {"model.layers.0.mlp.up_proj.weight": torch.ones(2, 2)}
        merge_state_dicts("fim", sd, [sd])  # no hub lookup of a folder called "state_dict"
    # a layer schedule of the sigmoid's range is allowed, as for any per-tensor parameter
    assert fim.resolve({"hi": [1.0, 0.5]}, "r")["hi"] == [1.0, 0.5]
