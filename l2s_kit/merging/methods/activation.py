"""The activation family: AIM and Sens-Merging, merges that read calibration data.

The maths is pure (functions of tensors); what depends on names and on a pass over calibration
text is computed once by each method's ``prepare`` step (run by the engine before merging, cached
next to the checkpoints) and handed in per tensor: AIM's per-input-channel ``importance``,
Sens-Merging's per-model ``coefficients`` of the tensor's layer.

Calibration parameters (both methods): ``calib_source`` (``family``, ``s1k``, or a .jsonl/.json
path), ``calib_parts`` (``question+short`` / ``question+long`` / ``question+both``),
``calib_samples``, ``calib_seed``, ``calib_fields`` (field names of a file source) and
``calib_max_tokens``; see :mod:`l2s_kit.merging.calibration.sets`.

Tensors: ``base`` (any shape S; the last dimension is the input channel of a 2-D weight),
``models`` n tensors of shape S, ``weights`` n floats; the result has shape S.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch

from l2s_kit.errors import RecipeError
from l2s_kit.io.names import HEAD
from l2s_kit.merging.calibration.activations import activation_stats
from l2s_kit.merging.calibration.sensitivity import (
    layer_group,
    logit_distance,
    sens_coefficients,
    sensitivities,
)
from l2s_kit.merging.calibration.sets import PARTS, CalibrationError, CalibrationSpec
from l2s_kit.merging.methods.params import Alpha, Seed
from l2s_kit.merging.methods.sparsify import task_vectors, weighted_sum
from l2s_kit.merging.registry import Range, Search, State, get_method, merge_method

AIM_PAPER = "https://arxiv.org/abs/2502.02421"
SENS_PAPER = "https://arxiv.org/abs/2502.12420"

Parts = Literal["question+short", "question+long", "question+both"]
Source = Annotated[str, "calibration source: family, s1k, or a .jsonl/.json path"]
Samples = Annotated[int, Range(1, 100_000), "number of calibration texts"]
MaxTokens = Annotated[int, Range(2, 1_000_000), "tokens per calibration text"]
assert set(PARTS) == set(Parts.__args__)


def calibration_spec(params: dict, parts: str | None = None) -> CalibrationSpec:
    """The ``CalibrationSpec`` of a method's resolved parameters (``parts`` overrides)."""
    return CalibrationSpec(source=params["calib_source"], parts=parts or params["calib_parts"],
                           samples=params["calib_samples"], seed=params["calib_seed"],
                           fields=params["calib_fields"], max_tokens=params["calib_max_tokens"])


def calibration_set(source: str, parts: str, samples: int, seed: int) -> dict:
    """The parameters that pick a calibration set (every calibrated method's ``calib_*``)."""
    return {"calib_source": source, "calib_parts": parts, "calib_samples": samples,
            "calib_seed": seed}


def _sens_calibration_set(source: str, parts: str, samples: int, seed: int) -> dict:
    """Sens-Merging's: System 1 calibrated on the same parts as the models."""
    return {**calibration_set(source, parts, samples, seed), "calib_parts_base": parts}


def _check_calibration(params: dict, where: str, parts_keys=("calib_parts",)) -> None:
    for key in parts_keys:
        try:
            spec = calibration_spec(params, params[key])
        except CalibrationError as e:
            raise RecipeError(f"{where}: {e} (parameters calib_source, calib_fields, {key}, "
                              "calib_samples, calib_max_tokens)") from None
        if spec.source == "s1k" and spec.parts != "question+short":
            raise RecipeError(f"{where}: parameter '{key}' = {spec.parts!r}, but s1K has no long "
                              "answers (its thinking trajectories are not included); use "
                              "question+short or a source with long answers")


def _path_of(src, method: str) -> str:
    from l2s_kit.io import Checkpoint

    path = src.path if isinstance(src, Checkpoint) else None
    if path is None:
        raise RecipeError(f"{method} computes its statistics through the checkpoints' tokenizer "
                          "and config, so its inputs must be checkpoint folders, not in-memory "
                          "models or state dicts; save them with save_pretrained first")
    return str(path)


# ---- AIM ---------------------------------------------------------------------------------------

def aim_importance(a: torch.Tensor) -> torch.Tensor:
    """I = a / max(a) for one module's activation means ``a`` (shape (C,))."""
    return a / a.max().clamp_min(torch.finfo(a.dtype).tiny)


def aim_relax(base: torch.Tensor, merged: torch.Tensor, importance: torch.Tensor,
              omega: float) -> torch.Tensor:
    """θ₀ + (θ_merged − θ₀) ⊙ (1 − I·(1 − ω)), the factor broadcast over the last dimension
    (``importance`` has shape (C,), C = base.shape[-1])."""
    factor = (1 - importance.to(base.dtype) * (1 - omega))
    return (merged - base).mul_(factor).add_(base)


def _aim_prepare(run, params):
    stats = activation_stats(_path_of(run.inputs[0], "aim"), calibration_spec(params),
                             progress=run.progress, device=run.device)
    imp = {name + ".weight": aim_importance(a).float() for name, a in stats.items()}

    def state(job):
        i = imp.get(job.name)
        if i is not None and i.numel() != job.out.shape[-1]:
            raise RecipeError(f"aim: activation statistics of {job.name[:-7]} have {i.numel()} "
                              f"channels but the tensor has shape {job.out.shape}")

        def block(rows):
            if i is None:  # embeddings, head, biases: not relaxed
                return {"importance": None}
            return {"importance": (i[rows] if len(job.out.shape) == 1 and rows is not None
                                   else i).to(run.device)}
        return block

    return state


