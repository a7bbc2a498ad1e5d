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

The whole-model sensitivity pass holds the model in float32 with its gradients (≈ 8 bytes per
parameter plus activations: about 60 GB for a 7B). Above ``LAYERWISE_ABOVE`` (0.5B parameters)
it runs layer by layer instead (:func:`sensitivities_layerwise`: one decoder layer with its
gradients, the embedding and head, and the hidden states at layer boundaries; the same numbers).
The logit distances need no gradients but hold both models (float32). Results are cached next to
the checkpoint (``l2s_kit.merging.calibration.cache``).
"""

from __future__ import annotations

import os
import re

import torch
from tqdm.auto import tqdm

from l2s_kit.io.names import EMBED, LM_HEAD, NORM, layer
from l2s_kit.merging.calibration.activations import tokenize
from l2s_kit.merging.calibration.cache import cached_tensors
from l2s_kit.merging.calibration.sets import CalibrationSpec, texts

_LAYER = re.compile(r"^(.*?layers\.\d+)\.")
LAYERWISE_ABOVE = 4 * 2**30  # bytes of float32 weights + gradients: 0.5B parameters


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
                  cache: bool = True, progress: bool = False,
                  layerwise: bool | None = None) -> dict[str, float]:
    """Layer group -> S^l of the model at ``path`` on ``spec``'s texts (see the module docstring).
    ``layerwise``: one decoder layer at a time (:func:`sensitivities_layerwise`, the same
    numbers in a fraction of the memory); None: when the whole model's float32 weights and
    gradients (8 bytes per parameter) would exceed ``LAYERWISE_ABOVE`` bytes."""
    if layerwise is None:
        layerwise = needs_layerwise(path)

    def compute():
        return group_scores(path, _batches(path, spec), layerwise=layerwise, device=device,
                            progress=progress)

    out = cached_tensors("sensitivity", [path], spec.key(), compute) if cache else compute()
    return {g: float(t) for g, t in out.items()}


def needs_layerwise(path) -> bool:
    """Whether the whole model's float32 weights and gradients (8 bytes per parameter) exceed
    ``LAYERWISE_ABOVE`` bytes, so that gradients are taken one decoder layer at a time."""
    from l2s_kit.io import Checkpoint

    ck = Checkpoint(path)
    return 8 * sum(ck.info(n).numel for n in ck.names) > LAYERWISE_ABOVE


def group_scores(path, batches, *, score: str = "sensitivity", layerwise: bool = False,
                 device: str = "cpu", progress: bool = False) -> dict[str, torch.Tensor]:
    """Layer group -> mean over ``batches`` (one sample each) of the summed ``entry_score`` of
    the group's parameters and their gradients of the sample's mean next-token cross-entropy;
    the whole model in memory, or one layer at a time (:func:`sensitivities_layerwise`)."""
    if layerwise:
        return sensitivities_layerwise(path, batches, device=device, progress=progress,
                                       score=score)
    model = _model(path, device).eval()
    params = [(layer_group(n), p) for n, p in model.named_parameters()]
    totals: dict[str, torch.Tensor] = {}
    for ids, _ in tqdm(batches, desc=f"{score} of {path}", disable=not progress):
        model.zero_grad(set_to_none=True)
        ids = ids.to(device)
        model(input_ids=ids, labels=ids).loss.backward()
        for g, p in params:
            if p.grad is not None:
                _add(totals, g, entry_score(p.detach(), p.grad, score).sum().double().cpu())
    return {g: (t / len(batches)).reshape(1) for g, t in totals.items()}


def _add(totals: dict, group: str, s: torch.Tensor) -> None:
    totals[group] = totals[group] + s if group in totals else s


def entry_score(w: torch.Tensor, g: torch.Tensor, score: str) -> torch.Tensor:
    """Per entry: |θ ⊙ ∂L/∂θ| (``score="sensitivity"``, Sens-Merging) or (∂L/∂θ)²
    (``score="fisher"``, the diagonal empirical Fisher of FIM-Merging)."""
    return (w * g).abs() if score == "sensitivity" else g.square()


def _group_sum(module: torch.nn.Module, prefix: str, totals: dict,
               score: str = "sensitivity") -> None:
    """Add the summed ``entry_score`` of ``module``'s parameters to their layer groups, then
    clear the grads."""
    for n, p in module.named_parameters():
        if p.grad is not None:
            _add(totals, layer_group(f"{prefix}.{n}"),
                 entry_score(p.detach(), p.grad, score).sum().double())
            p.grad = None


def _head_rows(w: torch.Tensor, dz: torch.Tensor, h: torch.Tensor, score: str = "sensitivity",
               block: int = 1 << 14) -> torch.Tensor:
    """Per row r of the head ``w`` (V × H): Σ_j of the ``entry_score`` of w[r, j] and its
    gradient (dzᵀ h)[r, j] in float64, by blocks of rows, so that neither the head's gradient
    nor the scores are ever whole in memory."""
    out = torch.empty(w.shape[0], dtype=torch.float64, device=w.device)
    for a in range(0, w.shape[0], block):
        g = dz[:, a:a + block].T @ h
        out[a:a + block] = entry_score(w[a:a + block], g, score).sum(dim=1, dtype=torch.float64)
    return out


def sensitivities_layerwise(path, batches, *, chunk: int = 8, device: str = "cpu",
                            progress: bool = False,
                            score: str = "sensitivity") -> dict[str, torch.Tensor]:
    """:func:`sensitivities` without the whole model's weights and gradients in memory: a
    backward through one decoder layer at a time, recomputing its forward from the hidden states
    kept at layer boundaries (activation checkpointing by hand).

    Samples go in chunks of ``chunk``: a forward sweep reads each layer once and keeps the chunk's
    hidden states at every layer boundary; a backward sweep reads each layer again and, sample by
    sample (|·| is taken per sample, as the whole-model version does), recomputes the layer's
    forward with gradients, backpropagates the gradient of the hidden states coming from above,
    adds Σ|θ ⊙ ∂L/∂θ| to the layer's group and passes the input's gradient down. The embedding
    gets the gradient of the rows its tokens used; a tied head adds its own gradient to the same
    matrix before |·|, as one shared parameter does (rows no token used are summed at once, the
    used ones kept until the embedding's gradient arrives). The head's gradient is never whole:
    it is dzᵀh (dz = ∂L/∂logits), formed and reduced by blocks of rows. Memory: one decoder
    layer with its gradients, the embedding and head weights (float32), one sample's logits and
    their gradient, and chunk × tokens × hidden floats per layer boundary; every layer is read
    twice per chunk. Equal to the whole-model
    result (a test checks it). ``score="fisher"`` sums (∂L/∂θ)² instead of |θ ⊙ ∂L/∂θ|
    (:func:`fisher_diagonal`)."""
    from l2s_kit.merging.calibration.activations import Decoder

    dec = Decoder(path, device)
    tied = bool(getattr(dec.config, "tie_word_embeddings", False)) or LM_HEAD not in dec.ckpt
    embed = dec.ckpt.read(EMBED).float().to(device)
    run = _Sweep(dec, embed, embed if tied else dec.ckpt.read(LM_HEAD).float().to(device),
                 tied, score)
    samples = [(ids.to(device), mask.to(device)) for ids, mask in batches]
    bar = tqdm(total=len(samples), desc=f"{score} of {path} (layer by layer)",
               disable=not progress)
    for a in range(0, len(samples), chunk):
        part = samples[a:a + chunk]
        ctx = run.forward(part)
        grads = run.head(part, ctx)
        grads = run.backward(ctx, grads)
        run.embedding(part, ctx, grads)
        bar.update(len(part))
    bar.close()
    return {g: (t / len(samples)).reshape(1).cpu() for g, t in run.totals.items()}


class _Sweep:
    """The sweeps of :func:`sensitivities_layerwise` over one chunk of samples, adding to
    ``totals`` (layer group → summed score)."""

    def __init__(self, dec, embed: torch.Tensor, head_w: torch.Tensor, tied: bool, score: str):
        self.dec, self.embed, self.head_w, self.tied, self.score = dec, embed, head_w, tied, score
        self.norm = dec.norm()
        self.totals: dict[str, torch.Tensor] = {}
        self.embed_group = layer_group(EMBED)
        self.head_group = self.embed_group if tied else layer_group(LM_HEAD)

    def forward(self, part) -> list[dict]:
        """Every sample's hidden states at every layer boundary (no gradients), each layer read
        once."""
        import torch.nn.functional as F

        ctx = []
        for ids, mask in part:
            h = F.embedding(ids, self.embed)
            ctx.append({"ctx": self.dec.context(h, mask), "hs": [h]})
        with torch.no_grad():
            for i in range(self.dec.n_layers):
                mod = self.dec.layer(i)
                for c in ctx:
                    c["hs"].append(self.dec.run(mod, i, c["hs"][-1], c["ctx"]))
                del mod
                self.dec.drop(i)
        return ctx

    def head(self, part, ctx: list[dict]) -> list[torch.Tensor]:
        """The loss (final norm, head, next-token cross-entropy) of each sample: the norm's and
        the head's scores added, and the gradient of the last hidden states returned."""
        import torch.nn.functional as F

        grads = []
        for (ids, _), c in zip(part, ctx):
            x = c["hs"][-1].detach().requires_grad_()
            hn = self.norm(x)
            logits = F.linear(hn, self.head_w)  # the head's weight gets its gradient by blocks
            logits.retain_grad()
            F.cross_entropy(logits[0, :-1].float(), ids[0, 1:]).backward()
            _group_sum(self.norm, NORM, self.totals, self.score)
            dz, h = logits.grad[0], hn.detach()[0]  # ∂L/∂logits (T × V), the head's input (T × H)
            rows = _head_rows(self.head_w, dz, h, self.score)  # per row, ∂L/∂W = dzᵀ h by blocks
            if self.tied:  # one shared matrix: rows no token of the sample used are final now,
                # the used ones wait for the embedding's gradient
                uniq = torch.unique(ids[0])
                _add(self.totals, self.embed_group, rows.sum() - rows[uniq].sum())
                c["head_rows"] = dz[:, uniq].T @ h
            else:
                _add(self.totals, self.head_group, rows.sum())
            grads.append(x.grad)
            c["hs"].pop()
        return grads

    def backward(self, ctx: list[dict], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """One decoder layer at a time, top down: its forward recomputed with gradients per
        sample, its scores added, the gradient passed down; returns the embeddings' gradients."""
        for i in reversed(range(self.dec.n_layers)):
            mod = self.dec.layer(i)
            for k, c in enumerate(ctx):
                x = c["hs"].pop().detach().requires_grad_()
                self.dec.run(mod, i, x, c["ctx"]).backward(grads[k])
                _group_sum(mod, layer(i), self.totals, self.score)
                grads[k] = x.grad
            del mod
            self.dec.drop(i)
        return grads

    def embedding(self, part, ctx: list[dict], grads: list[torch.Tensor]) -> None:
        """The embedding rows the samples' tokens used (with a tied head's gradient of them)."""
        pad = self.dec.padding_idx
        for (ids, _), c, g in zip(part, ctx, grads):
            uniq, inv = torch.unique(ids[0], return_inverse=True)
            if pad is not None:  # the model's embedding never updates its padding row
                g = g.masked_fill((ids == pad)[..., None], 0)
            rows = torch.zeros(len(uniq), self.embed.shape[1],
                               device=self.embed.device).index_add_(0, inv, g[0])
            if self.tied:
                rows += c.pop("head_rows")
            _add(self.totals, self.embed_group,
                 entry_score(self.embed[uniq], rows, self.score).sum().double())


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
