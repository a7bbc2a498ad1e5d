"""ACM's statistics: how much System 2's activations still tell about System 1's, layer by layer.

``layer_nmi(base, model, spec)`` runs both checkpoints over the same calibration tokens (the
base's tokenizer) one decoder layer at a time, and at every layer boundary compares the two
models' hidden states with :func:`nmi`: each of the ``pairs`` positions (a real token and a
hidden channel, drawn once, seeded, the same for both models) gives one pair of scalars (the
base's activation, the model's activation). Groups (``layer_group`` names):

- ``model.embed_tokens``: the embedding outputs;
- ``model.layers.<i>``: the output of decoder layer i (the residual stream after it);
- ``model.norm`` (and ``lm_head``, which reads the same states): the final normed hidden states.

Memory: one decoder layer of each model plus both models' hidden states (samples × tokens ×
hidden floats each), never a whole model; results are cached next to the base checkpoint.
"""

from __future__ import annotations

import math
import os

import torch
from tqdm.auto import tqdm

from l2s_kit.io.names import EMBED_MODULE, HEAD, NORM, layer
from l2s_kit.merging.calibration.cache import cached_tensors
from l2s_kit.merging.calibration.sets import CalibrationSpec, texts

MAX_QUANTILE = 1 << 24  # torch.quantile's input limit


def _bins(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-frequency bin of every entry of ``x`` (1-D): edges at the quantiles k/bins
    (k = 1 … bins−1, linear interpolation), bin i holds edge[i−1] < x ≤ edge[i]."""
    x = x.double()
    q = torch.arange(1, bins, dtype=torch.float64) / bins
    edges = torch.quantile(x if x.numel() <= MAX_QUANTILE else x[:MAX_QUANTILE], q)
    return torch.bucketize(x, edges)


def nmi(x: torch.Tensor, y: torch.Tensor, bins: int = 32) -> float:
    """Normalised mutual information of the paired samples ``x``, ``y`` (1-D, same length).

    Each variable is cut into ``bins`` equal-frequency bins (:func:`_bins`); with p the joint
    histogram of the bin pairs, MI = Σ p_ab·log(p_ab / (p_a·p_b)), and NMI = MI / √(H(X)·H(Y)) of
    the binned variables, in [0, 1]; 0 when either variable takes one bin only.

    Hand check: x = [0, 0, 1, 1], y = [0, 0, 0, 1], 2 bins → p = {(0,0): ½, (1,0): ¼, (1,1): ¼},
    MI = ½·log(4/3) + ¼·log(2/3) + ¼·log 2 = 0.21576, H(X) = log 2, H(Y) = 0.56234,
    NMI = 0.34559.
    """
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(f"nmi needs two 1-D tensors of one length, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    bx, by = _bins(x, bins), _bins(y, bins)
    joint = torch.bincount(bx * bins + by, minlength=bins * bins).reshape(bins, bins).double()
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)

    def entropy(q):
        q = q[q > 0]
        return float(-(q * q.log()).sum())

    hx, hy = entropy(px), entropy(py)
    if hx == 0 or hy == 0:
        return 0.0
    nz = p > 0
    mi = float((p[nz] * (p[nz].log() - torch.outer(px, py)[nz].log())).sum())
    return max(0.0, min(1.0, mi / math.sqrt(hx * hy)))


def paired_states(base, model, batches, progress: bool = False, device: str = "cpu"):
    """Yield (group, base's hidden states, model's hidden states) at every layer boundary (see
    the module docstring): lists of (B, T, H) tensors on ``device``, one per batch."""
    from l2s_kit.merging.calibration.activations import LayerStream

    a, b = LayerStream(base, batches, device), LayerStream(model, batches, device)
    if a.n_layers != b.n_layers:
        from l2s_kit.errors import IncompatibleModelsError

        raise IncompatibleModelsError(f"{base} has {a.n_layers} decoder layers but {model} has "
                                      f"{b.n_layers}; ACM compares them layer by layer")
    with torch.no_grad():
        yield EMBED_MODULE, list(a.hidden), list(b.hidden)
        for i in tqdm(range(a.n_layers), desc="ACM activations (layer by layer)",
                      disable=not progress):
            a.layer(i)
            b.layer(i)
            yield layer(i), list(a.hidden), list(b.hidden)
        yield NORM, a.normed(), b.normed()


def _positions(batches, hidden: int, pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pairs`` (row, channel) positions among the real tokens of the batches (all of them
    when there are fewer), rows indexing the concatenated real tokens."""
    n_tok = int(sum(int(m.sum()) for _ids, m in batches))
    total = n_tok * hidden
    g = torch.Generator().manual_seed(seed)
    flat = (torch.arange(total) if total <= pairs
            else torch.randperm(total, generator=g)[:pairs].sort().values)
    return flat // hidden, flat % hidden


def _real(states, batches) -> torch.Tensor:
    """The real (unpadded) tokens' hidden states of every batch, as one (tokens, H) matrix."""
    return torch.cat([h[m.to(h.device)] for h, (_ids, m) in zip(states, batches)])


def layer_nmi(base: str | os.PathLike, model: str | os.PathLike, spec: CalibrationSpec, *,
              bins: int = 32, pairs: int = 1 << 20, seed: int = 0, cache: bool = True,
              progress: bool = False, device: str = "cpu") -> dict[str, float]:
    """Layer group -> NMI between ``base``'s and ``model``'s hidden states there (see the
    module docstring); ``lm_head`` gets the final norm's value."""
    from l2s_kit.merging.calibration.activations import tokenize

    def compute():
        batches = tokenize(base, texts(spec), spec.max_tokens, batch_size=8)
        out, where = {}, None
        for group, ha, hb in paired_states(base, model, batches, progress, device):
            if where is None:
                where = _positions(batches, ha[0].shape[-1], pairs, seed)
            ra, rb = _real(ha, batches), _real(hb, batches)
            rows, cols = (w.to(ra.device) for w in where)
            out[group] = torch.tensor([nmi(ra[rows, cols].float().cpu(),
                                           rb[rows, cols].float().cpu(), bins)],
                                      dtype=torch.float64)
        return out

    settings = {**spec.key(), "bins": bins, "pairs": pairs, "pair_seed": seed}
    out = cached_tensors("acm-nmi", [base, model], settings, compute) if cache else compute()
    table = {g: float(t) for g, t in out.items()}
    table[HEAD] = table[NORM]
    return table
