"""DELLA, Model Breadcrumbs, SCE, SLERP, NuSLERP, Model Stock and layer schedules: hand-worked
values, naive references written from the papers' and mergekit's formulas, mergekit YAML, and
schedules through a real merge. (Parity with mergekit itself, on the same files:
benchmarks/mergekit_parity.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from l2s_kit.errors import RecipeError
from l2s_kit.io import Checkpoint
from l2s_kit.io.shared import shown_path
from l2s_kit.merging import get_method, load_recipe, merge, merge_state_dicts
from l2s_kit.merging.schedule import count_layers, position, value_at
from l2s_kit.zoo.synthetic import make_pair

Z = torch.zeros


def tensors(folder):
    """Every tensor of a checkpoint folder, by name."""
    c = Checkpoint(folder)
    return {n: c.read(n) for n in c.names}


def run(name, base, models, weights=None, **params):
    m = get_method(name)
    state = {k: params.pop(k) for k in m.state_args if k in params}  # what prepare would give
    resolved = m.resolve(params, "test")
    return m(base.double(), [x.double() for x in models], weights, **resolved, **state)


# ---- Model Breadcrumbs -------------------------------------------------------------------------

DELTA = torch.tensor([0.1, -0.5, 0.3, 2.0, -0.05, 0.2, -0.4, 0.01, 0.6, -0.15])
# density 0.6, gamma 0.1 of 10 entries: keep 6; drop the largest (2.0 at 3) and the 3 smallest
# (0.01 at 7, 0.05 at 4, 0.1 at 0)
KEPT = torch.tensor([0, -0.5, 0.3, 0, 0, 0.2, -0.4, 0, 0.6, -0.15])


def test_breadcrumbs_drops_outliers_and_the_smallest_by_hand():
    got = run("breadcrumbs", Z(10), [DELTA], density=0.6, gamma=0.1)
    assert torch.allclose(got, KEPT.double())
    scaled = run("breadcrumbs", Z(10), [DELTA], density=0.6, gamma=0.1, rescale=True, alpha=0.5)
    assert torch.allclose(scaled, 0.5 * KEPT.double() * (4.31 / 2.15))  # L1 restored, then α
    assert torch.equal(run("breadcrumbs", Z(10), [DELTA], density=1.0), DELTA.double())
    # density + gamma asking for more than all: fewer outliers dropped (only the 2.0)
    got = run("breadcrumbs", Z(10), [DELTA], density=0.9, gamma=0.5)
    assert torch.allclose(got, torch.where(DELTA.abs() == 2.0, 0, DELTA).double())


# two models, base 0, weights (1, 0.5): weighted sums (-0.5, -1.5, 0.75) elect (-, -, +)
M1, M2 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-3.0, 1.0, 0.5])


def test_sign_consensus_and_normalize_by_hand():
    ties = run("breadcrumbs_ties", Z(3), [M1, M2], [1.0, 0.5])  # density 1: no trim
    assert torch.allclose(ties, torch.tensor([-1.5, -2.0, 0.75]).double())
    lin = run("breadcrumbs", Z(3), [M1, M2], [1.0, 0.5])
    assert torch.allclose(lin, torch.tensor([-0.5, -1.5, 0.75]).double())
    norm = run("breadcrumbs_ties", Z(3), [M1, M2], [1.0, 0.5], normalize=True)
    assert torch.allclose(norm, torch.tensor([-3.0, -2.0, 0.5]).double())  # / (0.5, 1, 1.5)


# ---- DELLA -------------------------------------------------------------------------------------

def test_della_keeps_by_magnitude_rank_and_restores_the_l1_norm():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(4, 50_000, generator=g)
    out = run("della_linear", Z(4, 50_000), [delta], density=0.5, epsilon=0.1, rescale=False)
    kept = out != 0
    assert kept.double().mean().item() == pytest.approx(0.5, abs=0.005)
    ranks = delta.abs().argsort(1).argsort(1)
    low, high = kept[ranks < 5000].double().mean(), kept[ranks >= 45_000].double().mean()
    assert low.item() == pytest.approx(0.405, abs=0.01)  # p from 0.4 (smallest) ...
    assert high.item() == pytest.approx(0.595, abs=0.01)  # ... to 0.6 (largest)
    assert torch.equal(out[kept], delta.double()[kept])  # survivors unscaled without rescale
    res = run("della_linear", Z(4, 50_000), [delta], density=0.5, epsilon=0.1)
    assert res.abs().sum().item() == pytest.approx(delta.double().abs().sum().item(), rel=1e-9)


def test_della_masks_are_seeded_by_tensor_name_and_model():
    d = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    a = run("della", Z(64, 64), [d], density=0.5, tensor="layers.0.q")
    assert torch.equal(a, run("della", Z(64, 64), [d], density=0.5, tensor="layers.0.q"))
    assert not torch.equal(a, run("della", Z(64, 64), [d], density=0.5, tensor="layers.1.q"))
    assert not torch.equal(a, run("della", Z(64, 64), [d], density=0.5, seed=1, tensor="layers.0.q"))


def test_della_refuses_probabilities_outside_0_1(paths):
    with pytest.raises(RecipeError, match=r"density ± epsilon must lie in \(0, 1\)"):
        load_recipe({**paths, "merge_method": "della", "parameters": {"density": 0.9,
                                                                       "epsilon": 0.15}})
    with pytest.raises(RecipeError, match="density 0.95"):  # a schedule's values too
        load_recipe({**paths, "merge_method": "della", "parameters": {"density": [0.5, 0.95]}})


# ---- SCE ---------------------------------------------------------------------------------------

TV1, TV2 = torch.tensor([1.0, 2.0, -1.0, 0.0]), torch.tensor([3.0, -2.0, -1.0, 0.0])


def test_sce_by_hand():
    # no selection: signs elected (+, +, -, +); weights by mean square 1.5 and 3.5 → 0.3, 0.7
    got = run("sce", Z(4), [TV1, TV2])
    assert torch.allclose(got, torch.tensor([2.4, 2.0, -1.0, 0.0]).double())
    # select_topk 0.5: variances (1, 4, 0, 0), two non-zero, keep the largest (entry 1)
    got = run("sce", Z(4), [TV1, TV2], select_topk=0.5)
    assert torch.allclose(got, torch.tensor([0.0, 2.0, 0.0, 0.0]).double())


def test_sce_with_one_model_says_what_it_reduces_to(paths):
    r = load_recipe({**paths, "merge_method": "sce"})
    assert any("SCE is meant for several models" in n for n in r.notes)


# ---- SLERP, NuSLERP, Model Stock ---------------------------------------------------------------

def naive_slerp(t, v0, v1):
    """The textbook formula on flattened float64 vectors."""
    a, b = v0.reshape(-1).double().numpy(), v1.reshape(-1).double().numpy()
    cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    if abs(cos) > 0.9995:
        return torch.from_numpy((1 - t) * a + t * b).reshape(v0.shape)
    th = math.acos(cos)
    out = (math.sin((1 - t) * th) * a + math.sin(t * th) * b) / math.sin(th)
    return torch.from_numpy(out).reshape(v0.shape)


def test_slerp_by_hand_and_against_the_textbook_formula():
    got = run("slerp", torch.tensor([1.0, 0.0]), [torch.tensor([0.0, 1.0])], t=0.5)
    assert torch.allclose(got, torch.tensor([math.sqrt(0.5)] * 2).double())
    colinear = run("slerp", torch.tensor([1.0, 2.0]), [torch.tensor([2.0, 4.0])], t=0.25)
    assert torch.allclose(colinear, torch.tensor([1.25, 2.5]).double())  # linear
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    for t in (0.0, 0.3, 1.0):
        assert torch.allclose(run("slerp", a, [b], t=t), naive_slerp(t, a, b), atol=1e-12)


def test_nuslerp_rows_columns_and_task_vectors():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    whole = run("nuslerp", a, [b], t=0.3)
    assert torch.allclose(whole, naive_slerp(0.3, a, b), atol=1e-12)
    rows = run("nuslerp", a, [b], t=0.3, flatten=False, row_wise=True)
    cols = run("nuslerp", a, [b], t=0.3, flatten=False)
    for j in range(7):  # row_wise: mergekit interpolates along dim 0, i.e. each column vector
        assert torch.allclose(rows[:, j], naive_slerp(0.3, a[:, j], b[:, j]), atol=1e-12)
    for i in range(5):
        assert torch.allclose(cols[i], naive_slerp(0.3, a[i], b[i]), atol=1e-12)
    # two models and a base: θ₀ + slerp of the task vectors at t = w₂ / (w₁ + w₂)
    base = torch.randn(5, 7, generator=g)
    two = run("nuslerp", base, [base + a, base + b], [1.0, 3.0])
    assert torch.allclose(two, base.double() + naive_slerp(0.75, a, b), atol=1e-12)


def test_model_stock_by_hand_and_needs_two_models(paths):
    base = Z(2)
    ortho = run("model_stock", base, [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])])
    assert torch.allclose(ortho, Z(2).double())  # cos 0 → t 0: the base
    same = run("model_stock", base, [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])])
    assert torch.allclose(same, torch.tensor([1.0, 0.0]).double())  # cos 1 → t 1: the average
    # cos 0.5 (60°), N = 2: t = 1 / 1.5; average (0.75, 0.433)
    w1, w2 = torch.tensor([1.0, 0.0]), torch.tensor([0.5, math.sqrt(0.75)])
    got = run("model_stock", base, [w1, w2])
    assert torch.allclose(got, (2 / 3) * (w1 + w2).double() / 2)
    with pytest.raises(RecipeError, match="model_stock merges at least 2 model"):
        load_recipe({**paths, "merge_method": "model_stock"})
    with pytest.raises(RecipeError, match="slerp merges exactly 1 model"):
        load_recipe({**paths, "models": paths["models"] * 2, "merge_method": "slerp"})


# ---- mergekit YAML -----------------------------------------------------------------------------

@pytest.fixture
def paths(tiny_pair):
    return {"base_model": str(tiny_pair[0]), "models": [{"model": str(tiny_pair[1])}]}


def test_mergekit_yaml_of_the_new_methods_loads_with_mergekit_names(tiny_pair):
    base, model = map(str, tiny_pair)
    r = load_recipe(f"""
