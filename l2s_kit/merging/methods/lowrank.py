"""SVD primitives shared by the SVD merge methods and the spectrum inspection: one SVD helper.

Every function takes one 2-D matrix ``x`` of shape (m, n), computes in float32 (float64 if ``x``
is float64) on ``x``'s device (CPU or CUDA) and returns tensors on that device.

- :func:`svd` gives the top-``rank`` singular triplets, either **exact** (LAPACK / cuSOLVER
  ``torch.linalg.svd``) or **randomized** (a seeded Gaussian range finder with power iterations,
  Halko, Martinsson & Tropp 2011, Alg. 4.4): Q (m, k) spans A·Ω for k = rank + ``OVERSAMPLE``
  columns, refined by ``POWER_ITERS`` rounds of A·Aᵀ with re-orthonormalisation, then the small
  (k, n) matrix B = QᵀA is decomposed exactly.
- The randomized path states its error. Its singular values σ̂ⱼ are those of QQᵀA, so by Weyl's
  inequality ``0 ≤ σⱼ − σ̂ⱼ ≤ ‖A − QQᵀA‖₂ ≤ ‖A − QQᵀA‖_F = sqrt(‖A‖²_F − ‖B‖²_F)``, a bound computed
  for every matrix (``SVD.error_bound``; 0 for the exact path). The total energy ‖A‖²_F is exact on
  both paths, so energy shares are exact up to the captured part.
- ``method="auto"`` chooses exact when the cost of a full SVD, m·n·min(m, n), is at most
  ``EXACT_MAX_COST`` (every matrix of a Qwen2-1.5B layer, the 3584 × 3584 attention matrices of a
  7B) or when the asked rank is not much smaller than min(m, n); randomized otherwise (a 7B's
  3584 × 18944 MLP matrices and its 152064 × 3584 embedding).

Memory: the exact path holds A, U (m, min) and Vᵀ (min, n) plus LAPACK's workspace, about 3× the
matrix (6.5 GB for a 7B embedding in float32); the randomized path about A plus four (m, k) or
(k, n) panels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from l2s_kit.io.choices import SVD_ALGORITHMS

EXACT_MAX_COST = 2**36  # m·n·min(m, n) of the largest matrix decomposed exactly by "auto"
OVERSAMPLE = 10  # extra columns of the randomized range finder
POWER_ITERS = 4  # power iterations of the randomized range finder
SEED = 0  # the range finder's Gaussian test matrix is seeded: results repeat bit for bit


@dataclass
class SVD:
    """Top singular triplets of a matrix A (m, n): ``U`` (m, k), ``S`` (k,) descending,
    ``Vh`` (k, n); ``energy`` = ‖A‖²_F (exact); ``error_bound``: every σ̂ⱼ is within it of σⱼ
    (from below); ``method``: "exact" or "randomized"."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    energy: float
    error_bound: float
    method: str

    def matrix(self, rank: int | None = None) -> torch.Tensor:
        """U_r · diag(S_r) · Vh_r, the best rank-r approximation (r = all computed by default)."""
        r = self.S.numel() if rank is None else min(rank, self.S.numel())
        return (self.U[:, :r] * self.S[:r]) @ self.Vh[:r]


def _float(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(x.shape)}")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def svd_cost(shape: tuple[int, ...]) -> int:
    """m·n·min(m, n): the flop count of a full SVD, up to a constant."""
    m, n = shape
    return m * n * min(m, n)


def svd_algorithm(shape: tuple[int, ...], method: str = "auto", rank: int | None = None) -> str:
    """"exact" or "randomized" for a matrix of ``shape`` whose top ``rank`` values are wanted
    (``None``: all of them, which only the exact path gives)."""
    if method not in SVD_ALGORITHMS:
        raise ValueError(f"SVD method must be one of {SVD_ALGORITHMS}, got {method!r}")
    small = min(shape)
    if rank is None or rank + OVERSAMPLE >= small:
        return "exact"  # a full spectrum, or a rank the range finder cannot save anything on
    if method != "auto":
        return method
    return "exact" if svd_cost(shape) <= EXACT_MAX_COST or 4 * (rank + OVERSAMPLE) > small \
        else "randomized"


