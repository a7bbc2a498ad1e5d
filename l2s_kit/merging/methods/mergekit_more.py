"""mergekit's further methods, with mergekit's conventions: NearSwap, Multi-SLERP, the Karcher
mean, Arcee Fusion, RAM and RAM+ (tensor-local), and Passthrough (layer stacking).

Each follows mergekit 0.1.5's implementation (``merge_methods/nearswap.py``, ``multislerp.py``,
``karcher.py``, ``arcee_fusion.py``, ``ram.py``) so that mergekit's YAML for it gives the same
tensors here (``benchmarks/mergekit_parity.py`` measures it); parameters keep mergekit's names and
defaults. Where mergekit's own definition differs from what its docstring or paper says, the
function's docstring says which is followed. mergekit configs of Multi-SLERP and the Karcher mean
usually name no base: the first model is then the base, and takes part in the mean as one of
the points (mergekit's ``linear`` is read the same way).
"""

from __future__ import annotations

from typing import Annotated

import torch

from l2s_kit.merging.registry import Mergekit, Range, State, merge_method

NEARSWAP_PAPER = "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"
MULTISLERP_PAPER = "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"
KARCHER_PAPER = "https://en.wikipedia.org/wiki/Fr%C3%A9chet_mean"
ARCEE_FUSION_PAPER = "https://arcee.ai"
RAM_PAPER = "https://arxiv.org/abs/2601.13572"
PASSTHROUGH_PAPER = "https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md"

Eps = Annotated[float, Range(0.0, None), "small constant for numerical stability"]


def _first_model_as_base(what: str):
    """mergekit's config of ``what`` without a base: its first model is the base (one of the
    points of the mean, weighted by its weight: ``base_weight``)."""
    def adapt(d: dict, notes: list[str]) -> None:
        models = d.get("models") or []
        if d.get("base_model") or len(models) < 2 or not isinstance(models[0], dict):
            return
        first = models[0]
        w = (first.get("parameters") or {}).get("weight", 1.0)
        d["base_model"], d["models"] = first["model"], models[1:]
        d["parameters"].setdefault("base_in_mean", True)
        d["parameters"].setdefault("base_weight", w)
        notes.append(f"mergekit {what} without a base: the first model is the base, one of the "
                     f"points of the mean (base_weight = {w})")
    return adapt


BaseInMean = Annotated[bool, "the base is one of the points of the mean (mergekit's config "
                       "without base_model); else the origin the models' task vectors start from"]
BaseWeight = Annotated[float, Range(0.0, None), "the base's weight when it is one of the points"]


@merge_method("nearswap", paper=NEARSWAP_PAPER, n_models=(1, 1))
def nearswap(base, models, weights, *,
             t: Annotated[float, Range(0.0, None, lo_open=True),
                          "distance below which System 2's value is taken whole"] = 0.001):
    """NearSwap: System 2's value where it is near System 1's, System 1's elsewhere.

    Per entry, w = clamp(t / |θ₂ − θ₁|, 0, 1) (|θ₂ − θ₁| at least 1e-6) and θ = w·θ₂ + (1 − w)·θ₁:
    entries that moved less than t take System 2's value, those that moved far keep System 1's.
    mergekit's ``nearswap`` (its ``t`` has no default there; 0.001 here)."""
    b = models[0]
    w = (t / (base - b).abs().clamp(min=1e-6)).clamp(0, 1)
    return w * b + (1 - w) * base


@merge_method("multislerp", paper=MULTISLERP_PAPER, elementwise=False,
              mergekit=Mergekit(adapt=_first_model_as_base("multislerp")))