merge_method: slerp
base_model: {base}
models: [{{model: {base}}}, {{model: {model}}}]
parameters:
  t:
    - {{filter: self_attn, value: [0, 0.5, 1]}}
    - {{filter: mlp, value: [1, 0.5, 0]}}
    - {{value: 0.5}}
dtype: bfloat16
""")
    assert r.merge_method == "slerp" and len(r.models) == 1 and r.out_dtype == "bfloat16"
    assert r.parameters["t"][2] == {"filter": None, "value": 0.5}
    assert any("base_model listed among models" in n for n in r.notes)
    r = load_recipe({"merge_method": "nuslerp", "models": [
        {"model": base, "parameters": {"weight": 0.4}},
        {"model": model, "parameters": {"weight": 0.6}}],
        "parameters": {"nuslerp_row_wise": True, "nuslerp_flatten": False}})
    assert r.base_model == base and r.parameters == {"t": 0.6, "row_wise": True, "flatten": False}
    r = load_recipe({"merge_method": "della", "base_model": base, "int8_mask": True,
                     "parameters": {"lambda": 0.9},
                     "models": [{"model": model, "parameters": {"weight": 1, "density": 0.4,
                                                                "epsilon": 0.1}}]})
    assert (r.parameters["density"], r.parameters["epsilon"], r.parameters["alpha"]) == (0.4, 0.1, 0.9)
    assert r.parameters["normalize"] is True and r.parameters["rescale"] is True  # mergekit's
    r = load_recipe({"merge_method": "breadcrumbs_ties", "base_model": base, "slices": [
        {"sources": [{"model": base, "layer_range": [0, 2]},
                     {"model": model, "layer_range": [0, 2], "parameters": {"gamma": 0.02}}]}]})
    assert r.parameters["gamma"] == 0.02 and len(r.models) == 1
    with pytest.raises(RecipeError, match="merges whole models"):
        load_recipe({"merge_method": "ties", "base_model": base, "slices": [
            {"sources": [{"model": base, "layer_range": [0, 1]},
                         {"model": model, "layer_range": [0, 1]}]}]})


# ---- layer schedules ---------------------------------------------------------------------------

def test_schedule_values_follow_mergekit():
    assert position("model.layers.0.mlp.up_proj.weight", 5) == 0
    assert position("model.layers.4.mlp.up_proj.weight", 5) == 1
    assert position("model.layers.3.self_attn.q_proj.weight", 5) == 0.75
    assert position("model.embed_tokens.weight", 5) == 0 == position("lm_head.weight", 5)
    assert position("model.layers.0.mlp.up_proj.weight", 1) == 1
    assert value_at([0.2, 0.9], "model.layers.2.mlp.w", 5, None) == pytest.approx(0.55)
    assert value_at([0.0, 0.5, 1.0], "model.layers.1.mlp.w", 5, None) == pytest.approx(0.25)
    assert value_at([0.0, 0.5, 1.0], "model.layers.3.mlp.w", 5, None) == pytest.approx(0.75)
    conds = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": 0.3}]
    assert value_at(conds, "model.layers.4.self_attn.q.weight", 5, 9) == 1.0
    assert value_at(conds, "model.layers.4.mlp.up.weight", 5, 9) == 0.3
    assert value_at(conds, "model.norm.weight", 5, 9) == 9  # no match: the default
    assert count_layers(["model.layers.11.x", "model.layers.2.y", "lm_head.weight"]) == 12


def test_a_schedule_is_validated_hashed_and_carded(paths):
    with pytest.raises(RecipeError, match=r"parameter 'alpha'.*out of range"):
        load_recipe({**paths, "merge_method": "task_arithmetic", "parameters": {"alpha": [0.2, 11]}})
    with pytest.raises(RecipeError, match=r"'alpha'\[0\].filter"):
        load_recipe({**paths, "merge_method": "task_arithmetic",
                     "parameters": {"alpha": [{"filter": 3, "value": 1}]}})
    with pytest.raises(RecipeError, match="'seed' must be int"):
        load_recipe({**paths, "merge_method": "dare", "parameters": {"seed": [0, 1]}})
    with pytest.raises(RecipeError, match="'temperature' must be float"):  # read once, globally
        load_recipe({**paths, "merge_method": "sens_merging", "parameters": {"temperature": [1, 2]}})
    with pytest.raises(RecipeError, match="trim: global"):
        load_recipe({**paths, "merge_method": "ties", "parameters": {"k": [0.5, 0.8],
                                                                      "trim": "global"}})
    a = load_recipe({**paths, "merge_method": "task_arithmetic", "parameters": {"alpha": [0.2, 0.9]}})
    b = load_recipe({**paths, "merge_method": "task_arithmetic", "parameters": {"alpha": [0.2, 0.8]}})
    assert a.hash != b.hash and a.parameters["alpha"] == [0.2, 0.9]


def test_a_gradient_merges_each_layer_at_its_own_value(paths, tmp_path):
    base, model = tensors(paths["base_model"]), tensors(paths["models"][0]["model"])
    r = load_recipe({**paths, "merge_method": "task_arithmetic",
                     "parameters": {"alpha": [{"filter": "mlp", "value": [0.0, 1.0]},
                                              {"value": 0.5}]}})
    res = merge(r, tmp_path / "m", progress=False)
    out = tensors(tmp_path / "m")
    n = count_layers(out)
    assert n >= 2
    for name, t in out.items():
        want_alpha = (position(name, n) if "mlp" in name else 0.5)
        want = base[name].double() + want_alpha * (model[name].double() - base[name].double())
        assert torch.allclose(t.double(), want, atol=1e-6), name
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Layer schedule: alpha by tensor name (mlp: [0.0, 1.0]; any other tensor: 0.5)" in card
    # TIES with a k schedule: each tensor trimmed at its own k (last layer keeps everything)
    r = load_recipe({**paths, "merge_method": "ties", "parameters": {"k": [0.9, 0.0]}})
    merge(r, tmp_path / "t", progress=False)
    out = tensors(tmp_path / "t")
    last = f"model.layers.{n - 1}.mlp.up_proj.weight"
    first = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(out[last], model[last])
    kept = (out[first] != base[first]).double().mean().item()
    assert kept == pytest.approx(0.1, abs=0.01)
    assert res.weights_hash


def test_a_per_model_weight_gradient_merges_each_layer_at_its_own_weight(tiny_pair, tmp_path):
    """mergekit's per-model ``weight: [0.2, 0.9]`` (it was refused: 'must be a finite number'):
    each tensor of layer i of L takes the weight interpolated at i / (L - 1); tensors outside the
    layers sit at position 0; the card writes the gradient."""
    base_dir, model_dir = tiny_pair
    yaml_text = f"""
