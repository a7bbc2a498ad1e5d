"""The methods mergekit's users compare, with mergekit's conventions: DELLA, Model Breadcrumbs,
SCE, SLERP, NuSLERP and Model Stock.

Each follows mergekit's implementation (``mergekit/sparsify.py``,
``merge_methods/generalized_task_arithmetic.py``, ``sce.py``, ``slerp.py``, ``nuslerp.py``,
``model_stock.py``) so that mergekit's YAML for it gives the same tensors here; the parameters
keep mergekit's names (``density``, ``gamma``, ``epsilon``, ``select_topk``, ``t``) and
defaults, with ``alpha`` for mergekit's ``lambda`` (translated when a recipe says ``lambda``).
Conventions that differ from mergekit, all stated where they apply:

- the maths runs in the recipe's compute dtype (float32 by default; mergekit computes in the
  input dtype, bf16 for bf16 checkpoints, and SLERP in numpy float32), so bf16 results can
  differ from mergekit's in the last bit;
- the random masks of DELLA are drawn from a generator seeded by (seed, tensor name, model
  index), as DARE's are, so a DELLA merge is reproducible (mergekit draws from torch's global
  generator); the probabilities and the rescaling are mergekit's;
- the sparsifications, norms and sign votes here need a whole tensor (mergekit's also do), so
  these methods take whole tensors (``elementwise=False``, like the SVD methods): peak memory is
  a few float32 copies of the largest tensor (the embedding: ~2 GB each for a 7B).

The task-vector ones share mergekit's generalized task arithmetic: sparsify each task vector,
weight it, optionally keep only entries agreeing with the majority sign of the weighted sum
(``consensus``), sum, optionally divide by the sum of the agreeing weights (``normalize``), scale
by ``alpha`` and add to the base.
"""

from __future__ import annotations

from typing import Annotated

import torch

from l2s_kit.io.seeds import generator
from l2s_kit.merging.methods.params import Alpha, Seed
from l2s_kit.merging.registry import (
    Mergekit,
    MergekitName,
    PerModel,
    Range,
    RecipeError,
    State,
    merge_method,
    model_value,
)

DELLA_PAPER = "https://arxiv.org/abs/2406.11617"
BREADCRUMBS_PAPER = "https://arxiv.org/abs/2312.06795"
SCE_PAPER = "https://arxiv.org/abs/2408.07990"
SLERP_PAPER = "https://en.wikipedia.org/wiki/Slerp"
NUSLERP_PAPER = "https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md"
MODEL_STOCK_PAPER = "https://arxiv.org/abs/2403.19522"

Density = Annotated[float, Range(0.0, 1.0), "fraction of each task vector's entries kept "
                    "(mergekit's density; 1 keeps all)"]
Gamma = Annotated[float, Range(0.0, 1.0), "fraction of the largest magnitudes removed as outliers"]
Epsilon = Annotated[float, Range(0.0, 1.0, hi_open=True),
                    "half-width of DELLA's keep probabilities around density"]
T = Annotated[float, Range(0.0, 1.0), "interpolation: 0 is the base (System 1), 1 the model"]


def _tensor_name(run, params):
    """prepare hook: each tensor's name, for the random masks seeded by it."""
    def state(job):
        return lambda rows: {"tensor": job.name}
    return state


# ---- sparsifications (mergekit/sparsify.py) ----------------------------------------------------

def rescaled(tensor: torch.Tensor, mask: torch.Tensor, rescale: bool,
             eps: float = 1e-7) -> torch.Tensor:
    """``tensor * mask``, scaled (``rescale``) so that its L1 norm is the tensor's."""
    masked = tensor * mask
    if not rescale:
        return masked
    before, after = tensor.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float,
                       rescale: bool = False) -> torch.Tensor:
    """Model Breadcrumbs' mask: drop the ``gamma`` share of largest magnitudes (outliers) and
    the smallest, keeping ``floor(density·n)`` entries (fewer outliers dropped when density and
    gamma ask for more than all); mergekit's ``magnitude_outliers``. Sorted stably, so ties go
    by position. One difference: when ``gamma·n < 1`` (no outlier dropped) mergekit's slice
    ``indices[n_bot:-0]`` is empty and keeps nothing; here the ``floor(density·n)`` largest are
    kept."""
    if density >= 1:
        return delta
    n = delta.numel()
    target, n_top = int(density * n), int(gamma * n)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top, n_bot = n_top + n_bot, 0
    order = torch.sort(delta.abs().reshape(-1), stable=True).indices
    mask = torch.zeros(n, dtype=delta.dtype, device=delta.device)
    mask[order[n_bot:n - n_top]] = 1  # mergekit: indices[n_bot:-n_top]
    return rescaled(delta, mask.reshape(delta.shape), rescale)


