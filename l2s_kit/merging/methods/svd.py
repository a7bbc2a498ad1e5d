"""The SVD family: Twin-Merging (its SVD merge, no router) and LoRE-Merging.

Both are registered with ``elementwise=False``: the engine hands them whole tensors (a 2-D weight
matrix (m, n) at a time, never a block of rows), and they are composed from the primitives of
:mod:`l2s_kit.merging.methods.lowrank` (truncated SVD, singular-value thresholding). The exact maths and the
hand-worked checks are in the project's METHODS notes and ``tests/test_svd_methods.py``.

Tensors: ``base`` (any shape S), ``models`` a list of n tensors of shape S, ``weights`` n floats;
returns a tensor of shape S. 2-D tensors get the low-rank treatment; other tensors (1-D norms and
biases) are treated as METHODS says for each method.

Memory: a merge holds the base's and every model's copy of one matrix plus the method's work, so
the peak is set by the largest matrix. Measured on a 151936 × 1536 float32 pair (one model), the
work beyond the two inputs is 3.3 copies of the matrix for Twin with the randomized SVD (what
``svd: auto`` picks for large matrices), 4.1 for Twin with an exact SVD and 4.05 for LoRE (always
exact: it thresholds the whole spectrum): for a 7B's 152064 × 3584 embedding (2.2 GB in float32)
about 12 GB for Twin (auto) and 13 GB for LoRE. Time: an exact SVD of one of a 7B's 84
3584 × 18944 MLP matrices is about 10¹² floating-point operations (seconds on a GPU, a minute or
more on a few CPU cores); Twin's ``svd: auto`` makes those randomized, LoRE cannot.
"""

from __future__ import annotations

import math
import warnings
from decimal import Decimal
from typing import Annotated, Literal

import torch

from l2s_kit.io.choices import SVD_ALGORITHMS
from l2s_kit.merging.methods.lowrank import low_rank, svt
from l2s_kit.merging.registry import Range, Search, merge_method

TWIN_PAPER = "https://arxiv.org/abs/2406.15479"
LORE_PAPER = "https://arxiv.org/abs/2502.10749"

MaskRate = Annotated[float, Range(0.0, 1.0), Search(0.0, 0.99, 0.01),
                     "share of each matrix's rank dropped: r = floor((1 - mask_rate) * min(m, n))"]
SvdChoice = Literal[SVD_ALGORITHMS]
AVERAGE_WARNING = ("LoRE-Merging of exactly two models with equal weights is plain averaging "
                   "(the two low-rank task vectors cancel); for long-to-short merging use "
                   "include_base: true with alpha != 0.5")


def twin_rank(shape: tuple[int, ...], mask_rate: float, rank: int = 0) -> int:
    """The kept rank: ``rank`` if positive (at most min(m, n)), else
    floor((1 − mask_rate) · min(m, n))."""
    small = min(shape)
    # n − ceil(mask_rate·n) on the decimal value of mask_rate: (1 − 0.9)·40 is 4, not 3.99…
    return min(rank, small) if rank > 0 else small - math.ceil(
        Decimal(repr(float(mask_rate))) * small)


@merge_method("twin", paper=TWIN_PAPER, aliases=("twin_merging",), elementwise=False)
def twin(base, models, weights, *,
         lam: Annotated[float, Range(0.0, 10.0), Search(0.0, 1.0, 0.05),
                        "λ: scale of the shared task vector"] = 0.3,
         mask_rate: MaskRate = 0.9,
         rank: Annotated[int, Range(0, None), "kept rank; 0: from mask_rate"] = 0,
         svd: SvdChoice = "auto"):
    """Twin-Merging (SVD merge, no router): θ* = θ₀ + λ Σᵢ wᵢ δᵢ, θ = θ* + (1/n) Σᵢ SVD_r(θᵢ − θ*).

    The exclusive vectors θᵢ − θ* of 2-D tensors are replaced by their best rank-r approximation
    (``svd``: exact, randomized, or auto by size; see :mod:`l2s_kit.merging.methods.lowrank`); other tensors keep
    them whole. With the router removed the experts are weighted equally. With one model
    (System 2 on System 1) θ = θ₀ + λδ + SVD_r((1 − λ)δ).
    """
    shared = base.clone()
    for w, m in zip(weights, models):
        shared.add_(m - base, alpha=lam * w)
    exclusive = None  # Σᵢ SVD_r(θᵢ − θ*), one temporary at a time
    for m in models:
        v = m - shared
        if v.ndim == 2:
            v = low_rank(v, twin_rank(tuple(v.shape), mask_rate, rank), svd).to(shared.dtype)
        exclusive = v if exclusive is None else exclusive.add_(v)
    return shared.add_(exclusive, alpha=1.0 / len(models))