merge_method: task_arithmetic
base_model: {base_dir}
models:
  - model: {model_dir}
    parameters: {{weight: [0.2, 0.9]}}
parameters: {{lambda: 1.0}}
"""
    r = load_recipe(yaml_text)
    assert r.models[0].weight == [0.2, 0.9]
    merge(r, tmp_path / "m", progress=False)
    base, model, out = tensors(base_dir), tensors(model_dir), tensors(tmp_path / "m")
    n = count_layers(out)
    for name, t in out.items():
        w = 0.2 + 0.7 * position(name, n)
        want = base[name].double() + w * (model[name].double() - base[name].double())
        assert torch.allclose(t.double(), want, atol=1e-6), name
    assert "weight over the layers: [0.2, 0.9]" in (tmp_path / "m" / "README.md").read_text()
    # filter conditions per model too, and every number checked
    load_recipe({"base_model": str(base_dir), "merge_method": "linear", "models": [
        {"model": str(model_dir), "parameters": {"weight": [{"filter": "mlp", "value": [0, 1]},
                                                           {"value": 0.5}]}}]})
    with pytest.raises(RecipeError, match=r"models\[0\].parameters.weight must be a finite"):
        load_recipe({"base_model": str(base_dir), "merge_method": "linear",
                     "models": [{"model": str(model_dir), "parameters": {"weight": [0.2, math.nan]}}]})


# ---- mergekit's further methods (hand-worked values; parity: benchmarks/mergekit_parity.py) ------

def test_nearswap_takes_system_2_where_it_is_near_by_hand():
    base, model = Z(3), torch.tensor([0.0005, 0.01, -0.1])
    out = run("nearswap", base, [model], t=0.001)
    # w = clamp(t / |d|, 0, 1): 1, 0.1, 0.01
    assert torch.allclose(out, torch.tensor([0.0005, 0.001, -0.001], dtype=torch.double))


def test_ram_and_ramplus_by_hand():
    base = Z(4)
    m1, m2 = torch.tensor([1.0, 0, 2, 0]), torch.tensor([3.0, 0, 0, 5])
    # entry 0: both changed it, averaged; entries 2 and 3: one model each, kept whole
    assert run("ram", base, [m1, m2]).tolist() == [2.0, 0.0, 2.0, 5.0]
    # each model: 1 shared, 1 unique entry: rho 1, capped at alpha 1, lambda 1 + 0.5
    assert run("ramplus_tl", base, [m1, m2], r=0.5, alpha=1.0).tolist() == [2.0, 0.0, 3.0, 7.5]
    assert run("ramplus_tl", base, [m1, m2], r=0.5, alpha=0.2).tolist() == pytest.approx([2.0, 0.0, 2.2, 5.5])


def test_karcher_and_multislerp_of_two_orthogonal_points_by_hand():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    half = torch.tensor([0.5 ** 0.5] * 2, dtype=torch.double)
    assert torch.allclose(run("karcher", a, [b]), half, atol=1e-6)  # base and model, equal
    assert torch.allclose(run("multislerp", a, [b], [1.0], base_in_mean=True, base_weight=1.0),
                          half, atol=1e-6)
    # with the base as the origin and one model, mergekit's multislerp gives that model
    assert torch.equal(run("multislerp", a, [b]), b.double())
    # task vectors from the base: b - a and -a - a... the Karcher mean of [-1, 1] and [-2, 0]
    out = run("karcher", a, [b, -a], base_in_mean=False)
    want = karcher_naive([torch.tensor([-1.0, 1.0]), torch.tensor([-2.0, 0.0])])
    assert torch.allclose(out, a.double() + want, atol=1e-5)


def karcher_naive(points, steps=200):
    """The Karcher mean by plain gradient steps on the circle (2-D points), scaled by the mean
    norm."""
    import math

    angles = [math.atan2(p[1], p[0]) for p in points]
    theta = sum(angles) / len(angles)
    for _ in range(steps):
        theta += sum(math.remainder(x - theta, 2 * math.pi) for x in angles) / len(angles)
    scale = sum(float(torch.linalg.vector_norm(p)) for p in points) / len(points)
    return torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.double) * scale


def test_arcee_fusion_keeps_the_changes_above_median_plus_1_5_iqr():
    import numpy as np

    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, 16, generator=g)
    model = base + 0.1 * torch.randn(8, 16, generator=g) ** 3
    out = run("arcee_fusion", base, [model])
    b, m = base.double().numpy(), model.double().numpy()
    sm = lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)  # noqa: E731
    p, q = sm(m) + 1e-8, sm(b) + 1e-8
    imp = np.abs(m - b) * (p * np.log(p / q)).sum(-1, keepdims=True)
    s = np.sort(imp.reshape(-1))
    q1, med, q3 = (s[int(f * (s.size - 1))] for f in (0.25, 0.5, 0.75))
    keep = imp >= med + 1.5 * (q3 - q1)
    assert 0 < keep.sum() < keep.size
    assert np.allclose(out.numpy(), np.where(keep, m, b))


def test_mergekit_configs_without_a_base_take_the_first_model_as_a_point(tiny_pair):
    base, model = map(str, tiny_pair)
    r = load_recipe({"merge_method": "multislerp",
                     "models": [{"model": base, "parameters": {"weight": 0.4}},
                                {"model": model, "parameters": {"weight": 0.6}}]})
    assert r.base_model == base and [m.model for m in r.models] == [model]
    assert r.parameters["base_in_mean"] is True and r.parameters["base_weight"] == 0.4
    assert r.models[0].weight == 0.6
    assert any("the first model is the base" in n for n in r.notes)


def _second_model(folder):
    """Another fine-tune of the tiny pair's base (conftest's tiny_pair: seed 0, δ 0.02): a third
    checkpoint of the pair's architecture."""
    return make_pair(folder, "tiny", seed=0, delta_std=0.02, delta_seed=5)[1]


