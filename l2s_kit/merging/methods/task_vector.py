"""The task-vector family: Average, Task Arithmetic, TIES-Merging, DARE (alone, with TA, with TIES).

Each is composed from the primitives in ``sparsify`` (sparsify × consensus, as in mergekit's
generalized task arithmetic). The exact maths, conventions and hand-worked checks are in the
project's METHODS notes and in ``tests/test_methods.py``.

Tensors: ``base`` (any shape S), ``models`` a list of n tensors of shape S, ``weights`` n floats;
returns a tensor of shape S in the input dtype.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from tqdm.auto import tqdm

from l2s_kit.merging.methods.params import (
    DARE_RESCALE,
    NO_NORMALIZE,
    Alpha,
    DropRate,
    Normalize,
    Seed,
    TrimRatio,
)
from l2s_kit.merging.methods.sparsify import (
    DropMask,
    Trimmer,
    dare,
    disjoint_mean,
    elect_sign,
    task_vectors,
    weighted_sum,
)
from l2s_kit.merging.registry import (
    Mergekit,
    PerModel,
    Range,
    RecipeError,
    Search,
    State,
    merge_method,
    model_value,
)

TA_PAPER = "https://arxiv.org/abs/2212.04089"
TIES_PAPER = "https://arxiv.org/abs/2306.01708"
DARE_PAPER = "https://arxiv.org/abs/2311.03099"
AVERAGE_PAPER = "https://arxiv.org/abs/2203.05482"

TrimRule = Literal["topk", "reference", "global", "mergekit"]


def _trim(deltas, trimmers, k, trim):
    if trimmers is None:  # the tensor is the whole scope: its magnitudes serve plan and trim
        out = []
        for i, d in enumerate(deltas):
            a = d.reshape(-1).abs()
            out.append(Trimmer.for_tensor(d, model_value(k, i), trim, magnitudes=a)(d, magnitudes=a))
        return out
    return [t(d) for t, d in zip(trimmers, deltas)]


def _dare(deltas, masks, p, seed):
    if masks is None:  # called directly: masks from the seed and the model index only
        masks = [DropMask(model_value(p, i), seed, "", i) for i in range(len(deltas))]
    return [dare(d, m.keep(d.numel(), device=d.device), model_value(p, i))
            for i, (d, m) in enumerate(zip(deltas, masks))]


# ---- per-tensor planning (the prepare hook of TIES, DARE and DARE-TIES) ------------------------

def drop_masks(job, rows, p: float | PerModel, seed: int, n: int) -> list:
    """DARE's masks of the n models for one block of tensor ``job``, seeded by the tensor's name
    and positioned at the block's flat offset (independent of read order and block size)."""
    return [DropMask(model_value(p, i), seed, job.name, i).at(job.offset(rows)) for i in range(n)]


def _plan_global(run, delta, k: float | PerModel) -> tuple[list[Trimmer], float]:
    """Global trim: exact model-wide thresholds (radix select), then the majority sign for sums
    that are exactly zero."""
    fjobs = [j for j in run.jobs if j.floating]
    total = sum(j.shared_rows * j.row_numel() for j in fjobs)
    trimmers = []
    for i in range(run.n):
        def blocks(i=i):
            for j in tqdm(fjobs, desc=f"global trim: magnitudes of model {i + 1}",
                          disable=not run.progress, leave=False):
                for rows in j.blocks():
                    yield delta(j, rows, i)
        trimmers.append(Trimmer.from_blocks(blocks, total, model_value(k, i), "topk"))
    if run.n < 2:
        return trimmers, 1.0  # one task vector: the elected sign never changes the result
    plans = [(t.threshold, t.tie_budget) for t in trimmers]
    voting = [Trimmer(*p) for p in plans]
    votes = 0
    for j in tqdm(fjobs, desc="global trim: majority sign", disable=not run.progress, leave=False):
        for rows in j.blocks():
            ds = [delta(j, rows, i) for i in range(run.n)]
            stacked = torch.stack([w * t(d) for w, t, d in zip(run.weights_at(j), voting, ds)])
            votes += int(elect_sign(stacked, 0.0).sum())
    return [Trimmer(*p) for p in plans], (1.0 if votes >= 0 else -1.0)