def della_magprune(delta: torch.Tensor, density: float, epsilon: float, rescale: bool,
                   gen: torch.Generator) -> torch.Tensor:
    """DELLA's MagPrune: in each row, entries ranked by magnitude get keep probabilities rising
    linearly from density − ε (smallest) to density + ε (largest); a Bernoulli draw keeps them,
    then (``rescale``) the L1 norm is restored; mergekit's ``della_magprune``."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise RecipeError(f"della: density ± epsilon must lie in (0, 1); got density {density}, "
                          f"epsilon {epsilon}")
    shape = delta.shape
    t = delta.unsqueeze(0) if delta.dim() < 2 else delta
    ranks = t.abs().argsort(dim=1).argsort(dim=1).to(t.dtype) + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - lo) / (hi - lo)).clamp(0, 1)
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    u = torch.rand(probs.shape, generator=gen, dtype=torch.float64).to(probs.device)
    mask = (u < probs).to(t.dtype)
    return rescaled(t, mask, rescale).reshape(shape)


# ---- generalized task arithmetic ---------------------------------------------------------------

def majority_mask(weighted: torch.Tensor) -> torch.Tensor:
    """mergekit's ``get_mask(method="sum")``: entries whose sign equals the sign of the sum over
    models (+ where the sum is 0); zeros never agree."""
    majority = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).to(weighted.dtype)
    return weighted.sign() == majority


def gta(base: torch.Tensor, deltas: list[torch.Tensor], weights, *, consensus: bool,
        normalize: bool, alpha: float) -> torch.Tensor:
    """θ₀ + α · (Σᵢ mᵢ wᵢ δᵢ) [/ Σᵢ mᵢ wᵢ]: mergekit's generalized task arithmetic."""
    stacked = torch.stack(deltas)
    w = torch.tensor(list(weights), dtype=stacked.dtype, device=stacked.device)
    w = w.reshape(-1, *([1] * (stacked.dim() - 1)))
    weighted = stacked * w
    if consensus:
        mask = majority_mask(weighted)
        mixed = (weighted * mask).sum(0)
        divisor = (w * mask).sum(0)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    else:
        mixed = weighted.sum(0)
        divisor = w.sum(0)
        divisor = torch.where(divisor.abs() < 1e-8, torch.ones_like(divisor), divisor)
    if normalize:
        mixed = mixed / divisor
    return base + alpha * mixed


def _della(base, models, weights, density, epsilon, alpha, rescale, normalize, seed, tensor,
           consensus):
    deltas = [della_magprune(m - base, model_value(density, i), model_value(epsilon, i), rescale,
                             generator(seed, tensor, i)) for i, m in enumerate(models)]
    return gta(base, deltas, weights, consensus=consensus, normalize=normalize, alpha=alpha)


def _check_della(params: dict, where: str) -> None:
    from l2s_kit.merging.schedule import numbers

    density, epsilon = params["density"], params["epsilon"]
    n = max(len(v) if isinstance(v, PerModel) else 1 for v in (density, epsilon))
    for i in range(n):  # each model's values (given per model or not)
        e = model_value(epsilon, i)
        for d in numbers(model_value(density, i)):  # every value a layer schedule can take
            if 0 < d < 1 and (d + e >= 1 or d - e <= 0):
                raise RecipeError(f"{where}: density ± epsilon must lie in (0, 1) (DELLA's keep "
                                  f"probabilities); got density {d}, epsilon {e}"
                                  + (f" for models[{i}]" if n > 1 else ""))


@merge_method("della", paper=DELLA_PAPER, elementwise=False, prepare=_tensor_name,
              check=_check_della, unscheduled=("epsilon",), per_model=("density", "epsilon"))
def della(base, models, weights, *, density: Density = 1.0, epsilon: Epsilon = 0.15,
          alpha: Alpha = 1.0, rescale: bool = True, normalize: bool = True, seed: Seed = 0,
          tensor: State = ""):
    """DELLA-Merging: MagPrune each task vector, elect signs, disjoint mean, θ₀ + α · result.

    MagPrune keeps entries with probabilities by magnitude rank; ``normalize`` divides by the
    agreeing weights; mergekit's ``della``."""
    return _della(base, models, weights, density, epsilon, alpha, rescale, normalize, seed,
                  tensor, consensus=True)


@merge_method("della_linear", paper=DELLA_PAPER, elementwise=False, prepare=_tensor_name,
              check=_check_della, unscheduled=("epsilon",), per_model=("density", "epsilon"))
def della_linear(base, models, weights, *, density: Density = 1.0, epsilon: Epsilon = 0.15,
                 alpha: Alpha = 1.0, rescale: bool = True, normalize: bool = False,
                 seed: Seed = 0, tensor: State = ""):
    """DELLA without sign election: MagPrune each task vector, θ₀ + α · Σᵢ wᵢ δᵢ.

    mergekit's ``della_linear``."""
    return _della(base, models, weights, density, epsilon, alpha, rescale, normalize, seed,
                  tensor, consensus=False)


