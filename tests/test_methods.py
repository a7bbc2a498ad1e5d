"""Every method against the hand-worked numbers of the METHODS notes, plus registry-wide contracts."""

from __future__ import annotations

import pytest
import torch

from l2s_kit.errors import RecipeError
from l2s_kit.merging import get_method, list_methods
from l2s_kit.merging.methods.sparsify import (
    DropMask,
    Trimmer,
    dare,
    disjoint_mean,
    elect_sign,
    floor_fraction,
    kth_smallest,
    trim_rank,
)

T = torch.tensor


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64),
                          torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


# -- hand checks -------------------------------------------------------------------------------
def test_average_hand_check():
    assert close(get_method("average")(T([1.0, 1.0]), [T([3.0, -1.0])]), [2.0, 0.0])


def test_task_arithmetic_hand_check():
    out = get_method("task_arithmetic")(T([1.0, 1.0]), [T([3.0, -1.0])], alpha=0.7)
    assert close(out, [2.4, -0.4])


def test_task_arithmetic_is_a_sum_not_a_mean():
    out = get_method("task_arithmetic")(T([0.0]), [T([1.0]), T([2.0])], alpha=1.0)
    assert close(out, [3.0])


def test_ties_two_models_k0_hand_check():
    base = torch.zeros(3)
    out = get_method("ties")(base, [T([1.0, -2.0, 3.0]), T([-2.0, 1.0, 1.0])], k=0.0, alpha=1.0)
    assert close(out, [-2.0, -2.0, 2.0])


DELTA10 = T([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0])


def test_trim_topk_keeps_two_of_ten():
    trimmed = Trimmer.for_tensor(DELTA10, 0.8, "topk")(DELTA10)
    assert close(trimmed, [0, 0, 0, 0, 0, 0, 0, 0, 0.9, -1.0])


def test_trim_reference_rule_keeps_one_more():
    trimmed = Trimmer.for_tensor(DELTA10, 0.8, "reference")(DELTA10)
    assert close(trimmed, [0, 0, 0, 0, 0, 0, 0, -0.8, 0.9, -1.0])


def test_ties_single_model_is_base_plus_alpha_trim():
    base = torch.ones(10)
    out = get_method("ties")(base, [base + DELTA10], k=0.8, alpha=0.5)
    assert close(out, 1 + 0.5 * T([0, 0, 0, 0, 0, 0, 0, 0, 0.9, -1.0]))


def test_ties_zero_sum_elects_plus():
    assert close(elect_sign(torch.stack([T([1.0, 2.0]), T([-1.0, -3.0])])), [1.0, -1.0])
    # where the sum is exactly 0 the positive entries are averaged
    out = disjoint_mean([T([1.0]), T([-1.0])], [1.0, 1.0])
    assert close(out, [1.0])
    assert close(disjoint_mean([T([1.0]), T([-1.0])], [1.0, 1.0], zero_sign=-1.0), [-1.0])


def test_dare_fixed_mask_hand_check():
    assert close(dare(T([2.0, 4.0]), T([False, True]), 0.5), [0.0, 8.0])


def test_dare_is_unbiased_and_drops_p():
    delta = torch.linspace(-1, 1, 500)
    runs = [dare(delta, DropMask(0.3, s).keep(500), 0.3) for s in range(4000)]
    mean = torch.stack(runs).mean(0)
    assert (mean - delta).abs().max() < 0.06
    dropped = sum(int((r == 0).sum()) for r in runs) / (500 * len(runs))
    assert abs(dropped - 0.3) < 0.005


def test_dare_mask_depends_on_name_model_and_seed_not_on_blocks():
    m = DropMask(0.5, seed=7, name="a", model_index=0)
    whole = m.keep(3_000_000)
    # any cut into pieces gives the same mask
    parts = torch.cat([m.keep(1_000_001, 0), m.keep(1_999_999, 1_000_001)])
    assert torch.equal(whole, parts)
    assert torch.equal(whole, DropMask(0.5, 7, "a", 0).keep(3_000_000))
    for other in (DropMask(0.5, 8, "a", 0), DropMask(0.5, 7, "b", 0), DropMask(0.5, 7, "a", 1)):
        assert not torch.equal(whole[:1000], other.keep(1000))