WHOLE_PLAN_ELEMS = 1 << 24  # a streamed tensor up to this size is planned from one whole read


def _tensor_trimmers(run, job, delta, k: float | PerModel, rule: str) -> list[Trimmer] | None:
    """Per-tensor trim of a tensor streamed in several blocks: thresholds over all its blocks
    (None for a tensor read whole: the method trims it itself, with the same result). Up to
    ``WHOLE_PLAN_ELEMS`` entries the task vector is read whole once and its threshold found by
    sampling (:func:`order_statistic`); larger ones by a radix select over the blocks."""
    if len(list(job.blocks())) == 1:
        return None
    n = job.shared_rows * job.row_numel()
    out = []
    for i in range(run.n):
        if n <= WHOLE_PLAN_ELEMS:
            rows = slice(0, job.shared_rows) if job.out.shape else None
            out.append(Trimmer.for_tensor(delta(job, rows, i), model_value(k, i), rule))
            continue

        def blocks(i=i):
            for rows in job.blocks():
                yield delta(job, rows, i)
        out.append(Trimmer.from_blocks(blocks, n, model_value(k, i), rule))
    return out


def _plan(run, params: dict, *, drop: bool, trim: bool):
    """State of every block: DARE masks (``drop``) and the trim's thresholds (``trim``; over a
    streamed tensor, or over the whole model for ``trim: global``) with the zero-sum sign."""
    def p_of(job):  # p and k may be layer schedules or per model: their values for this tensor
        return run.params_at(job, params)["p"] if drop else 0.0

    def delta(job, rows, i):  # the input of trim planning: DARE'd when the method drops
        d = run.delta(job, i, rows)
        if not drop:
            return d
        p = model_value(p_of(job), i)
        mask = drop_masks(job, rows, p, params["seed"], run.n)[i]
        return dare(d, mask.keep(d.numel(), device=d.device), p)

    def k_of(job):
        return run.params_at(job, params)["k"]

    shared, zero_sign = None, 1.0
    if trim and params["trim"] == "global":  # k is one number (checked when loaded)
        shared, zero_sign = _plan_global(run, delta, params["k"])

    def state(job):
        trims = trim and (any(model_value(k_of(job), i) > 0 for i in range(run.n))
                          or params["trim"] == "global")
        trimmers = shared if shared is not None else (
            _tensor_trimmers(run, job, delta, k_of(job), params["trim"]) if trims else None)
        p = p_of(job)

        def block(rows) -> dict:
            out = {"masks": drop_masks(job, rows, p, params["seed"], run.n)} if drop else {}
            if trim:
                out.update(trimmers=trimmers, zero_sign=zero_sign)
            return out
        return block
    return state


def _linear_base(d: dict, notes: list[str]) -> None:
    """mergekit's ``linear`` has no base: without one, its first model is the base, weighted by
    its weight (``base_weight``)."""
    models = d.get("models") or []
    if d.get("base_model") or not models or not isinstance(models[0], dict):
        return
    first = models[0]
    w = (first.get("parameters") or {}).get("weight", 1.0)
    d["base_model"], d["models"] = first["model"], models[1:]
    d["parameters"].setdefault("base_weight", w)
    notes.append(f"mergekit linear: took the first model as base (base_weight = {w})")


@merge_method("average", paper=AVERAGE_PAPER, aliases=("linear",), mergekit=Mergekit(
    implied={"normalize": (True, "l2s_kit's average always divides by the sum of weights")},
    adapt=_linear_base))
def average(base, models, weights, *,
            base_weight: Annotated[float, Range(0.0, None), Search(0.0, 1.0, 0.05),
                                   "weight of the base model"] = 1.0):
    """Average Merging: the (weighted) mean of the base and the models."""
    total = base_weight + sum(weights)
    if total == 0:
        raise RecipeError("average: base_weight and the models' weights sum to 0; give weights "
                          "with a non-zero sum")
    out = base * (base_weight / total)
    for w, m in zip(weights, models):
        out.add_(m, alpha=w / total)
    return out


@merge_method("task_arithmetic", paper=TA_PAPER, aliases=("ta",),
              mergekit=Mergekit(implied=NO_NORMALIZE))