def test_per_model_density_of_a_mergekit_ties_recipe_trims_each_model_at_its_own(tiny_pair,
                                                                                 tmp_path):
    """mergekit's per-model ``density`` (refused before: 'takes one density for the whole
    merge'): each model's task vector keeps its own share (0.3 and, from the merge's parameters,
    0.6), the disjoint mean then weighs them; checked against a naive TIES per tensor."""
    base_dir, model_dir = tiny_pair
    other = _second_model(tmp_path / "other")
    r = load_recipe(f"""
merge_method: ties
base_model: {base_dir}
models:
  - model: {model_dir}
    parameters: {{weight: 1.0, density: 0.3}}
  - model: {other}
    parameters: {{weight: 0.5}}
parameters: {{density: 0.6, normalize: true, lambda: 1.0}}
""")
    assert r.models[0].parameters["k"] == 0.7 and "k" not in r.models[1].parameters
    assert r.parameters["k"] == 0.4 and list(r.merge_parameters["k"]) == [0.7, 0.4]
    merge(r, tmp_path / "m", progress=False)
    base, m1, m2 = tensors(base_dir), tensors(model_dir), tensors(other)
    out = tensors(tmp_path / "m")

    def keep_top(d, density):  # keep floor(density n) of the largest magnitudes (mergekit)
        flat = d.reshape(-1)
        n_keep = max(1, int(density * flat.numel()))  # mergekit: max(1, floor(density·n))
        idx = torch.argsort(flat.abs(), descending=True, stable=True)[:n_keep]
        kept = torch.zeros_like(flat)
        kept[idx] = flat[idx]
        return kept.reshape(d.shape)

    for name, t in out.items():
        b = base[name].double()
        t1 = keep_top(m1[name].double() - b, 0.3)
        t2 = 0.5 * keep_top(m2[name].double() - b, 0.6)
        sign = torch.where(t1 + t2 >= 0, 1.0, -1.0).double()
        a1, a2 = (t1.sign() == sign) & (t1 != 0), (t2.sign() == sign) & (t2 != 0)
        den = 1.0 * a1 + 0.5 * a2
        want = b + torch.where(den > 0, (t1 * a1 + t2 * a2) / den.clamp(min=1e-300), 0.0)
        assert torch.allclose(t.double(), want, atol=1e-6), name
    card = (tmp_path / "m" / "README.md").read_text()
    assert "(weight 1, k 0.7)" in card and "replaces it for that model" in card