@merge_method("breadcrumbs", paper=BREADCRUMBS_PAPER, elementwise=False,
              per_model=("density", "gamma"))
def breadcrumbs(base, models, weights, *, density: Density = 1.0, gamma: Gamma = 0.01,
                alpha: Alpha = 1.0, rescale: bool = False, normalize: bool = False):
    """Model Breadcrumbs: drop each task vector's outliers and smallest entries, θ₀ + α · Σᵢ wᵢ δᵢ.

    The ``gamma`` share of the largest magnitudes and the smallest go, ``density`` is kept;
    mergekit's ``breadcrumbs``."""
    deltas = [magnitude_outliers(m - base, model_value(density, i), model_value(gamma, i), rescale)
              for i, m in enumerate(models)]
    return gta(base, deltas, weights, consensus=False, normalize=normalize, alpha=alpha)


@merge_method("breadcrumbs_ties", paper=BREADCRUMBS_PAPER, elementwise=False,
              per_model=("density", "gamma"))
def breadcrumbs_ties(base, models, weights, *, density: Density = 1.0, gamma: Gamma = 0.01,
                     alpha: Alpha = 1.0, rescale: bool = False, normalize: bool = False):
    """Model Breadcrumbs with TIES' sign election; mergekit's ``breadcrumbs_ties``."""
    deltas = [magnitude_outliers(m - base, model_value(density, i), model_value(gamma, i), rescale)
              for i, m in enumerate(models)]
    return gta(base, deltas, weights, consensus=True, normalize=normalize, alpha=alpha)


# ---- SCE ---------------------------------------------------------------------------------------

def sce_notes(params: dict, weights: list[float]) -> list[str]:
    if len(weights) == 1:
        return ["sce with one model: the variance across task vectors is 0 everywhere, so "
                "select_topk < 1 keeps nothing (the result is System 1) and select_topk = 1 "
                "gives System 2 (scaled by alpha); SCE is meant for several models"]
    return []


@merge_method("sce", paper=SCE_PAPER, elementwise=False, notes=sce_notes)
def sce(base, models, weights, *,
        select_topk: Annotated[float, Range(0.0, 1.0), "share of entries with the largest "
                               "variance across task vectors kept"] = 1.0,
        alpha: Alpha = 1.0):
    """SCE: select high-variance entries, weight task vectors by mean square, erase minority signs.

    Select, Calculate, Erase: keep the entries of largest variance across the task vectors,
    weight each task vector by its mean square, erase minority signs, θ₀ + α · weighted mean;
    mergekit's ``sce`` (which ignores the models' weights, as here)."""
    tvs = torch.stack([m - base for m in models])
    if select_topk < 1:
        tvs = tvs * sce_mask(tvs, select_topk).unsqueeze(0)
    erase = majority_mask(tvs).to(tvs.dtype)
    w = (tvs ** 2).mean(dim=tuple(range(1, tvs.dim()))) if tvs.dim() > 1 else tvs ** 2
    total = float(w.sum())
    w = torch.full_like(w, 1.0 / w.shape[0]) if abs(total) < 1e-6 else w / total
    w = w.reshape(-1, *([1] * (tvs.dim() - 1)))
    erased = w * erase
    merged = (tvs * erased).sum(0) / erased.sum(0).clamp(min=1e-6)
    return base + alpha * merged


def sce_mask(tvs: torch.Tensor, density: float) -> torch.Tensor:
    """1 at the ``floor(density · #nonzero variances)`` entries of largest variance across the
    task vectors (mergekit's ``sce_mask``)."""
    if density <= 0:
        return torch.zeros_like(tvs[0])
    if density >= 1:
        return torch.ones_like(tvs[0])
    var = torch.var(tvs, dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(var)) * density)
    mask = torch.zeros_like(var)
    if k == 0:
        return mask
    idx = torch.topk(var.abs().reshape(-1), k=k, largest=True).indices
    mask.view(-1)[idx] = 1
    return mask


# ---- interpolations ----------------------------------------------------------------------------