@merge_method("aim", paper=AIM_PAPER, wraps=True, prepare=_aim_prepare, calibrated=True,
              calibration_set=calibration_set,
              check=lambda p, where: _check_calibration(p, where))
def aim(base, models, weights, *,
        omega: Annotated[float, Range(0.0, 1.0), "balance factor: 1 = no relaxation"] = 0.4,
        inner: str = "ties",
        calib_source: Source = "family", calib_parts: Parts = "question+short",
        calib_samples: Samples = 100, calib_seed: Seed = 0,
        calib_fields: str = "question,short,long", calib_max_tokens: MaxTokens = 512,
        merged: State = None, importance: State = None):
    """AIM: relax another merge towards the base on the input channels the base uses most.

    θ = θ₀ + (θ_merged − θ₀) ⊙ (1 − I·(1 − ω)), I = a / max(a) per module, a_c the base model's
    mean |input| of channel c over the calibration set (``l2s_kit.merging.calibration.activations``). ``inner`` names
    the merge relaxed (AIM-Ties: ``inner: ties``), with its parameters beside AIM's. Embeddings,
    the output head and biases are not relaxed (``importance`` None). Called directly without
    ``merged`` the inner merge runs with its defaults.
    """
    if merged is None:
        merged = get_method(inner)(base, models, weights)
    if importance is None:
        return merged
    return aim_relax(base, merged, importance, omega)


# ---- Sens-Merging ------------------------------------------------------------------------------

def _sens_prepare(run, params):
    table = sens_table([_path_of(s, "sens_merging") for s in run.inputs], params,
                       device=run.device, progress=run.progress)

    def state(job):
        g = layer_group(job.name)
        if g not in table and g == HEAD:  # an untied output of tied inputs: the embedding's
            g = layer_group(job.sources[0])
        coefficients = {"coefficients": table.get(g)}
        return lambda rows: coefficients

    return state


def sens_table(paths: list[str], params: dict, *, device: str = "cpu",
               progress: bool = False) -> dict[str, list[float]]:
    """Layer group -> coefficient n·σ_i of each merged model (``paths``: base first).

    Participants: with ``include_base`` the base counts as model 0 with a zero task vector (the
    L2S case, where the base is System 1 itself), so its share lowers the others'; without it,
    only the models (the original setting: a pretrained base and fine-tuned experts). The base is
    calibrated on ``calib_parts_base`` (paper: long answers for System 1), the models on
    ``calib_parts`` (paper: short answers for System 2).
    """
    base, models = paths[0], paths[1:]
    part = ([(base, calibration_spec(params, params["calib_parts_base"]))]
            if params["include_base"] else [])
    part += [(m, calibration_spec(params)) for m in models]
    S = [sensitivities(p, s, device=device, progress=progress) for p, s in part]
    groups = list(S[0])
    n = len(part)
    g = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i != j:
                g[i, j] = logit_distance(part[i][0], part[j][0], part[j][1], device=device,
                                         progress=progress)
    st = torch.tensor([[s.get(gr, 0.0) for gr in groups] for s in S], dtype=torch.float64)
    c = sens_coefficients(st, g, params["temperature"])
    if params["include_base"]:
        c = c[1:]
    return {gr: c[:, li].tolist() for li, gr in enumerate(groups)}


@merge_method("sens_merging", paper=SENS_PAPER, aliases=("sens",), prepare=_sens_prepare,
              calibrated=True, unscheduled=("temperature",), coefficient_label="Sens-Merging (n·σ)",
              calibration_set=_sens_calibration_set,
              layer_coefficients=lambda paths, p: {g: c[0] for g, c in sens_table(paths, p).items()},
              check=lambda p, where: _check_calibration(p, where,
                                                        ("calib_parts", "calib_parts_base")))
def sens_merging(base, models, weights, *, alpha: Alpha = 0.7,
                 temperature: Annotated[float, Range(0.0, 1000.0, lo_open=True),
                                        Search(0.5, 10.0, 0.5), "softmax temperature T"] = 2.0,
                 include_base: bool = True,
                 calib_source: Source = "family", calib_parts: Parts = "question+short",
                 calib_parts_base: Parts = "question+long",
                 calib_samples: Samples = 100, calib_seed: Seed = 0,
                 calib_fields: str = "question,short,long", calib_max_tokens: MaxTokens = 512,
                 coefficients: State = None):
    """Sens-Merging: task arithmetic with per-layer, per-model coefficients from sensitivities.

    θ^l = θ₀^l + α · Σᵢ wᵢ · n·σ_i^l · δᵢ^l, σ_i^l = softmax_i(α_i^l τ_i / T), with α_i^l the
    model's layer sensitivity normalised over its layers and τ_i its normalised logit distance
    to the other models (:func:`l2s_kit.merging.calibration.sensitivity.sens_coefficients`, :func:`sens_table`).

    Choices where the paper is silent or ambiguous: the loss is the mean next-token
    cross-entropy over every token of a calibration text; |θ ⊙ ∂L/∂θ| is taken per sample, then
    averaged; g_ij averages over tokens; layer groups are ``model.layers.<i>`` with the
    embedding, final norm and head as groups of their own; in the L2S setting (``include_base``,
    the default) System 1 is both the base and a participant with a zero task vector, since the
    paper calibrates "the System 1 model" on long answers and System 2 on short ones. The paper's
    7B setting is α = 0.7, T = 2.0 on 100 s1K samples. Called directly without
    ``coefficients`` every model gets 1 (task arithmetic).
    """
    coefficients = coefficients or [1.0] * len(models)
    scale = [w * c for w, c in zip(weights, coefficients)]
    return weighted_sum(task_vectors(base, models), scale).mul_(alpha).add_(base)