def test_per_model_values_are_checked_and_refused_where_a_method_takes_one(tiny_pair, tmp_path):
    base_dir, model_dir = map(str, tiny_pair)
    other = str(_second_model(tmp_path / "other"))

    def recipe(method, p1, p2, params=None):
        return {"merge_method": method, "base_model": base_dir, "parameters": params or {},
                "models": [{"model": model_dir, "parameters": p1},
                           {"model": other, "parameters": p2}]}

    # della: each model's density ± epsilon checked
    with pytest.raises(RecipeError, match=r"density 0.95, epsilon 0.1 for models\[1\]"):
        load_recipe(recipe("della", {"density": 0.5}, {"density": 0.95}, {"epsilon": 0.1}))
    # a parameter the method takes once: different values refused, naming both
    with pytest.raises(RecipeError, match="takes one lambda for the whole merge"):
        load_recipe(recipe("ties", {"lambda": 0.5}, {"lambda": 1.0}))
    # l2s_kit's own names per model, and a schedule per model
    r = load_recipe(recipe("dare_ties", {"p": 0.2}, {"p": [0.1, 0.5], "k": 0.3}))
    assert list(r.merge_parameters["p"]) == [0.2, [0.1, 0.5]]
    assert list(r.merge_parameters["k"]) == [0.0, 0.3]
    with pytest.raises(RecipeError, match=r"models\[0\].parameters: unknown parameter 'alpha'; "
                                          r"per-model parameters of ties: weight, k \(mergekit: density\)"):
        load_recipe(recipe("ties", {"alpha": 0.5}, {}))
    with pytest.raises(RecipeError, match=r"models\[1\].parameters: parameter 'density' = 1.5"):
        load_recipe(recipe("breadcrumbs", {"density": 0.5}, {"density": 1.5}))
    # in memory, a PerModel value merges as a recipe with per-model values does
    from l2s_kit.merging.registry import PerModel

    g = torch.Generator().manual_seed(3)
    b, x, y = (torch.randn(4, 6, generator=g) for _ in range(3))
    got = merge_state_dicts("breadcrumbs", {"w": b}, [{"w": x}, {"w": y}],
                            density=PerModel([0.5, 1.0]), gamma=0.0)["w"]
    from l2s_kit.merging.methods.mergekit_family import magnitude_outliers

    want = b.double() + magnitude_outliers((x - b).double(), 0.5, 0.0) + (y - b).double()
    assert torch.allclose(got.double(), want, atol=1e-6)


