"""The task-vector family: Average, Task Arithmetic, TIES-Merging, DARE (alone, with TA, with TIES).

Each is composed from the primitives in ``sparsify`` (sparsify × consensus, as in mergekit's
generalized task arithmetic). The exact maths, conventions and hand-worked checks are in the
project's METHODS notes and in ``tests/test_methods.py``.

Tensors: ``base`` (any shape S), ``models`` a list of n tensors of shape S, ``weights`` n floats;
returns a tensor of shape S in the input dtype.
"""

from __future__ import annotations

from typing import Annotated, Literal

from l2s_kit.merging.registry import Range, merge_method
from l2s_kit.merging.sparsify import (
    DropMask,
    Trimmer,
    dare,
    disjoint_mean,
    task_vectors,
)

TA_PAPER = "https://arxiv.org/abs/2212.04089"
TIES_PAPER = "https://arxiv.org/abs/2306.01708"
DARE_PAPER = "https://arxiv.org/abs/2311.03099"
AVERAGE_PAPER = "https://arxiv.org/abs/2203.05482"

Alpha = Annotated[float, Range(0.0, 10.0), "scale of the merged task vector"]
TrimRatio = Annotated[float, Range(0.0, 1.0, hi_open=True),
                      "fraction of each task vector's entries dropped; 0.8 keeps 20%"]
DropRate = Annotated[float, Range(0.0, 1.0, hi_open=True), "DARE drop probability"]
Seed = Annotated[int, Range(0, 2**63 - 1)]
TrimRule = Literal["topk", "reference", "global"]


def _trim(deltas, trimmers, k, trim):
    if trimmers is None:  # called directly: the tensor is the whole scope
        trimmers = [Trimmer.for_tensor(d, k, trim) for d in deltas]
    return [t(d) for t, d in zip(trimmers, deltas)]


def _dare(deltas, masks, p, seed):
    if masks is None:  # called directly: masks from the seed and the model index only
        masks = [DropMask(p, seed, "", i) for i in range(len(deltas))]
    return [dare(d, m.keep(d.numel(), device=d.device), p) for d, m in zip(deltas, masks)]


def _weighted_sum(deltas, weights):
    """Σᵢ wᵢ δᵢ, overwriting the first delta (the deltas are temporaries)."""
    out = deltas[0] if weights[0] == 1 else deltas[0].mul_(weights[0])
    for w, d in zip(weights[1:], deltas[1:]):
        out.add_(d, alpha=w)
    return out


@merge_method("average", paper=AVERAGE_PAPER, aliases=("linear",))
def average(base, models, weights, *,
            base_weight: Annotated[float, Range(0.0, None), "weight of the base model"] = 1.0):
    """Average Merging: the (weighted) mean of the base and the models."""
    total = base_weight + sum(weights)
    if total == 0:
        raise ValueError("average: base_weight and model weights sum to 0")
    out = base * (base_weight / total)
    for w, m in zip(weights, models):
        out.add_(m, alpha=w / total)
    return out


@merge_method("task_arithmetic", paper=TA_PAPER, aliases=("ta",))
def task_arithmetic(base, models, weights, *, alpha: Alpha = 1.0):
    """Task Arithmetic: θ₀ + α · Σᵢ wᵢ δᵢ."""
    return _weighted_sum(task_vectors(base, models), weights).mul_(alpha).add_(base)


@merge_method("ties", paper=TIES_PAPER, aliases=("ties_merging",))
def ties(base, models, weights, *, k: TrimRatio = 0.8, alpha: Alpha = 1.0,
         trim: TrimRule = "topk", trimmers=None, zero_sign=1.0):
    """TIES-Merging: trim each task vector, elect signs, disjoint mean, θ₀ + α · mean.

    ``trim``: ``topk`` keeps n − floor(k·n) entries per tensor; ``reference`` is the paper's code
    (keeps |x| ≥ the floor(k·n)-th smallest magnitude, one more); ``global`` chooses the threshold
    over the whole model (original TIES), with zero-sum sign ties taking the majority sign.
    """
    trimmed = _trim(task_vectors(base, models), trimmers, k, trim)
    return base + alpha * disjoint_mean(trimmed, weights, zero_sign)


@merge_method("dare", paper=DARE_PAPER, aliases=("dare_ta", "dare_linear"))
def dare_ta(base, models, weights, *, p: DropRate = 0.3, alpha: Alpha = 1.0, seed: Seed = 0,
            masks=None):
    """DARE (with Task Arithmetic): θ₀ + α · Σᵢ wᵢ DARE_p(δᵢ). With α = 1, DARE alone."""
    dropped = _dare(task_vectors(base, models), masks, p, seed)
    return _weighted_sum(dropped, weights).mul_(alpha).add_(base)


@merge_method("dare_ties", paper=DARE_PAPER)
def dare_ties(base, models, weights, *, p: DropRate = 0.3, k: TrimRatio = 0.0, alpha: Alpha = 1.0,
              trim: TrimRule = "topk", seed: Seed = 0, masks=None, trimmers=None, zero_sign=1.0):
    """DARE-TIES: DARE each task vector, then TIES (trim with k, elect, disjoint mean).

    k = 0 (the default) skips the magnitude trim, as mergekit's ``dare_ties`` does.
    """
    dropped = _dare(task_vectors(base, models), masks, p, seed)
    trimmed = _trim(dropped, trimmers, k, trim)
    return base + alpha * disjoint_mean(trimmed, weights, zero_sign)
