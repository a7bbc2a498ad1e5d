"""Layer-adaptive merges that followed the L2S paper: ACM and FIM-Merging.

Both wrap another merge (TIES, task arithmetic, DARE, ...) as AIM does, and scale its task vector
layer group by layer group: θ^l = θ₀^l + c^l · (θ_merged^l − θ₀^l). They differ in where c^l
comes from:

- **ACM** (Activation-Guided Consensus Merging, arXiv 2505.14009): the normalised mutual
  information between System 1's and System 2's activations at the layer, on calibration text.
  Layers where System 2 still looks like System 1 (high NMI) carry less of the task vector, layers
  where it diverged (low NMI) more.
- **FIM-Merging** (arXiv 2603.21705): System 1's diagonal Fisher on random tokens (no
  calibration text) times the squared norm of the layer's task vector, a proxy of the layer's
  merging error; high-scoring layers are merged conservatively (a small c^l).

Groups are Sens-Merging's layer groups: ``model.layers.<i>``, the embedding, the final norm and
the head (:func:`l2s_kit.merging.calibration.sensitivity.layer_group`). With several models the
per-model coefficients (ACM) or task-vector norms (FIM) are averaged, since one scale applies to
the merged task vector. Statistics are cached next to the checkpoints.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from l2s_kit.io.names import HEAD
from l2s_kit.merging.calibration.fisher import delta_norms, fisher_diagonal
from l2s_kit.merging.calibration.mutual_info import layer_nmi
from l2s_kit.merging.calibration.sensitivity import layer_group
from l2s_kit.merging.methods.activation import (
    MaxTokens,
    Parts,
    Samples,
    Source,
    _check_calibration,
    _path_of,
    calibration_set,
    calibration_spec,
)
from l2s_kit.merging.methods.params import Seed
from l2s_kit.merging.registry import Range, State, get_method, merge_method

ACM_PAPER = "https://arxiv.org/abs/2505.14009"
FIM_PAPER = "https://arxiv.org/abs/2603.21705"



def relax(base: torch.Tensor, merged: torch.Tensor, c: float) -> torch.Tensor:
    """θ₀ + c · (θ_merged − θ₀)."""
    return (merged - base).mul_(c).add_(base)


def _coefficient_state(run, table: dict[str, float], extra=lambda job: {}, note: str = ""):
    """``state(job)`` handing each block the coefficient of the job's layer group (an untied
    head of tied inputs takes its source's group, as Sens-Merging does). ``note`` (with
    ``{groups}``, the table's values by group) goes to the model card."""
    if note:
        groups = ", ".join(f"{g.removeprefix('model.')} {v:.4g}" for g, v in table.items())
        run.notes.append(note.format(groups=groups))

    def state(job):
        g = layer_group(job.name)
        if g not in table:
            g = layer_group(job.sources[0])
        kw = {"coefficient": table.get(g), **extra(job)}
        return lambda rows: kw

    return state


# ---- ACM ---------------------------------------------------------------------------------------

def acm_coefficients(nmi: dict[str, float]) -> dict[str, float]:
    """c^l = w^l / mean(w), w^l = 1 − NMI^l over every group: the coefficients average 1, so the
    inner merge keeps its overall strength, moved towards the layers that diverged (a method's
    ``scale`` multiplies them). All w = 0 (identical activations) gives c = 1.

    Hand check: NMI = [0.8, 0.6, 0.2] → w = [0.2, 0.4, 0.8], mean 7/15 → c = [3/7, 6/7, 12/7].
    """
    groups = [g for g in nmi if g != HEAD]  # the head reads the norm's states: counted once
    w = {g: 1.0 - nmi[g] for g in nmi}
    mean = sum(w[g] for g in groups) / len(groups)
    return {g: (w[g] / mean if mean > 0 else 1.0) for g in nmi}


def acm_table(paths: list[str], params: dict, *, device: str = "cpu",
              progress: bool = False) -> dict[str, float]:
    """Layer group -> ACM's coefficient before ``scale`` (``paths``: base first; several models'
    coefficients averaged)."""
    spec = calibration_spec(params)
    per_model = [acm_coefficients(layer_nmi(paths[0], p, spec, bins=params["bins"],
                                            pairs=params["pairs"], seed=params["calib_seed"],
                                            progress=progress, device=device))
                 for p in paths[1:]]
    return {g: sum(c[g] for c in per_model) / len(per_model) for g in per_model[0]}