def test_ties_normalize_false_sums_the_agreeing_entries_by_hand():
    """mergekit's ``ties`` with ``normalize: false`` (its bio-merge example): the weighted
    agreeing entries summed, not averaged."""
    m1, m2 = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 2.0, -1.0])
    # weighted: [1, -2, 3] and [1, 1, -0.5]; sum [2, -1, 2.5]: signs +, -, +
    summed = run("ties", Z(3), [m1, m2], [1.0, 0.5], k=0.0, normalize=False)
    assert summed.tolist() == [2.0, -2.0, 3.0]
    mean = run("ties", Z(3), [m1, m2], [1.0, 0.5], k=0.0)
    assert mean.tolist() == pytest.approx([2.0 / 1.5, -2.0, 3.0])


def test_passthrough_stacks_the_slices_layers_in_order(tiny_pair, tmp_path):
    """mergekit's passthrough over slices (partial slices were refused): layers 0..1 of System 1
    then layer 1 of System 2 (its o_proj scaled to 0) make a 3-layer model; the embedding is the
    first slice's model's, the final norm the last's; config, card and recipe say so."""
    import json

    base_dir, model_dir = tiny_pair
    r = load_recipe(f"""
slices:
  - sources:
    - model: {base_dir}
      layer_range: [0, 2]
  - sources:
    - model: {model_dir}
      layer_range: [1, 2]
      parameters:
        scale:
          - filter: o_proj
            value: 0.0
          - value: 1.0
merge_method: passthrough
""")
    assert r.base_model == str(base_dir) and [m.model for m in r.models] == [str(model_dir)]
    merge(r, tmp_path / "m", progress=False)
    base, model, out = tensors(base_dir), tensors(model_dir), tensors(tmp_path / "m")
    assert count_layers(out) == 3
    for name, t in out.items():
        if ".layers.2." in name:
            src = model[name.replace(".layers.2.", ".layers.1.")]
            want = torch.zeros_like(src) if "o_proj" in name else src
        elif "embed" in name:
            want = base[name]
        elif "layers" in name:
            want = base[name]
        else:  # the final norm: the last slice's model's
            want = model[name]
        assert torch.equal(t, want), name
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and len(cfg["layer_types"]) == 3
    card = (tmp_path / "m" / "README.md").read_text()
    assert (f"stacked layers 0..1 of {shown_path(base_dir)} + layers 1..1 of "
            f"{shown_path(model_dir)}: 3 layers") in card
    assert load_recipe(tmp_path / "m" / "l2s_recipe.yaml").hash == r.hash  # it loads back