def lore_decompose(models: list[torch.Tensor], tau: float, iters: int = 20, tol: float = 1e-7,
                   relative: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(θ̂₀, [δᵢ]) minimising Σᵢ ‖θ̂₀ + δᵢ − θᵢ‖²_F + 2τ ‖δᵢ‖_* by coordinate descent over the
    matrices ``models`` (each (m, n)): θ̂₀ ← meanᵢ(θᵢ − δᵢ), δᵢ ← SVT_τ(θᵢ − θ̂₀), from
    θ̂₀ = mean(θᵢ), δᵢ = 0, for ``iters`` rounds or until the largest change of θ̂₀ is at most
    ``tol`` × the largest entry of the inputs. ``relative``: τ is a fraction of the largest
    singular value of the θᵢ − mean (fixed for the whole descent). Two models converge in one
    round: δ₂ = −δ₁ = −SVT_τ((θ₁ − θ₂)/2), θ̂₀ = their mean (computed so, exactly antisymmetric)."""
    if len(models) == 2:
        hat, d = _lore_two(models[0], models[1], tau, relative)
        return hat, [d, -d]
    mean = torch.stack(models).mean(0)
    if relative:
        tau = tau * max(_top_sigma(m - mean) for m in models)
    hat = mean
    scale = max(float(m.abs().max()) for m in models)
    deltas = [torch.zeros_like(mean) for _ in models]
    for it in range(iters):
        new = mean - torch.stack(deltas).mean(0) if it else mean
        deltas = [svt(m - new, tau).to(mean.dtype) for m in models]
        change = float((new - hat).abs().max()) if it else float("inf")
        hat = new
        if change <= tol * scale:
            break
    return hat, deltas


def _lore_two(a: torch.Tensor, b: torch.Tensor, tau: float, relative: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, SVT_τ((a − b)/2)) of two matrices: LoRE's fixed point, with few temporaries."""
    half = torch.sub(a, b).mul_(0.5)
    d = svt(half, tau, relative).to(a.dtype)
    del half
    return torch.add(a, b).mul_(0.5), d


def _top_sigma(x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(x.float() if x.dtype != torch.float64 else x, ord=2))


def lore_is_average(n: int, weights: list[float]) -> bool:
    """Whether LoRE over ``n`` merged models with ``weights`` is exactly their plain average."""
    return n == 2 and abs(weights[0] - weights[1]) <= 1e-12


def lore_notes(params: dict, weights: list[float]) -> list[str]:
    """Recipe notes for a LoRE recipe (the averaging case), for the model card."""
    n = len(weights) + bool(params["include_base"])
    a = params["alpha"]
    ws = [1.0 - a * sum(weights), *(a * w for w in weights)] if params["include_base"] \
        else [a * w for w in weights]
    return [AVERAGE_WARNING] if lore_is_average(n, ws) else []


@merge_method("lore", paper=LORE_PAPER, aliases=("lore_merging",), elementwise=False,
              notes=lore_notes, unscheduled=("alpha",))
def lore(base, models, weights, *,
         alpha: Annotated[float, Range(0.0, 10.0), Search(0.0, 1.5, 0.05),
                          "weight of the models; the base gets 1 - alpha·Σw"] = 0.7,
         tau: Annotated[float, Range(0.0, None), "singular-value threshold τ (= μ/2)"] = 0.0,
         tau_relative: Annotated[bool, "τ as a fraction of each matrix's largest singular value"
                                 ] = False,
         include_base: Annotated[bool, "merge the base as one of the models (long-to-short)"] = True,
         iters: Annotated[int, Range(1, 10_000), "coordinate-descent rounds at most"] = 20,
         tol: Annotated[float, Range(0.0, None), "stop when θ̂₀ changes less (relative)"] = 1e-7):
    """LoRE-Merging: low-rank task vectors around an approximate base, θ = θ̂₀ + Σᵢ w'ᵢ δᵢ.

    θ̂₀ and the δᵢ come from coordinate descent with singular-value thresholding
    (:func:`lore_decompose`).

    ``include_base`` (the long-to-short setting: System 1 is the base AND one of the two models
    merged): the merged set is (θ₀, θ₁ … θₙ) with weights w' = (1 − α Σ wᵢ, α w₁ … α wₙ), so for
    one model θ = mean + (1 − 2α) · SVT_τ((θ₀ − θ₁)/2), which equals Task Arithmetic with the same
    α when τ = 0 (the defaults: α = 0.7, the paper's TA setting, and τ = 0; set τ, absolute or
    with ``tau_relative`` as a fraction of each matrix's σ₁, to make the task vector low-rank).
    Without ``include_base`` the set is θ₁ … θₙ with w'ᵢ = α wᵢ. Tensors that are not 2-D get
    the plain mean of the set. Exactly two models with equal weights reduce to plain averaging:
    a warning says so (and the recipe notes it in the model card).
    """
    mats = [base, *models] if include_base else list(models)
    ws = [1.0 - alpha * sum(weights), *(alpha * w for w in weights)] if include_base \
        else [alpha * w for w in weights]
    if lore_is_average(len(mats), ws):
        warnings.warn(AVERAGE_WARNING, stacklevel=2)
    if base.ndim != 2:
        return torch.stack(mats).mean(0)
    if len(mats) == 2:  # δ₂ = −δ₁: θ = mean + (w'₁ − w'₂) δ₁
        hat, d = _lore_two(mats[0], mats[1], tau, tau_relative)
        return hat.add_(d, alpha=ws[0] - ws[1])
    hat, deltas = lore_decompose(mats, tau, iters, tol, relative=tau_relative)
    for w, d in zip(ws, deltas):
        hat.add_(d, alpha=w)
    return hat
