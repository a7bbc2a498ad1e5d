"""Small primitives the task-vector methods are built from: trim, DARE, sign election, disjoint mean.

All of them work on a tensor or on a block of a tensor's rows, so that the engine can stream large
tensors (a 7B model's embedding is 2 GB in float32) in blocks and get bit-for-bit the same result as
on the whole tensor:

- ``Trimmer`` keeps the largest magnitudes of a task vector. Its threshold is the exact k-th
  magnitude, found either with ``torch.kthvalue`` on a whole tensor or with a streamed radix
  select (``kth_smallest``) over blocks, or over every tensor of a model for the global trim. Entries
  tied with the threshold are kept in stream order until the count is reached, so the result does
  not depend on block size.
- ``DropMask`` draws DARE's random mask in fixed blocks of ``MASK_BLOCK`` entries, each from a
  generator seeded by (seed, tensor name, model index, block), so a mask never depends on the order
  in which tensors are read nor on how a tensor is cut into blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

import torch

from l2s_kit.io.seeds import generator

MASK_BLOCK = 1 << 20


def floor_fraction(k: float, n: int) -> int:
    """floor(k·n) computed on the decimal value of ``k`` (0.29·100 is 29, not 28)."""
    return int(Decimal(repr(float(k))) * n)


def task_vectors(base: torch.Tensor, models: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """δᵢ = θᵢ − θ₀ for every model."""
    return [m - base for m in models]


def weighted_sum(deltas, weights):
    """Σᵢ wᵢ δᵢ, overwriting the first delta (the deltas are temporaries)."""
    out = deltas[0] if weights[0] == 1 else deltas[0].mul_(weights[0])
    for w, d in zip(weights[1:], deltas[1:]):
        out.add_(d, alpha=w)
    return out


# -- trim --------------------------------------------------------------------------------------


def trim_rank(n: int, k: float, rule: str) -> tuple[int, int]:
    """(rank of the threshold among magnitudes, 1-based from the smallest; entries to keep).

    ``topk``/``global``: keep exactly n − floor(k·n) (ties at the threshold broken by position).
    ``reference``: the paper's code, keep every |x| ≥ the floor(k·n)-th smallest (``keep`` = -1:
    all ties kept). ``mergekit``: keep max(1, floor(density·n)) with density = 1 − k, as
    mergekit's ``magnitude`` sparsification does (one entry fewer than ``topk`` where density·n
    is not whole, but at least one). A rank of 0 means keep everything.
    """
    if rule == "mergekit":  # mergekit's magnitude(): max(1, int(density * n)), in floats
        density = round(1.0 - k, 12)
        keep = max(1, int(density * n)) if density > 0 else 0
        if keep >= n:
            return 0, n
        return (n - keep + 1, keep) if keep else (n, 0)  # none: above the largest only
    m = floor_fraction(k, n)
    if rule == "reference":
        return m, -1
    return (m + 1 if 0 < m < n else 0), n - m


def _float_bits(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Magnitudes as integers that sort like the floats (IEEE bits of non-negative values)."""
    a = x.abs()
    if a.dtype == torch.float64:
        return a.view(torch.int64), 64
    return a.to(torch.float32).view(torch.int32), 32


def _bits_to_float(bits: int, width: int) -> float:
    if width == 64:
        return torch.tensor([bits], dtype=torch.int64).view(torch.float64).item()
    return torch.tensor([bits], dtype=torch.int32).view(torch.float32).item()


def kth_smallest(blocks: Callable[[], Iterable[torch.Tensor]], rank: int) -> float:
    """The exact ``rank``-th smallest magnitude (1-based) over all blocks yielded by ``blocks()``."""
    return radix_select(blocks, rank)[0]


def radix_select(blocks: Callable[[], Iterable[torch.Tensor]], rank: int) -> tuple[float, int, int]:
    """(``rank``-th smallest magnitude t, how many magnitudes are < t, how many are == t).

    A radix select on the IEEE bits, 16 bits per pass (2 passes over the data for float32, 4 for
    float64): memory is one block plus a 65536-bin histogram, whatever the total size.
    """
    prefix, width, shift = 0, None, None
    remaining, below = rank, 0
    while True:
        hist = None
        for block in blocks():
            bits, w = _float_bits(block.reshape(-1))
            if width is None:
                width, shift = w, w - 16
            if shift + 16 < width:
                bits = bits[(bits >> (shift + 16)) == prefix]
            digit = (bits >> shift) & 0xFFFF
            h = torch.bincount(digit, minlength=65536)
            hist = h if hist is None else hist + h
        if hist is None:
            raise ValueError("kth_smallest: no data")
        cum = torch.cumsum(hist, 0)
        if remaining > int(cum[-1]):
            raise ValueError(f"kth_smallest: rank {rank} is past the number of entries")
        d = int(torch.searchsorted(cum, torch.tensor(remaining, dtype=cum.dtype, device=cum.device)))
        lower = int(cum[d - 1]) if d > 0 else 0
        remaining -= lower
        below += lower
        prefix = (prefix << 16) | d
        if shift == 0:
            return _bits_to_float(prefix, width), below, int(hist[d])
        shift -= 16


