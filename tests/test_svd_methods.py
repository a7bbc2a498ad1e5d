"""SVD primitives against torch.linalg.svd, Twin and LoRE against METHODS' hand-worked numbers, and
the engine's contracts for whole-matrix methods (streamed merge == in memory == naive per tensor)."""

from __future__ import annotations

import warnings

import pytest
import torch

from l2s_kit.io import Checkpoint
from l2s_kit.merging import engine, get_method, load_recipe, merge, merge_in_memory
from l2s_kit.merging.methods import lowrank
from l2s_kit.merging.methods.svd import AVERAGE_WARNING, lore_decompose, twin_rank

T = torch.tensor


def known_matrix(m, n, spectrum, seed=0, dtype=torch.float64):
    """U diag(spectrum) Vᵀ with random orthonormal U (m, k), V (n, k): a known spectrum."""
    g = torch.Generator().manual_seed(seed)
    k = len(spectrum)
    u = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=dtype)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=dtype)).Q
    return (u * torch.as_tensor(spectrum, dtype=dtype)) @ v.T


# -- primitives ------------------------------------------------------------------------------------
def test_exact_svd_equals_torch_and_finds_a_known_rank():
    x = known_matrix(60, 40, [5.0, 3.0, 2.0, 1.0, 0.5], seed=1).float()
    d = lowrank.svd(x)
    assert d.method == "exact" and d.error_bound == 0.0
    assert torch.allclose(d.S, torch.linalg.svdvals(x), atol=1e-5)
    assert torch.allclose(d.S[:5], T([5.0, 3.0, 2.0, 1.0, 0.5]), atol=1e-5)
    assert float(d.S[5:].max()) < 1e-5  # rank 5
    assert abs(d.energy - (25 + 9 + 4 + 1 + 0.25)) < 1e-3
    assert torch.allclose(d.matrix(), x, atol=1e-5)


def test_low_rank_is_the_eckart_young_truncation():
    x = known_matrix(30, 20, [4.0, 2.0, 1.0, 0.5], seed=2)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    expected = (u[:, :2] * s[:2]) @ vh[:2]
    assert torch.allclose(lowrank.low_rank(x, 2, "exact"), expected, atol=1e-12)
    # the error is the tail of the spectrum
    assert abs(float(torch.linalg.matrix_norm(x - expected)) - (1 + 0.25) ** 0.5) < 1e-12


def test_svt_soft_thresholds_the_singular_values():
    x = known_matrix(25, 15, [3.0, 1.5, 0.8, 0.2], seed=3)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    got = lowrank.svt(x, 1.0)
    assert torch.allclose(torch.linalg.svdvals(got)[:3], T([2.0, 0.5, 0.0], dtype=x.dtype),
                          atol=1e-10)
    assert torch.allclose(got, (u[:, :2] * (s[:2] - 1)) @ vh[:2], atol=1e-10)
    assert torch.allclose(lowrank.svt(x, 0.5, relative=True), lowrank.svt(x, 1.5), atol=1e-10)
    assert torch.allclose(lowrank.svt(T([[4.0]]), 1.0), T([[3.0]]))  # 1×1: soft threshold
    assert torch.allclose(lowrank.svt(T([[-0.5]]), 1.0), T([[0.0]]))


@pytest.mark.parametrize("shape", [(1200, 200), (200, 1200)])
def test_randomized_svd_within_its_stated_error(shape):
    # a decaying spectrum (σⱼ = 0.9^j, full rank) as trained task vectors have
    k = min(shape)
    spectrum = [0.9**j for j in range(k)]
    x = known_matrix(*shape, spectrum, seed=4).float()
    d = lowrank.svd(x, 20, "randomized")
    assert d.method == "randomized"
    true = torch.as_tensor(spectrum[:20])
    err = (true - d.S.double()).abs()
    assert float(err.max()) <= d.error_bound + 1e-5  # the a-posteriori bound holds
    assert float((d.S.double() - true).max()) <= 1e-5  # σ̂ⱼ never exceed σⱼ
    assert float((err / true).max()) < 1e-3  # power iterations make the top values accurate
    assert abs(d.energy - sum(s * s for s in spectrum)) < 1e-3
    # the rank-20 approximation is as good as the exact truncation, nearly
    exact = lowrank.low_rank(x, 20, "exact")
    rand = lowrank.low_rank(x, 20, "randomized")
    best = float(torch.linalg.matrix_norm(x - exact))
    assert float(torch.linalg.matrix_norm(x - rand)) < best * 1.001


def test_randomized_svd_of_an_exactly_low_rank_matrix_is_exact():
    x = known_matrix(500, 400, [9.0, 4.0, 1.0], seed=5).float()
    d = lowrank.svd(x, 3, "randomized")
    assert torch.allclose(d.S, T([9.0, 4.0, 1.0]), atol=1e-4)
    assert d.error_bound < 1e-2
    assert torch.allclose(d.matrix(), x, atol=1e-4)