def multislerp(base, models, weights, *, normalize_weights: bool = True, eps: Eps = 1e-8,
               base_in_mean: BaseInMean = False, base_weight: BaseWeight = 1.0):
    """Multi-SLERP: barycentric interpolation on the hypersphere of whole tensors.

    The points (the models' task vectors from the base, or, with ``base_in_mean``, the base and
    the models themselves) are projected on the unit sphere, mapped to the tangent space at
    their weighted mean, averaged there and mapped back, then scaled by their weighted mean norm.
    mergekit's ``multislerp``, including its edge cases: one point gives itself (with a base and
    one model, that is System 2: mergekit interpolates only the non-base models), and two points
    whose weighted unit mean is zero are averaged linearly."""
    points = [base, *models] if base_in_mean else list(models)
    w = [base_weight, *weights] if base_in_mean else list(weights)
    if len(points) == 1:
        return points[0].clone()
    stacked = torch.stack(points)
    if not base_in_mean:
        stacked = stacked - base
    flat = stacked.reshape(len(points), -1)
    ws = torch.tensor(w, dtype=flat.dtype, device=flat.device)
    if normalize_weights:
        ws = ws / ws.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    unit = flat / (norms + eps)
    mean = (unit * ws.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    origin = 0 if base_in_mean else base
    if mean_norm < eps:
        if len(points) == 2:
            return (stacked[0] * ws[0] + stacked[1] * ws[1]) + origin
        raise ValueError("multislerp: the weighted sum of the unit task vectors is zero "
                         "(opposite vectors with balancing weights); change the weights")
    mean = mean / mean_norm
    dots = (unit * mean).sum(-1, keepdim=True)
    tangent = ((unit - dots * mean) * ws.view(-1, 1)).sum(0)
    tn = torch.norm(tangent) + eps
    result = mean * torch.cos(tn) + tangent * (torch.sin(tn) / tn)
    result = (result * (norms.squeeze(-1) * ws).sum()).reshape(base.shape)
    return result + origin


def karcher_mean(tensors: list[torch.Tensor], alphas: list[float], max_iter: int = 10,
                 tol: float = 1e-5) -> torch.Tensor:
    """Weighted Karcher (Fréchet) mean on the unit hypersphere, scaled by the weighted mean norm:
    mergekit's ``karcher_merge_tensors``, step for step (points of norm at most ``tol`` take no
    part in the direction, a zero mean direction starts from the first point, at most
    ``max_iter`` Riemannian gradient steps, stopping when the tangent is shorter than ``tol``).
    One addition: identical points give themselves exactly (mergekit's steps move them by an
    ulp or so), as NuSLERP's do here."""
    if len(tensors) == 1 or all(torch.equal(tensors[0], t) for t in tensors[1:]):
        return tensors[0].clone()
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [torch.zeros_like(t) if float(n) == 0.0 else t / n for t, n in zip(tensors, norms)]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    total = sum(alphas[i] for i in valid)
    a = [alphas[i] / total for i in valid]
    us = [units[i] for i in valid]
    mean = torch.zeros_like(us[0])
    for ai, u in zip(a, us):
        mean += ai * u
    mn = torch.linalg.vector_norm(mean)
    mean = us[0].clone() if float(mn) < tol else mean / mn
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for ai, u in zip(a, us):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += ai * (theta / torch.sin(theta)) * (u - dot * mean)
        tnorm = torch.linalg.vector_norm(tangent)
        if float(tnorm) < tol:
            break
        mean = torch.cos(tnorm) * mean + torch.sin(tnorm) * (tangent / tnorm)
        un = torch.linalg.vector_norm(mean)
        if float(un) > tol:
            mean = mean / un
    return sum(ai * n for ai, n in zip(alphas, norms)) * mean


@merge_method("karcher", paper=KARCHER_PAPER, elementwise=False,
              mergekit=Mergekit(adapt=_first_model_as_base("karcher")))
def karcher(base, models, weights, *,
            max_iter: Annotated[int, Range(1, None), "Riemannian gradient steps at most"] = 10,
            tol: Annotated[float, Range(0.0, None, lo_open=True), "convergence tolerance"] = 1e-5,
            base_in_mean: BaseInMean = True, base_weight: BaseWeight = 1.0):
    """Karcher mean: the equal-weight mean on the hypersphere of the base and the models.

    mergekit's ``karcher`` takes every input, base included, with equal weights (its per-model
    weights are not read): so does this, with the base as a point (``base_in_mean``, the default);
    with ``base_in_mean: false`` the mean is of the models' task vectors, added to the base."""
    points = [base, *models] if base_in_mean else [m - base for m in models]
    out = karcher_mean(points, [1.0 / len(points)] * len(points), max_iter, tol)
    return out if base_in_mean else base + out


def _sorted_quantiles(x: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """mergekit's quantiles: the sorted values at index ⌊q·(n − 1)⌋ (no interpolation)."""
    flat = x.reshape(-1)
    n = flat.numel()
    return [torch.kthvalue(flat, int(q * (n - 1)) + 1).values for q in qs]


@merge_method("arcee_fusion", paper=ARCEE_FUSION_PAPER, elementwise=False, n_models=(1, 1))
def arcee_fusion(base, models, weights):
    """Arcee Fusion: System 2's change kept only where it matters most.

    Importance = |θ₂ − θ₁| · KL(softmax(θ₂) ‖ softmax(θ₁)) along the last dimension (each row of
    a matrix; ε = 1e-8 added to both distributions); the change is kept where importance ≥
    median + 1.5·IQR. mergekit's ``arcee_fusion``, with one deliberate difference: mergekit takes
    the quartiles of a random sample of 1M entries (with replacement, from torch's global
    generator) for a larger tensor, so its merge of a 7B model is not reproducible; here they
    are always the exact order statistics at mergekit's indices ⌊q·(n − 1)⌋."""
    b = models[0]
    p = torch.softmax(b, dim=-1) + 1e-8
    q = torch.softmax(base, dim=-1) + 1e-8
    kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    importance = (b - base).abs() * kl
    q1, median, q3 = _sorted_quantiles(importance, (0.25, 0.5, 0.75))
    mask = (importance >= median + 1.5 * (q3 - q1)).to(base.dtype)
    return base + (b - base) * mask


RamEpsilon = Annotated[float, Range(0.0, None), "a task vector entry counts when |δ| > epsilon"]


def _ram_parts(base, models, epsilon: float):
    tv = torch.stack([m - base for m in models]).reshape(len(models), -1)
    nonzero = tv.abs() > epsilon
    counts = nonzero.sum(dim=0, keepdim=True)
    return tv, nonzero, counts, counts > 1, counts == 1


@merge_method("ram", paper=RAM_PAPER, elementwise=False)
def ram(base, models, weights, *, epsilon: RamEpsilon = 1e-5):
    """RAM (Reinforced Agent Merging): entries only one model changed are kept whole, entries
    several changed are averaged over those that changed them; changes of at most ``epsilon``
    are dropped. mergekit's ``ram`` (the models' weights are not read)."""
    tv, nonzero, counts, overlap, unique = _ram_parts(base, models, epsilon)
    tz = tv * nonzero
    merged = (tz * unique + tz * overlap / counts.clamp(min=1)).sum(dim=0)
    return base + merged.reshape(base.shape)


@merge_method("ramplus_tl", paper=RAM_PAPER, elementwise=False)
def ramplus_tl(base, models, weights, *, r: Annotated[float, Range(0.0, None),
                                                       "rescaling strength of unique entries"] = 0.1,
               alpha: Annotated[float, Range(0.0, None), "cap on the shared-to-unique ratio"] = 0.2,
               epsilon: RamEpsilon = 1e-5):
    """RAM+ (tensor-local): RAM with each model's unique entries scaled by 1 + r·min(ρ, alpha),
    ρ = the model's shared changed entries over its unique ones in this tensor. mergekit's
    ``ramplus_tl`` (ρ's denominator at least epsilon; the models' weights are not read)."""
    tv, nonzero, counts, overlap, unique = _ram_parts(base, models, epsilon)
    shared_n = (nonzero & overlap).sum(dim=1)
    unique_n = (nonzero & unique).sum(dim=1)
    rho = shared_n / unique_n.clamp(min=epsilon)
    lam = 1 + r * rho.clamp(min=0, max=alpha)
    tz = tv * nonzero
    merged = (tz * unique * lam.unsqueeze(-1) + tz * overlap / counts.clamp(min=1)).sum(dim=0)
    return base + merged.reshape(base.shape)


def _slice_scale(run, params):
    """prepare hook of passthrough: each stacked tensor's factor (its slice's ``scale``, as
    :func:`l2s_kit.merging.engine.plan_stack` resolved it for that tensor)."""
    def state(job):
        return lambda rows: {"factor": job.scale}
    return state


@merge_method("passthrough", paper=PASSTHROUGH_PAPER, n_models=(0, None), stacks=True,
              prepare=_slice_scale)
def passthrough(base, models, weights, *, factor: State = 1.0):
    """Passthrough: layers of one or more models stacked (a "frankenmerge"), copied unchanged.

    The recipe is mergekit's: ``slices``, each with one source ``{model, layer_range: [a, b]}``
    (and optionally ``parameters: {scale: …}``, a factor, by tensor name like any layer
    schedule: ``[{filter: o_proj, value: 0}, {value: 1}]``); the output's layers are the slices'
    in order. Each tensor arrives as ``base``, from the model its slice names."""
    return base * factor if factor != 1 else base
