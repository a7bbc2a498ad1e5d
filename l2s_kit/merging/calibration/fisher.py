"""FIM-Merging's statistics: System 1's diagonal Fisher on random tokens per layer group, and the
squared norm of each task vector per layer group.

- ``fisher_diagonal(path, samples, tokens, seed)``: F^l = mean over the group's parameters θ of
  mean over ``samples`` random sequences of (∂L/∂θ)², L the sequence's mean next-token
  cross-entropy. A sequence is ``tokens`` ids drawn uniformly (seeded) from the tokenizer's
  vocabulary; no calibration text is read. Each sequence is its own backward pass, so the square
  is taken per sample (the diagonal of the empirical Fisher). The paper: 8 sequences of 64
  tokens, on the base model. Groups are Sens-Merging's (``layer_group``): ``model.layers.<i>``,
  the embedding, the final norm and an untied head.
- ``delta_norms(base, model)``: D^l = Σ over the group's tensors of ‖θ_model − θ_base‖² (float64,
  read block by block; embedding rows only one model has are left out).

Both are cached next to the checkpoints (:mod:`l2s_kit.merging.calibration.cache`). Above
``LAYERWISE_ABOVE`` the gradients are taken one decoder layer at a time, as Sens-Merging's are.
"""

from __future__ import annotations

import os

import torch

from l2s_kit.merging.calibration.cache import cached_tensors
from l2s_kit.merging.calibration.sensitivity import group_scores, layer_group, needs_layerwise

BLOCK_ELEMS = 1 << 24


def vocabulary(path) -> int:
    """Token ids a random sequence draws from: the tokenizer's (not the embedding's padded
    rows), at most the embedding's rows."""
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    rows = AutoConfig.from_pretrained(str(path)).vocab_size
    return min(len(tok), rows)


def random_batches(vocab: int, samples: int, tokens: int,
                   seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``samples`` batches of one sequence of ``tokens`` uniform random ids in [0, vocab)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(samples):
        ids = torch.randint(0, vocab, (1, tokens), generator=g)
        out.append((ids, torch.ones_like(ids, dtype=torch.bool)))
    return out


def group_sizes(path) -> dict[str, int]:
    """Parameters per layer group of the checkpoint at ``path`` (a tied head counts once)."""
    from l2s_kit.io import Checkpoint

    ck = Checkpoint(path)
    out: dict[str, int] = {}
    for n in ck.names:
        g = layer_group(n)
        out[g] = out.get(g, 0) + ck.info(n).numel
    return out


def fisher_diagonal(path: str | os.PathLike, *, samples: int = 8, tokens: int = 64, seed: int = 0,
                    device: str = "cpu", cache: bool = True, progress: bool = False,
                    layerwise: bool | None = None) -> dict[str, float]:
    """Layer group -> F^l of the model at ``path`` (see the module docstring)."""
    vocab = vocabulary(path)
    if layerwise is None:
        layerwise = needs_layerwise(path)

    def compute():
        return group_scores(path, random_batches(vocab, samples, tokens, seed), score="fisher",
                            layerwise=layerwise, device=device, progress=progress)

    settings = {"samples": samples, "tokens": tokens, "seed": seed, "vocab": vocab}
    out = cached_tensors("fisher", [path], settings, compute) if cache else compute()
    sizes = group_sizes(path)
    return {g: float(t) / sizes[g] for g, t in out.items()}


def delta_norms(base: str | os.PathLike, model: str | os.PathLike, *,
                cache: bool = True) -> dict[str, float]:
    """Layer group -> D^l = ‖θ_model − θ_base‖² over the group's tensors."""
    from l2s_kit.io import Checkpoint

    def compute():
        b, m = Checkpoint(base), Checkpoint(model)
        out: dict[str, torch.Tensor] = {}
        for name in b.names:
            if name not in m or not b.info(name).dtype.is_floating_point:
                continue
            shape = b.info(name).shape
            rows = min(shape[0], m.info(name).shape[0]) if shape else 1
            step = max(1, BLOCK_ELEMS // max(1, b.info(name).numel // max(1, rows)))
            total = torch.zeros((), dtype=torch.float64)
            for a in range(0, rows, step):
                sl = slice(a, min(rows, a + step)) if shape else None
                d = m.read(name, sl).double() - b.read(name, sl).double()
                total += d.square().sum()
            g = layer_group(name)
            out[g] = out[g] + total if g in out else total
        return {g: t.reshape(1) for g, t in out.items()}

    out = cached_tensors("delta-norms", [base, model], {}, compute) if cache else compute()
    return {g: float(t) for g, t in out.items()}