def test_randomized_svd_repeats_bit_for_bit():
    x = torch.randn(400, 300, generator=torch.Generator().manual_seed(6))
    a, b = lowrank.svd(x, 10, "randomized"), lowrank.svd(x, 10, "randomized")
    assert torch.equal(a.S, b.S) and torch.equal(a.U, b.U)


def test_auto_chooses_by_cost_and_rank():
    assert lowrank.svd_algorithm((3584, 3584), "auto", 358) == "exact"  # 4.6e10 ≤ 2^36
    assert lowrank.svd_algorithm((18944, 3584), "auto", 358) == "randomized"
    assert lowrank.svd_algorithm((152064, 3584), "auto", 64) == "randomized"
    assert lowrank.svd_algorithm((152064, 3584), "auto", 3000) == "exact"  # rank near min: no saving
    assert lowrank.svd_algorithm((152064, 3584), "auto", None) == "exact"  # full spectrum
    assert lowrank.svd_algorithm((100, 100), "randomized", 10) == "randomized"
    with pytest.raises(ValueError, match="one of"):
        lowrank.svd_algorithm((10, 10), "fast", 1)


def test_zero_matrix_gives_zeros():
    d = lowrank.svd(torch.zeros(30, 20), 5, "randomized")
    assert d.S.abs().sum() == 0 and d.matrix().abs().sum() == 0


# -- Twin ------------------------------------------------------------------------------------------
def test_twin_hand_check():
    out = get_method("twin")(torch.zeros(2, 2), [torch.diag(T([3.0, 1.0]))], lam=0.5, rank=1)
    assert torch.allclose(out, T([[3.0, 0.0], [0.0, 0.5]]))


def test_twin_rank_rule():
    assert twin_rank((100, 40), 0.9) == 4
    assert twin_rank((100, 40), 0.9, rank=7) == 7
    assert twin_rank((100, 40), 0.9, rank=70) == 40
    assert twin_rank((10, 10), 0.7) == 3  # floor on the decimal value (0.3 · 10 = 3)


def test_twin_equals_its_formula_on_two_models_and_keeps_vectors_whole():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(12, 9, generator=g, dtype=torch.float64)
    models = [base + torch.randn(12, 9, generator=g, dtype=torch.float64) for _ in range(2)]
    lam, r = 0.3, 2
    shared = base + lam * sum(m - base for m in models)

    def trunc(v):
        u, s, vh = torch.linalg.svd(v, full_matrices=False)
        return (u[:, :r] * s[:r]) @ vh[:r]

    expected = shared + sum(trunc(m - shared) for m in models) / 2
    got = get_method("twin")(base, models, [1.0, 1.0], lam=lam, rank=r, svd="exact")
    assert torch.allclose(got, expected, atol=1e-12)
    b1, m1 = base[0], [m[0] for m in models]  # a 1-D tensor: exclusive vectors kept whole
    s1 = b1 + lam * sum(m - b1 for m in m1)
    assert torch.allclose(get_method("twin")(b1, m1, [1.0, 1.0], lam=lam),
                          s1 + sum(m - s1 for m in m1) / 2, atol=1e-12)


def test_twin_randomized_close_to_exact_on_a_low_rank_delta():
    base = torch.randn(600, 200, generator=torch.Generator().manual_seed(8))
    delta = known_matrix(600, 200, [2.0 * 0.8**j for j in range(200)], seed=9).float()
    a = get_method("twin")(base, [base + delta], lam=0.3, rank=10, svd="exact")
    b = get_method("twin")(base, [base + delta], lam=0.3, rank=10, svd="randomized")
    assert float((a - b).abs().max()) < 1e-3


# -- LoRE ------------------------------------------------------------------------------------------
def test_lore_hand_check_soft_thresholding_converges():
    hat, deltas = lore_decompose([T([[4.0]]), T([[0.0]]), T([[-1.0]])], tau=1.0, iters=500,
                                 tol=1e-9)
    assert abs(float(hat)) < 1e-5
    assert torch.allclose(torch.cat([d.reshape(1) for d in deltas]), T([3.0, 0.0, 0.0]), atol=1e-5)


def test_lore_stops_at_iters():
    one, _ = lore_decompose([T([[4.0]]), T([[0.0]]), T([[-1.0]])], tau=1.0, iters=1)
    two, _ = lore_decompose([T([[4.0]]), T([[0.0]]), T([[-1.0]])], tau=1.0, iters=2)
    assert torch.allclose(one, T([[1.0]])) and torch.allclose(two, T([[2.0 / 3.0]]))