@functools.lru_cache(maxsize=64)
def _sample_positions(n: int, sample: int) -> torch.Tensor:
    """``sample`` positions in [0, n), drawn from a generator seeded by n, in increasing order
    (so that gathering them walks memory forwards); the same for every tensor of n entries."""
    g = torch.Generator().manual_seed(n)
    return torch.randint(0, n, (sample,), generator=g).sort().values


def order_statistic(a: torch.Tensor, rank: int, sample: int = 1 << 14) -> tuple[float, int, int]:
    """(``rank``-th smallest of the flat non-negative tensor ``a``, count < it, count == it).

    Exact, and faster than ``kthvalue`` on large tensors: a deterministic sample brackets the
    answer, one pass counts what lies below the bracket and gathers what lies inside it, and only
    that small band is sorted. Falls back to ``kthvalue`` if the bracket misses.
    """
    n = a.numel()
    if n > 8 * sample:
        s = a[_sample_positions(n, sample).to(a.device)].sort().values
        q = rank / n
        margin = 6.0 * (q * (1 - q) / sample) ** 0.5 + 8.0 / sample
        lo = float(s[max(0, int((q - margin) * sample))])
        hi = float(s[min(sample - 1, int((q + margin) * sample))])
        at_least_lo = a >= lo
        below_lo = n - int(torch.count_nonzero(at_least_lo))
        band = a[at_least_lo.logical_and_(a <= hi)]
        if below_lo < rank <= below_lo + band.numel():
            t = float(band.kthvalue(rank - below_lo).values)
            return (t, below_lo + int(torch.count_nonzero(band < t)),
                    int(torch.count_nonzero(band == t)))
    t = float(a.kthvalue(rank).values)
    return t, int(torch.count_nonzero(a < t)), int(torch.count_nonzero(a == t))