def test_passthrough_refuses_what_it_cannot_stack(tiny_pair, tmp_path):
    base_dir, model_dir = map(str, tiny_pair)

    def stack(*sources, **top):
        return {"merge_method": "passthrough", **top,
                "slices": [{"sources": list(s)} for s in sources]}

    with pytest.raises(RecipeError, match="stacks layers: give mergekit's slices"):
        load_recipe({"merge_method": "passthrough", "base_model": base_dir,
                     "models": [{"model": model_dir}]})
    with pytest.raises(RecipeError, match=r"slices\[0\]: passthrough copies layers, so a slice "
                                          r"has one source \(got 2\)"):
        load_recipe(stack([{"model": base_dir, "layer_range": [0, 2]},
                           {"model": model_dir, "layer_range": [0, 2]}]))
    with pytest.raises(RecipeError, match=r"layer_range must be \[first, end\]"):
        load_recipe(stack([{"model": base_dir, "layer_range": [2, 1]}]))
    r = load_recipe(stack([{"model": base_dir, "layer_range": [0, 3]}]))
    with pytest.raises(RecipeError, match=r"slices\[0\]: layer_range \[0, 3\] is not within "
                                          r".*'s 2 layers \(\[0, 2\]\)"):
        merge(r, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
    # a merge of models over partial slices names passthrough
    with pytest.raises(RecipeError, match="stacked by merge_method: passthrough"):
        load_recipe({**stack([{"model": base_dir, "layer_range": [0, 1]}],
                             [{"model": base_dir, "layer_range": [1, 2]}]), "merge_method": "ties"})


def test_mergekit_trim_keeps_floor_density_n_and_a_density_recipe_picks_it(tiny_pair):
    """mergekit keeps floor(density·n) entries, topk n − floor(k·n): 10 entries at density 0.25
    are 2 and 3. A mergekit recipe giving density trims as mergekit (its parity is then bit for
    bit); l2s_kit's own k keeps topk."""
    from l2s_kit.merging.methods.sparsify import Trimmer, trim_rank

    assert trim_rank(10, 0.75, "mergekit") == (9, 2) and trim_rank(10, 0.75, "topk") == (8, 3)
    assert trim_rank(10, 0.95, "mergekit") == (10, 1)  # floor(0.5) = 0, but one is kept
    assert trim_rank(10, 0.0, "mergekit") == (0, 10)
    x = torch.tensor([0.1, -0.9, 0.3, 0.8, -0.2, 0.05, 0.6, -0.7, 0.4, 0.0], dtype=torch.float64)
    assert Trimmer.for_tensor(x, 0.75, "mergekit")(x).tolist() == \
        [0.0, -0.9, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert Trimmer.for_tensor(x, 0.95, "mergekit")(x).abs().sum() == 0.9
    base, model = map(str, tiny_pair)
    r = load_recipe({"merge_method": "ties", "base_model": base,
                     "models": [{"model": model, "parameters": {"density": 0.2}}]})
    assert r.parameters["trim"] == "mergekit" and r.models[0].parameters == {} and \
        r.parameters["k"] == 0.8
    assert load_recipe({"merge_method": "ties", "base_model": base, "models": [model],
                        "parameters": {"k": 0.8}}).parameters["trim"] == "topk"