# -- primitives ---------------------------------------------------------------------------------
def test_floor_fraction_uses_the_decimal_value():
    assert floor_fraction(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996 in binary
    assert floor_fraction(0.8, 10) == 8
    assert trim_rank(10, 0.8, "topk") == (9, 2)
    assert trim_rank(10, 0.8, "reference") == (8, -1)
    assert trim_rank(10, 0.0, "topk") == (0, 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_smallest_equals_kthvalue(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, generator=g, dtype=dtype)
    x[::7] = 0.25  # many exact ties
    for rank in (1, 17, 5000, 9999, 10_000):
        expected = float(x.abs().kthvalue(rank).values)

        def blocks():
            return iter(x.split(1234))

        assert kth_smallest(blocks, rank) == expected


def test_streamed_trim_equals_whole_tensor_trim_with_ties():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-3, 4, (5000,), generator=g).float()  # 7 values: ties everywhere
    for rule in ("topk", "reference"):
        whole = Trimmer.for_tensor(x, 0.37, rule)(x)
        streamed_trimmer = Trimmer.from_blocks(lambda: iter(x.split(333)), x.numel(), 0.37, rule)
        streamed = torch.cat([streamed_trimmer(b) for b in x.split(333)])
        assert torch.equal(whole, streamed)
        if rule == "topk":
            assert int((whole != 0).sum()) == 5000 - floor_fraction(0.37, 5000)


# -- registry ------------------------------------------------------------------------------------
def test_unknown_method_lists_the_available_ones():
    with pytest.raises(RecipeError, match="available: .*task_arithmetic.*ties"):
        get_method("tie")


def test_aliases_resolve():
    assert get_method("dare_linear").name == "dare"
    assert get_method("linear").name == "average"


def test_every_method_has_a_paper_link():
    for m in list_methods():
        assert m.paper.startswith("https://"), m.name


@pytest.mark.parametrize("step", [7, 1 << 20])
def test_trim_keeps_the_first_ties_in_stream_order_like_a_naive_reference(step, monkeypatch):
    """topk keeps exactly n - floor(k·n) entries: all above the threshold, then the ties at it
    in stream order; a naive reference (a stable sort by magnitude) agrees, whether the ties
    are counted in chunks of 7 entries or of 2^20, whole or streamed in blocks."""
    monkeypatch.setattr(Trimmer._tie_cut, "__defaults__", (step,))
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-4, 5, (4000,), generator=g).float()
    for k in (0.3, 0.55, 0.8):
        keep = 4000 - floor_fraction(k, 4000)
        order = sorted(range(4000), key=lambda i: (-abs(float(x[i])), i))  # ties: earlier first
        expect = torch.zeros_like(x)
        expect[order[:keep]] = x[order[:keep]]
        assert torch.equal(Trimmer.for_tensor(x, k, "topk")(x), expect), k
        streamed = Trimmer.from_blocks(lambda: iter(x.split(333)), 4000, k, "topk")
        assert torch.equal(torch.cat([streamed(b) for b in x.split(333)]), expect), k


# -- contracts over every registered method --------------------------------------------------------
SEEDED = {"p": 0.3}


def _params(m):
    return {k: v for k, v in SEEDED.items() if k in m.params}


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(16, 24, generator=g)
    models = [base + 0.1 * torch.randn(16, 24, generator=g) for _ in range(2)]
    return base, models


def _fit(m, models):
    """As many models as the method merges (two by default; SLERP one, Model Stock two+)."""
    lo, hi = m.n_models
    return models[:hi] if hi is not None and len(models) > hi else models


@pytest.mark.parametrize("name", [m.name for m in list_methods()])
def test_contract_shape_dtype_finite(name, tensors):
    m = get_method(name)
    base, models = tensors
    models = _fit(m, models)
    out = m(base, models, [1.0] * len(models), **_params(m))
    assert out.shape == base.shape and out.dtype == base.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [m.name for m in list_methods()])
def test_contract_self_merge_gives_base(name, tensors):
    m = get_method(name)
    base, _ = tensors
    n = m.n_models[0]
    out = m(base, [base.clone() for _ in range(n)], [1.0] * n, **_params(m))
    assert torch.equal(out, base)


@pytest.mark.parametrize("name", [m.name for m in list_methods()])
def test_contract_fixed_seed_repeats_bit_for_bit(name, tensors):
    m = get_method(name)
    base, models = tensors
    models = _fit(m, models)
    a = m(base, models, [1.0] * len(models), **_params(m))
    b = m(base, models, [1.0] * len(models), **_params(m))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["average", "task_arithmetic", "ties"])
def test_contract_order_symmetric_methods_ignore_order(name, tensors):
    m = get_method(name)
    base, models = tensors
    a = m(base, models, [1.0, 1.0])
    b = m(base, models[::-1], [1.0, 1.0])
    assert torch.allclose(a, b, atol=1e-6)


def test_dare_seed_changes_the_result(tensors):
    m = get_method("dare")
    base, models = tensors
    assert not torch.equal(m(base, models, [1, 1], p=0.5, seed=0),
                           m(base, models, [1, 1], p=0.5, seed=1))


def test_parameter_schema_comes_from_the_signature():
    ties = get_method("ties")
    assert set(ties.params) == {"k", "alpha", "trim", "normalize"}
    assert ties.params["trim"].choices == ("topk", "reference", "global", "mergekit")
    assert ties.params["k"].default == 0.8
    with pytest.raises(RecipeError, match="out of range"):
        ties.resolve({"k": 1.0}, "test")


def test_select_equals_kthvalue_on_large_tensors_with_ties():
    from l2s_kit.merging.methods.sparsify import order_statistic

    g = torch.Generator().manual_seed(4)
    # bf16 differences: few distinct magnitudes, thousands of ties at any rank
    a = (torch.randn(1_000_000, generator=g).bfloat16().float()
         - torch.randn(1_000_000, generator=g).bfloat16().float()).abs()
    for rank in (1, 1000, 500_000, 800_001, 999_999, 1_000_000):
        t = float(a.kthvalue(rank).values)
        assert order_statistic(a, rank) == (t, int((a < t).sum()), int((a == t).sum()))