def _acm_prepare(run, params):
    paths = [_path_of(s, "acm") for s in run.inputs]
    return _coefficient_state(run, acm_table(paths, params, device=run.device,
                                             progress=run.progress),
                              note="acm: per-layer coefficient c (before scale) by layer group: "
                                   "{groups}")


@merge_method("acm", paper=ACM_PAPER, wraps=True, prepare=_acm_prepare, calibrated=True,
              calibration_set=calibration_set,
              check=lambda p, where: _check_calibration(p, where), coefficient_label="ACM (scale·c)",
              layer_coefficients=lambda paths, p: {
                  g: p["scale"] * c for g, c in acm_table(paths, p).items()})
def acm(base, models, weights, *,
        scale: Annotated[float, Range(0.0, 10.0), "multiplies every layer coefficient (their "
                         "mean is 1)"] = 1.0,
        bins: Annotated[int, Range(2, 4096), "equal-frequency bins per variable of the NMI"] = 32,
        pairs: Annotated[int, Range(16, 1 << 24), "activation pairs drawn per layer"] = 1 << 20,
        inner: str = "ties",
        calib_source: Source = "family", calib_parts: Parts = "question+short",
        calib_samples: Samples = 100, calib_seed: Seed = 0,
        calib_fields: str = "question,short,long", calib_max_tokens: MaxTokens = 512,
        merged: State = None, coefficient: State = None):
    """ACM: scale another merge's task vector per layer by how far System 2's activations moved.

    θ^l = θ₀^l + scale · c^l · (θ_merged^l − θ₀^l), c^l = w^l / mean(w), w^l = 1 − NMI^l, NMI^l
    the normalised mutual information of System 1's and System 2's hidden states after layer l on
    the calibration texts (:func:`l2s_kit.merging.calibration.mutual_info.layer_nmi`).
    ``inner`` names the merge scaled (ACM-TIES: ``inner: ties``), its parameters beside ACM's.

    What the paper fixes: layer-specific coefficients from the mutual information of the
    pre-trained and fine-tuned models' activations, lower for layers of higher MI, applied on top
    of a merge (TA, TIES). What this implementation chooses (the paper's exact estimator and
    mapping were not available to this code; the authors' scripts take a parameter ``theta``,
    whose role could not be checked): MI estimated from ``pairs`` (token, channel) activation
    pairs per layer with ``bins`` equal-frequency bins, normalised by √(H·H); the coefficients
    normalised to mean 1 over the layer groups (embedding, layers, final norm), so ``scale``
    and the inner merge's α set the overall strength; a coefficient above 1 extrapolates the
    inner merge on that layer; the head takes the final norm's value. Called directly without
    ``coefficient`` it returns the inner merge.
    """
    if merged is None:
        merged = get_method(inner)(base, models, weights)
    if coefficient is None:
        return merged
    return relax(base, merged, scale * coefficient)


# ---- FIM-Merging -------------------------------------------------------------------------------

def fim_scores(fisher: dict[str, float], norms: dict[str, float]) -> dict[str, float]:
    """z^l: the standardised log of s^l = F^l · D^l over the groups (population standard
    deviation; 0 for every group when all scores are equal). Groups whose task vector is zero
    (D = 0: nothing to merge) get z = 0 and do not count in the mean."""
    s = {g: fisher[g] * norms.get(g, 0.0) for g in fisher}
    logs = {g: math.log(v) for g, v in s.items() if v > 0}
    if not logs:
        return {g: 0.0 for g in s}
    mean = sum(logs.values()) / len(logs)
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs.values()) / len(logs))
    return {g: ((logs[g] - mean) / sd if g in logs and sd > 0 else 0.0) for g in s}


def fim_coefficient(z: float, lo: float, hi: float, sharpness: float) -> float:
    """α^l = lo + (hi − lo) · σ(−sharpness · z^l): the average layer gets the middle of
    [lo, hi], layers of larger Fisher-weighted task vectors less.

    Hand check: F = [1e-2, 1e-4, 1e-6], D = [1, 1, 1] → log s = [−4.605, −9.210, −13.816],
    z = [1.2247, 0, −1.2247] → α = [0.2271, 0.5, 0.7729] (lo 0, hi 1, sharpness 1)."""
    return lo + (hi - lo) / (1.0 + math.exp(sharpness * z))


