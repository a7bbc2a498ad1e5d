"""Sens-Merging's statistics: layer sensitivities from gradients, logit distances between models.

- ``sensitivities(path, spec)``: S^l = mean over the calibration samples of Σ_{θ ∈ group l}
  |θ ⊙ ∂L/∂θ|, L the sample's mean next-token cross-entropy over all its tokens (question and
  answer alike; the paper does not say which tokens, and its calibration texts are whole
  question-answer pairs). Each sample is its own backward pass (batch of one), so |·| is taken per
  sample before the mean, as a first-order estimate of the loss change if the group's weights were
  removed, per sample. Groups (``layer_group``): ``model.layers.<i>``, and every other module on
  its own (``model.embed_tokens``, ``model.norm``, ``lm_head``; a tied head counts once, in the
  embedding's group).
- ``logit_distance(path_i, path_j, spec_j)``: the mean over the tokens of model j's calibration
  texts of ‖z_i − z_j‖₂, the L2 distance between the two models' logit vectors at that token
  (tokens, not samples, are averaged: a long sample weighs more).
- ``sens_coefficients(S, g, T)``: the maths of the method (see ``l2s_kit.merging.methods.activation``).

Both passes hold the whole model in float32 with its gradients (≈ 8 bytes per parameter plus
activations): fine for the built-in family and for 1.5B models on a CPU; a 7B model needs about
60 GB, i.e. a GPU with that much memory (or a layer-streamed backward with recomputation, which
the kit does not implement). Results are cached next to the checkpoint (``l2s_kit.merging.calibration.cache``).
"""

from __future__ import annotations

import os
import re

import torch
from tqdm.auto import tqdm

from l2s_kit.merging.calibration.activations import tokenize
from l2s_kit.merging.calibration.cache import cached_tensors
from l2s_kit.merging.calibration.sets import CalibrationSpec, texts

_LAYER = re.compile(r"^(.*?layers\.\d+)\.")


def layer_group(name: str) -> str:
    """``model.layers.3.mlp.up_proj.weight`` -> ``model.layers.3``; else the module's name
    (``model.norm.weight`` -> ``model.norm``, ``lm_head.weight`` -> ``lm_head``)."""
    m = _LAYER.match(name)
    return m.group(1) if m else name.rsplit(".", 1)[0]


def _model(path, device: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(device)


def _batches(path, spec: CalibrationSpec):
    return tokenize(path, texts(spec), spec.max_tokens, batch_size=1)


def sensitivities(path: str | os.PathLike, spec: CalibrationSpec, *, device: str = "cpu",
                  cache: bool = True, progress: bool = False) -> dict[str, float]:
    """Layer group -> S^l of the model at ``path`` on ``spec``'s texts (see the module docstring)."""
    def compute():
        model = _model(path, device).eval()
        params = [(layer_group(n), p) for n, p in model.named_parameters()]
        totals: dict[str, torch.Tensor] = {}
        batches = _batches(path, spec)
        for ids, _ in tqdm(batches, desc=f"sensitivity of {path}", disable=not progress):
            model.zero_grad(set_to_none=True)
            ids = ids.to(device)
            model(input_ids=ids, labels=ids).loss.backward()
            for g, p in params:
                if p.grad is not None:
                    s = (p.detach() * p.grad).abs().sum().double().cpu()
                    totals[g] = totals[g] + s if g in totals else s
        return {g: (t / len(batches)).reshape(1) for g, t in totals.items()}

    out = cached_tensors("sensitivity", [path], spec.key(), compute) if cache else compute()
    return {g: float(t) for g, t in out.items()}


def logit_distance(path_i, path_j, spec_j: CalibrationSpec, *, device: str = "cpu",
                   cache: bool = True, progress: bool = False) -> float:
    """g_ij: mean per-token ‖z_i − z_j‖₂ over model j's calibration texts ``spec_j``."""
    def compute():
        mi, mj = _model(path_i, device).eval(), _model(path_j, device).eval()
        total, count = torch.zeros((), dtype=torch.float64), 0
        with torch.no_grad():
            for ids, mask in tqdm(tokenize(path_j, texts(spec_j), spec_j.max_tokens),
                                  desc="logit distance", disable=not progress):
                ids, mask = ids.to(device), mask.to(device)
                zi = mi(input_ids=ids, attention_mask=mask.long()).logits
                zj = mj(input_ids=ids, attention_mask=mask.long()).logits
                d = (zi - zj).float().norm(dim=-1)  # (B, T)
                total += d[mask].double().sum().cpu()
                count += int(mask.sum())
        return {"distance": (total / count).reshape(1)}

    out = (cached_tensors("logit-distance", [path_i, path_j], spec_j.key(), compute) if cache
           else compute())
    return float(out["distance"])


def sens_coefficients(S: torch.Tensor, g: torch.Tensor, temperature: float) -> torch.Tensor:
    """n·σ (shape (n, L)) from sensitivities ``S`` (n models × L groups) and logit distances ``g``
    (n × n, g[i, j] on model j's data; the diagonal is ignored):

    α_i^l = S_i^l / ‖S_i‖₂;  τ_i = Σ_{j≠i} g_ij, normalised to Σ τ = 1;
    σ_i^l = softmax_i(α_i^l · τ_i / T).
    """
    S, g = S.double(), g.double()
    n = S.shape[0]
    a = S / S.norm(dim=1, keepdim=True).clamp_min(1e-300)
    off = g * (1 - torch.eye(n, dtype=g.dtype))
    tau = off.sum(1)
    tau = tau / tau.sum() if float(tau.sum()) > 0 else torch.full_like(tau, 1 / n)
    return n * torch.softmax(a * tau[:, None] / temperature, dim=0)