def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995,
                  eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation of two whole tensors, as mergekit's ``slerp``: the angle between
    them flattened and normalized; nearly colinear ones (|cos| > 0.9995) are interpolated
    linearly."""
    n0, n1 = v0.norm(), v1.norm()
    u0 = v0 / n0 if n0 > eps else v0
    u1 = v1 / n1 if n1 > eps else v1
    dot = float((u0 * u1).sum())
    if abs(dot) > dot_threshold:
        return (1 - t) * v0 + t * v1
    theta = torch.arccos(torch.tensor(dot, dtype=torch.float64))
    s = torch.sin(theta)
    s0 = float(torch.sin(theta - theta * t) / s)
    s1 = float(torch.sin(theta * t) / s)
    return s0 * v0 + s1 * v1


@merge_method("slerp", paper=SLERP_PAPER, elementwise=False, n_models=(1, 1))
def slerp(base, models, weights, *, t: T = 0.5):
    """SLERP: spherical interpolation from System 1 (t = 0) to System 2 (t = 1), per tensor.

    mergekit's ``slerp`` (base_model is t = 0; the model's weight is not used)."""
    return slerp_tensors(t, base, models[0])


def nuslerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, row_wise: bool = False,
                    flatten: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """mergekit's ``nuslerp``: spherical interpolation of the whole tensors (``flatten``), or
    of each row (``row_wise``) or column; colinear pairs are interpolated linearly. One
    addition: identical vectors give themselves exactly (in float32 their angle comes out near
    6e-4 rather than 0, and mergekit's formula moves them by an ulp or so)."""
    shape = v0.shape
    if flatten:
        a, b = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        a, b = v0.transpose(0, -1), v1.transpose(0, -1)
    else:
        a, b = v0, v1

    def unit(x):
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos = (unit(a) * unit(b)).sum(dim=-1, keepdim=True)
    theta = torch.acos(cos.clamp(-1, 1))
    sin = torch.sin(theta)
    colinear = (sin.abs() < eps).squeeze(-1)
    res = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / sin
    res[colinear] = (1 - t) * a[colinear] + t * b[colinear]
    same = (a == b).all(dim=-1)
    res[same] = a[same]
    if row_wise and not flatten:
        res = res.transpose(0, -1)
    return res.reshape(shape)


def _nuslerp_base(d: dict, notes: list[str]) -> None:
    """mergekit's ``nuslerp`` of two models without a base: the first is the base (t = 0) and
    t = w₂ / (w₁ + w₂)."""
    models = d.get("models") or []
    if d.get("base_model") or len(models) != 2 or not all(isinstance(m, dict) for m in models):
        return
    w = [float((m.get("parameters") or {}).get("weight", 1.0)) for m in models]
    d["base_model"], d["models"] = models[0]["model"], [{"model": models[1]["model"]}]
    t = 0.5 if abs(sum(w)) < 1e-6 else w[1] / sum(w)
    d["parameters"].setdefault("t", t)
    notes.append(f"mergekit nuslerp of two models without a base: the first is the base "
                 f"(t = 0), t = w2 / (w1 + w2) = {t:g}")


@merge_method("nuslerp", paper=NUSLERP_PAPER, elementwise=False, n_models=(1, 2),
              mergekit=Mergekit(adapt=_nuslerp_base))
def nuslerp(base, models, weights, *, t: T = 0.5,
            row_wise: Annotated[bool, MergekitName("nuslerp_row_wise"),
                                "interpolate each row (else each column)"] = False,
            flatten: Annotated[bool, MergekitName("nuslerp_flatten"),
                               "interpolate whole tensors"] = True):
    """NuSLERP: spherical interpolation of whole tensors, rows or columns (or of task vectors).

    With one model, from System 1 (t = 0) to System 2 (t = 1), of whole tensors (``flatten``)
    or of rows (``row_wise``) or columns; with two models, θ₀ + the interpolation of their task
    vectors at t = w₂ / (w₁ + w₂) (mergekit's ``nuslerp`` with a base model)."""
    if len(models) == 1:
        return nuslerp_tensors(t, base, models[0], row_wise, flatten)
    total = weights[0] + weights[1]
    tt = 0.5 if abs(total) < 1e-6 else weights[1] / total
    return base + nuslerp_tensors(tt, models[0] - base, models[1] - base, row_wise, flatten)


@merge_method("model_stock", paper=MODEL_STOCK_PAPER, elementwise=False, n_models=(2, None))
def model_stock(base, models, weights, *, filter_wise: bool = False):
    """Model Stock: move from the base towards the models' average by an angle-derived t.

    t = N·cosθ / (1 + (N−1)·cosθ), θ the mean pairwise angle between task vectors (per row with
    ``filter_wise``); mergekit's ``model_stock``. Needs at least two models."""
    shape = base.shape
    if filter_wise:
        w0 = base.unsqueeze(0) if base.dim() == 1 else base
        ws = [m.unsqueeze(0) if m.dim() == 1 else m for m in models]
    else:
        w0, ws = base.reshape(-1), [m.reshape(-1) for m in models]
    offsets = [w - w0 for w in ws]
    cos = []
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            norms = torch.norm(offsets[i], dim=-1) * torch.norm(offsets[j], dim=-1)
            cos.append(((offsets[i] * offsets[j]).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    c = torch.stack(cos).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    t = (n * c) / (1 + (n - 1) * c)
    avg = sum(ws) / n
    return (t * avg + (1 - t) * w0).reshape(shape)