def fim_table(paths: list[str], params: dict, *, device: str = "cpu",
              progress: bool = False) -> dict[str, float]:
    """Layer group -> z^l (``paths``: base first; several models' task-vector norms averaged)."""
    fisher = fisher_diagonal(paths[0], samples=params["fim_samples"], tokens=params["fim_tokens"],
                             seed=params["fim_seed"], device=device, progress=progress)
    norms = [delta_norms(paths[0], p) for p in paths[1:]]
    mean = {g: sum(n.get(g, 0.0) for n in norms) / len(norms) for g in fisher}
    return fim_scores(fisher, mean)


def _fim_prepare(run, params):
    paths = [_path_of(s, "fim") for s in run.inputs]
    z = fim_table(paths, params, device=run.device, progress=run.progress)
    return _coefficient_state(run, z, lambda job: {"gate": "gate_proj" in job.name},
                              note="fim: standardised log Fisher score z by layer group (the "
                                   "coefficient is lo + (hi - lo)·σ(-sharpness·z)): {groups}")


@merge_method("fim", paper=FIM_PAPER, aliases=("fim_merging",), wraps=True, prepare=_fim_prepare,
              calibrated=True, unscheduled=("fim_samples", "fim_tokens"),
              coefficient_label="FIM-Merging (α)", layer_coefficients=lambda paths, p: {
                  g: fim_coefficient(z, p["lo"], p["hi"], p["sharpness"])
                  for g, z in fim_table(paths, p).items()})
def fim(base, models, weights, *,
        lo: Annotated[float, Range(0.0, 10.0), "coefficient of the highest-scoring layers"] = 0.0,
        hi: Annotated[float, Range(0.0, 10.0), "coefficient of the lowest-scoring layers"] = 1.0,
        sharpness: Annotated[float, Range(0.0, 100.0), "slope of the sigmoid over z"] = 1.0,
        gate_scale: Annotated[float, Range(0.0, 1.0), "extra factor on MLP gate projections "
                              "(the paper's FIM-TIES: 0.7)"] = 1.0,
        fim_samples: Annotated[int, Range(1, 100_000), "random sequences"] = 8,
        fim_tokens: Annotated[int, Range(2, 1_000_000), "tokens per random sequence"] = 64,
        fim_seed: Seed = 0,
        inner: str = "ties",
        merged: State = None, coefficient: State = None, gate: State = None):
    """FIM-Merging: scale another merge's task vector per layer by System 1's Fisher, data-free.

    θ^l = θ₀^l + α^l · (θ_merged^l − θ₀^l), α^l = lo + (hi − lo)·σ(−sharpness·z^l), z^l the
    standardised log of F^l·‖δ^l‖², F^l System 1's mean diagonal Fisher over the layer group on
    ``fim_samples`` random sequences of ``fim_tokens`` uniform token ids
    (:mod:`l2s_kit.merging.calibration.fisher`); MLP gate projections get α^l · ``gate_scale``.
    FIM-TA is ``inner: task_arithmetic, alpha: 1``; FIM-TIES ``inner: ties`` (the paper keeps
    20% of the entries at 1.5B, 40% at 7B: k 0.8 / 0.6) with ``gate_scale: 0.7``.

    What the paper fixes: diagonal FIM of the base model from 8 random sequences of 64 tokens,
    no calibration data; the layer score FIM × ‖δ‖²; log normalisation and a sigmoid map to
    per-layer coefficients, conservative (small) where the score is high; gate protection 0.7·α.
    What this implementation chooses (the paper's exact map was not available to this code): the
    loss is each random sequence's own next-token cross-entropy (an empirical Fisher); the log
    scores are standardised (mean 0, standard deviation 1) over the layer groups, including the
    embedding, final norm and an untied head; the sigmoid's range [lo, hi] and slope are
    parameters (defaults 0, 1, 1: an average layer gets 0.5). Left out: the paper's FIM-TIES
    "residual norm calibration" (rescaling layers whose merged norm deviates by more than 5%),
    whose reference norm is not specified. Called directly without ``coefficient`` it returns the
    inner merge.
    """
    if merged is None:
        merged = get_method(inner)(base, models, weights)
    if coefficient is None:
        return merged
    a = fim_coefficient(coefficient, lo, hi, sharpness) * (gate_scale if gate else 1.0)
    return relax(base, merged, a)