def _range_finder(a: torch.Tensor, k: int, niter: int, seed: int) -> torch.Tensor:
    """Q (m, k) with orthonormal columns approximately spanning A's top-k left singular space."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(a.shape[1], k, generator=g, dtype=a.dtype).to(a.device)
    q = torch.linalg.qr(a @ omega).Q
    for _ in range(niter):
        q = torch.linalg.qr(a.T @ q).Q
        q = torch.linalg.qr(a @ q).Q
    return q


def svd(x: torch.Tensor, rank: int | None = None, method: str = "auto", *,
        niter: int = POWER_ITERS, oversample: int = OVERSAMPLE, seed: int = SEED) -> SVD:
    """The top ``rank`` singular triplets of ``x`` (m, n) (all min(m, n) when ``rank`` is None).

    ``method``: "exact", "randomized" or "auto" (see :func:`choose`). A randomized SVD of a tall
    matrix works on its transpose when that is cheaper; the result is the same either way.
    """
    a = _float(x)
    small = min(a.shape)
    r = small if rank is None else max(0, min(int(rank), small))
    how = svd_algorithm(tuple(a.shape), method, None if rank is None else r)
    energy = float(torch.linalg.vector_norm(a).double() ** 2)
    if r == 0 or energy == 0.0:  # nothing to decompose: exact zeros
        m, n = a.shape
        z = a.new_zeros
        return SVD(z(m, r), z(r), z(r, n), energy, 0.0, how)
    if how == "exact":
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        return SVD(u[:, :r], s[:r], vh[:r], energy, 0.0, "exact")
    transpose = a.shape[0] > a.shape[1]  # range-find in the smaller dimension's space
    a_ = a.T if transpose else a
    q = _range_finder(a_, min(r + oversample, small), niter, seed)
    b = q.T @ a_  # (k, n)
    ub, s, vh = torch.linalg.svd(b, full_matrices=False)
    u = q @ ub
    bound = max(energy - float(torch.linalg.vector_norm(b).double() ** 2), 0.0) ** 0.5
    u, s, vh = u[:, :r], s[:r], vh[:r]
    if transpose:
        u, vh = vh.T, u.T
    return SVD(u.contiguous(), s, vh.contiguous(), energy, bound, "randomized")


def singular_values(x: torch.Tensor, rank: int | None = None, method: str = "auto",
                    **kw) -> SVD:
    """Like :func:`svd`, but the exact path computes the values only (``torch.linalg.svdvals``,
    cheaper): ``U`` and ``Vh`` are empty then."""
    a = _float(x)
    small = min(a.shape)
    r = small if rank is None else max(0, min(int(rank), small))
    if svd_algorithm(tuple(a.shape), method, None if rank is None else r) == "randomized":
        return svd(a, r, "randomized", **kw)
    s = torch.linalg.svdvals(a)[:r]
    energy = float(torch.linalg.vector_norm(a).double() ** 2)
    return SVD(a.new_zeros(0, 0), s, a.new_zeros(0, 0), energy, 0.0, "exact")


def low_rank(x: torch.Tensor, rank: int, method: str = "auto") -> torch.Tensor:
    """The best rank-``rank`` approximation of ``x`` (m, n), truncated SVD (Eckart–Young);
    randomized when ``method`` (or "auto") says so."""
    if rank >= min(x.shape):
        return _float(x).clone()
    return svd(x, rank, method).matrix()


def svt(x: torch.Tensor, tau: float, relative: bool = False) -> torch.Tensor:
    """Singular-value thresholding: U · diag(max(σ − τ, 0)) · Vᵀ of ``x`` (m, n), exact SVD
    (the number of values above τ is not known in advance); ``relative``: the threshold is
    τ · σ₁. τ = 0 gives ``x`` back (up to rounding); 1×1 matrices are soft-thresholded."""
    d = svd(x, None, "exact")
    t = tau * float(d.S[0]) if relative and d.S.numel() else tau
    s = (d.S - t).clamp_min_(0)
    r = int((s > 0).sum())
    return (d.U[:, :r] * s[:r]) @ d.Vh[:r]