class Trimmer:
    """Keeps a task vector's largest magnitudes, block after block, in stream order.

    ``threshold``: the smallest magnitude kept; entries above it are always kept; entries equal to
    it are kept while ``tie_budget`` lasts (``None``: all kept, the reference-code rule).
    """

    def __init__(self, threshold: float | None, tie_budget: int | None):
        self.threshold = threshold  # None: keep everything
        self.tie_budget = tie_budget

    @classmethod
    def from_blocks(cls, blocks: Callable[[], Iterable[torch.Tensor]], n: int, k: float,
                    rule: str) -> Trimmer:
        """Plan a trim over everything ``blocks()`` yields (n entries in all)."""
        rank, keep = trim_rank(n, k, rule)
        if rank == 0:
            return cls(None, None)
        t, below, equal = radix_select(blocks, rank)
        if keep < 0:
            return cls(t, None)
        budget = keep - (n - below - equal)
        return cls(t, None if budget >= equal else budget)  # every tie kept: no budget to count

    @classmethod
    def for_tensor(cls, delta: torch.Tensor, k: float, rule: str,
                   magnitudes: torch.Tensor | None = None) -> Trimmer:
        """Plan a trim of one whole tensor (``torch.kthvalue``, same result as ``from_blocks``);
        ``magnitudes``: |delta| flattened, when the caller has it."""
        a = delta.reshape(-1).abs() if magnitudes is None else magnitudes
        rank, keep = trim_rank(a.numel(), k, rule)
        if rank == 0:
            return cls(None, None)
        t, below, equal = order_statistic(a, rank)
        if keep < 0:
            return cls(t, None)
        budget = keep - (a.numel() - below - equal)
        return cls(t, None if budget >= equal else budget)  # every tie kept: no budget to count

    def __call__(self, delta: torch.Tensor, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
        """The trimmed block (entries not kept set to 0); consumes the tie budget.
        ``magnitudes``: |delta| (any shape of the same numel), when the caller has it."""
        if self.threshold is None:
            return delta
        a = delta.abs() if magnitudes is None else magnitudes.view(delta.shape)
        if self.tie_budget is None:  # every entry at the threshold is kept: one comparison
            return delta * (a >= self.threshold)
        flat = a.reshape(-1)
        cut = self._tie_cut(flat)  # ties are kept in [0, cut), dropped after it
        keep = torch.empty(flat.shape, dtype=torch.bool, device=flat.device)
        torch.ge(flat[:cut], self.threshold, out=keep[:cut])
        torch.gt(flat[cut:], self.threshold, out=keep[cut:])
        return delta * keep.view(delta.shape)

    def _tie_cut(self, flat: torch.Tensor, step: int = 1 << 20) -> int:
        """How many leading entries of this block keep their ties: up to and including the
        tie that uses the last of the budget (all of them while the budget lasts), found by
        counting ties chunk by chunk; consumes the budget."""
        if self.tie_budget <= 0:
            return 0
        for start in range(0, flat.numel(), step):
            eq = flat[start:start + step] == self.threshold
            c = int(torch.count_nonzero(eq))
            if c < self.tie_budget:
                self.tie_budget -= c
                continue
            last = int(torch.nonzero(eq).squeeze(1)[self.tie_budget - 1])
            self.tie_budget = 0
            return start + last + 1
        return flat.numel()


# -- DARE --------------------------------------------------------------------------------------
class DropMask:
    """DARE's reproducible keep-mask for one model's task vector of one tensor.

    ``keep(numel, offset)`` is the mask of the flat entries [offset, offset + numel): each entry is
    dropped with probability ``p``, drawn in ``MASK_BLOCK``-sized blocks seeded by
    (seed, name, model_index, block number).
    """

    def __init__(self, p: float, seed: int, name: str = "", model_index: int = 0):
        self.p, self.seed, self.name, self.model_index = p, seed, name, model_index

    def keep(self, numel: int, offset: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
        first, last = offset // MASK_BLOCK, (offset + numel - 1) // MASK_BLOCK
        end = offset + numel
        parts = []
        for b in range(first, last + 1):
            g = generator(self.seed, self.name, self.model_index, b)
            # only the block's prefix that is needed: the CPU generator's stream is prefix-stable
            parts.append(torch.rand(min(MASK_BLOCK, end - b * MASK_BLOCK), generator=g) >= self.p)
        mask = torch.cat(parts) if len(parts) > 1 else parts[0]
        start = offset - first * MASK_BLOCK
        return mask[start:start + numel].to(device)

    def at(self, offset: int) -> _BoundMask:
        return _BoundMask(self, offset)


class _BoundMask:
    """A DropMask positioned at a block's flat offset (what the engine hands to a method)."""

    def __init__(self, mask: DropMask, offset: int):
        self.mask, self.offset = mask, offset

    def keep(self, numel: int, offset: int = 0, device="cpu") -> torch.Tensor:
        return self.mask.keep(numel, self.offset + offset, device)


def dare(delta: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """Drop-and-rescale: zero the dropped entries, scale survivors by 1/(1 − p)."""
    if p == 0:
        return delta
    return delta * keep.reshape(delta.shape) / (1.0 - p)


# -- sign election and disjoint mean (TIES) ----------------------------------------------------
def elect_sign(trimmed: torch.Tensor, zero_sign: float = 1.0) -> torch.Tensor:
    """γ = sign(Σᵢ trimmedᵢ) over the stacked first dimension; ``zero_sign`` where the sum is 0."""
    total = trimmed.sum(0)
    return torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, zero_sign)).to(trimmed.dtype)


def disjoint_mean(trimmed: Sequence[torch.Tensor], weights: Sequence[float],
                  zero_sign: float = 1.0, normalize: bool = True) -> torch.Tensor:
    """Weighted mean of the non-zero entries that agree with the elected sign; 0 where none do.
    ``normalize=False``: their weighted sum (mergekit's ``ties`` with ``normalize: false``)."""
    if len(trimmed) == 1 and weights[0] == 1:
        return trimmed[0]  # one task vector: every non-zero entry agrees with its own sign
    stacked = torch.stack([w * t for w, t in zip(weights, trimmed)])
    gamma = elect_sign(stacked, zero_sign)
    agree = (torch.sign(stacked) == gamma) & (stacked != 0)
    if not normalize:
        return (stacked * agree).sum(0)
    w = torch.tensor(list(weights), dtype=stacked.dtype, device=stacked.device)
    w = w.reshape(-1, *([1] * (stacked.dim() - 1)))
    num = (stacked * agree).sum(0)
    den = (w * agree).sum(0)
    return torch.where(den != 0, num / torch.where(den != 0, den, 1.0), 0.0)