def task_arithmetic(base, models, weights, *, alpha: Alpha = 1.0):
    """Task Arithmetic: θ₀ + α · Σᵢ wᵢ δᵢ."""
    return weighted_sum(task_vectors(base, models), weights).mul_(alpha).add_(base)


def _check_trim(params: dict, where: str) -> None:
    k = params.get("k")
    if params.get("trim") == "global" and any(isinstance(model_value(k, i), list) for i in range(
            len(k) if isinstance(k, PerModel) else 1)):
        raise RecipeError(f"{where}: trim: global chooses one threshold for the whole model, so "
                          "k cannot be a layer schedule there; use trim: topk")


def _mergekit_trim(d: dict, notes: list[str]) -> None:
    """mergekit's ``ties`` keeps floor(density·n) entries of each tensor: a recipe that gives
    ``density`` (and no ``trim``) trims as it does."""
    given = "density" in d["parameters"] or any(
        "density" in ((m.get("parameters") or {}) if isinstance(m, dict) else {})
        for m in d.get("models") or [])
    if given and "trim" not in d["parameters"]:
        d["parameters"]["trim"] = "mergekit"
        notes.append("density given (mergekit): trim: mergekit, keeping floor(density*n) "
                     "entries of each tensor as mergekit does")


@merge_method("ties", paper=TIES_PAPER, aliases=("ties_merging",), check=_check_trim,
              per_model=("k",),
              mergekit=Mergekit(adapt=_mergekit_trim),
              prepare=lambda run, params: _plan(run, params, drop=False, trim=True))
def ties(base, models, weights, *, k: TrimRatio = 0.8, alpha: Alpha = 1.0,
         trim: TrimRule = "topk", normalize: Normalize = True, trimmers: State = None,
         zero_sign: State = 1.0):
    """TIES-Merging: trim each task vector, elect signs, disjoint mean, θ₀ + α · mean.

    ``trim``: ``topk`` keeps n − floor(k·n) entries per tensor; ``reference`` is the paper's code
    (keeps |x| ≥ the floor(k·n)-th smallest magnitude, one more); ``global`` chooses the threshold
    over the whole model (original TIES), with zero-sum sign ties taking the majority sign;
    ``mergekit`` keeps floor((1 − k)·n), as mergekit does (a mergekit recipe's ``density`` picks
    it).
    ``normalize: false`` sums the agreeing entries instead of averaging them (mergekit's option).
    """
    trimmed = _trim(task_vectors(base, models), trimmers, k, trim)
    return base + alpha * disjoint_mean(trimmed, weights, zero_sign, normalize)


@merge_method("dare", paper=DARE_PAPER, aliases=("dare_ta", "dare_linear"), per_model=("p",),
              mergekit=Mergekit(implied={**NO_NORMALIZE, **DARE_RESCALE}),
              prepare=lambda run, params: _plan(run, params, drop=True, trim=False))
def dare_ta(base, models, weights, *, p: DropRate = 0.3, alpha: Alpha = 1.0, seed: Seed = 0,
            masks: State = None):
    """DARE (with Task Arithmetic): θ₀ + α · Σᵢ wᵢ DARE_p(δᵢ). With α = 1, DARE alone."""
    dropped = _dare(task_vectors(base, models), masks, p, seed)
    return weighted_sum(dropped, weights).mul_(alpha).add_(base)


@merge_method("dare_ties", paper=DARE_PAPER, check=_check_trim, per_model=("p", "k"),
              mergekit=Mergekit(implied=DARE_RESCALE),
              prepare=lambda run, params: _plan(run, params, drop=True, trim=True))
def dare_ties(base, models, weights, *, p: DropRate = 0.3, k: TrimRatio = 0.0, alpha: Alpha = 1.0,
              trim: TrimRule = "topk", seed: Seed = 0, normalize: Normalize = True,
              masks: State = None, trimmers: State = None, zero_sign: State = 1.0):
    """DARE-TIES: DARE each task vector, then TIES (trim with k, elect, disjoint mean).

    k = 0 (the default) skips the magnitude trim, as mergekit's ``dare_ties`` does.
    """
    dropped = _dare(task_vectors(base, models), masks, p, seed)
    trimmed = _trim(dropped, trimmers, k, trim)
    return base + alpha * disjoint_mean(trimmed, weights, zero_sign, normalize)