def test_lore_l2s_form_and_parity_with_task_arithmetic_at_tau_0():
    g = torch.Generator().manual_seed(10)
    s1 = torch.randn(20, 16, generator=g, dtype=torch.float64)
    s2 = s1 + 0.1 * torch.randn(20, 16, generator=g, dtype=torch.float64)
    lore, ta = get_method("lore"), get_method("task_arithmetic")
    for alpha in (0.2, 0.7):
        assert torch.allclose(lore(s1, [s2], alpha=alpha, tau=0.0), ta(s1, [s2], alpha=alpha),
                              atol=1e-12)
        # τ > 0: θ = mean + (1 − 2α) · SVT_τ((θ₁ − θ₂)/2)
        expected = (s1 + s2) / 2 + (1 - 2 * alpha) * lowrank.svt((s1 - s2) / 2, 0.05)
        assert torch.allclose(lore(s1, [s2], alpha=alpha, tau=0.05), expected, atol=1e-12)
    # τ relative to each matrix's σ₁
    half = (s1 - s2) / 2
    rel = (s1 + s2) / 2 + 0.6 * lowrank.svt(half, 0.3 * float(torch.linalg.svdvals(half)[0]))
    assert torch.allclose(lore(s1, [s2], alpha=0.2, tau=0.3, tau_relative=True), rel, atol=1e-12)
    # the threshold makes the merged task vector low-rank
    merged = lore(s1, [s2], alpha=0.2, tau=0.15)
    assert int((torch.linalg.svdvals(merged - (s1 + s2) / 2) > 1e-9).sum()) < 16


def test_lore_two_equal_weights_is_the_average_and_warns():
    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    with pytest.warns(UserWarning, match="plain averaging"):
        out = get_method("lore")(a, [b], alpha=0.5, tau=0.3)
    assert torch.allclose(out, (a + b) / 2, atol=1e-6)
    with pytest.warns(UserWarning, match="plain averaging"):
        out = get_method("lore")(a, [a + 1, b], [1.0, 1.0], include_base=False, tau=0.3)
    assert torch.allclose(out, (a + 1 + b) / 2, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("lore")(a, [b], alpha=0.2, tau=0.3)  # no warning


def test_lore_vectors_get_the_plain_mean():
    out = get_method("lore")(T([1.0, 1.0]), [T([3.0, -1.0])], alpha=0.2, tau=0.5)
    assert torch.allclose(out, T([2.0, 0.0]))


def test_lore_recipe_notes_the_averaging_case(tiny_pair, tmp_path):
    base, model = tiny_pair
    r = load_recipe({"merge_method": "lore", "base_model": str(base),
                     "models": [{"model": str(model)}], "parameters": {"alpha": 0.5}})
    assert AVERAGE_WARNING in r.notes
    with pytest.warns(UserWarning, match="plain averaging"):
        out = merge(r, tmp_path / "avg", progress=False)
    assert f"- {AVERAGE_WARNING}" in (out / "README.md").read_text()  # the model card says so
    r = load_recipe({"merge_method": "lore", "base_model": str(base),
                     "models": [{"model": str(model)}], "parameters": {"alpha": 0.3}})
    assert AVERAGE_WARNING not in r.notes


# -- the engine ------------------------------------------------------------------------------------
def naive(base_dir, model_dir, method, **params):
    """Whole tensors, one at a time, straight through the method (tied lm_head dropped)."""
    b, m = Checkpoint(base_dir), Checkpoint(model_dir)
    out = {}
    for n in b.names:
        rows = min(b.info(n).shape[0], m.info(n).shape[0]) if b.info(n).shape else None
        bt, mt = b.read(n).float(), m.read(n).float()
        merged = get_method(method)(bt[:rows], [mt[:rows]], **params)
        out[n] = torch.cat([merged, mt[rows:]]) if mt.shape[0] > (rows or 0) else merged
    return out


SVD_CASES = [("twin", {"lam": 0.3, "mask_rate": 0.8}), ("lore", {"alpha": 0.3, "tau": 0.01}),
             ("twin", {"lam": 0.5, "rank": 3, "svd": "randomized"})]


@pytest.mark.parametrize("method,params", SVD_CASES)
def test_streamed_svd_merge_equals_naive_and_in_memory(tiny_pair, method, params, tmp_path,
                                                       monkeypatch):
    base, model = tiny_pair
    recipe = {"merge_method": method, "base_model": str(base), "models": [{"model": str(model)}],
              "parameters": params}
    disk = Checkpoint(merge(recipe, tmp_path / "out", progress=False, shard_size=25_000))
    expected = naive(base, model, method, **params)
    assert sorted(disk.names) == sorted(expected)
    for n, e in expected.items():
        assert torch.allclose(disk.read(n), e, atol=1e-6), n
    monkeypatch.setattr(engine, "BLOCK_ELEMS", 96)  # would cut matrices into rows: must not
    mem = merge_in_memory(recipe)
    assert all(torch.equal(mem[n], disk.read(n)) for n in mem)


def test_svd_merge_of_a_pair_with_extra_rows(sharded_pair):
    base, model = sharded_pair
    sd = engine.merge_state_dicts("twin", base, [model], lam=0.3, rank=4)
    emb_b = Checkpoint(base).read("model.embed_tokens.weight")
    emb_m = Checkpoint(model).read("model.embed_tokens.weight")
    shared = emb_b.shape[0]
    assert sd["model.embed_tokens.weight"].shape == emb_m.shape
    assert torch.equal(sd["model.embed_tokens.weight"][shared:], emb_m[shared:])
    expected = get_method("twin")(emb_b, [emb_m[:shared]], lam=0.3, rank=4)
    assert torch.allclose(sd["model.embed_tokens.weight"][:shared], expected, atol=1e-6)
