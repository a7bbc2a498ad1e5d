"""Singular-value spectra of task vectors: is a pair low-rank enough for SVD merging?

>>> values = spectrum_values("S1", "S2")          # one row per singular value of every 2-D δ
>>> table = matrix_summary(values, rank=0.1)           # one row per matrix
>>> verdict, sentence = low_rank_verdict(table)   # per module type, and the answer in words

The task vector δ = θ_model − θ_base of every 2-D weight (the pair's, or a merge's against its
base) is read lazily, one matrix at a time, through :class:`l2s_kit.io.Checkpoint` (tied
embeddings and extra vocabulary rows are resolved as the merge engine does: shared rows only), and
decomposed with :func:`l2s_kit.merging.methods.lowrank.singular_values`: every value, exactly, for matrices whose
SVD is cheap; the top ``k`` values by a seeded randomized SVD for large ones (``method="auto"``,
overridable), each row carrying the bound its values are within (``error_bound``, 0 when exact).

Per matrix (:func:`matrix_summary`): ``sigma_1``; ``energy_at_rank``, the share of ‖δ‖²_F in the top
``rank`` values; ``rank_90`` / ``rank_99``, the smallest rank reaching 90% / 99% of the energy
(NaN when the randomized path's k values do not reach it); ``effective_rank`` = exp(entropy of
σ/Σσ) (Roy & Vetterli 2007; on the randomized path an estimate: the unseen values continue the
last computed one geometrically and hold the exact remaining energy); ``stable_rank`` =
‖δ‖²_F / σ₁². Layer index and module type
(q k v o gate up down embedding head) come from Qwen2 / Llama tensor names.

The verdict (:func:`low_rank_verdict`) is a fixed rule: a matrix is *low-rank at the budget* when
its top ``rank`` singular values hold at least ``ENERGY_TARGET`` (90%) of its energy, i.e.
rank_90 ≤ rank; the pair is *low-rank enough for SVD merging* when such matrices hold at least
``SHARE_TARGET`` (75%) of the task vector's parameters. Twin-Merging's default keeps 10% of each
matrix's rank (mask_rate 0.9), hence the default budget ``rank=0.1``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from l2s_kit.errors import L2SError
from l2s_kit.io.names import HEAD
from l2s_kit.merging.methods.lowrank import singular_values, svd_algorithm

MODULES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate",
           "up_proj": "up", "down_proj": "down", "embed_tokens": "embedding", "wte": "embedding",
           HEAD: "head"}
MODULE_ORDER = ["embedding", "q", "k", "v", "o", "gate", "up", "down", "head", "other"]
ENERGY_TARGET = 0.9  # a matrix is low-rank at the budget when its top `rank` values hold this
SHARE_TARGET = 0.75  # ... and the pair is when such matrices hold this share of the parameters
DEFAULT_RANK = 0.1  # the budget: a fraction of min(m, n) (Twin's mask_rate 0.9), or an int
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def parse_name(name: str) -> tuple[int | None, str]:
    """(layer index or None, module type) of a Qwen2 / Llama tensor name:
    ``model.layers.3.self_attn.q_proj.weight`` → (3, "q"); ``lm_head.weight`` → (None, "head")."""
    m = _LAYER.search(name)
    layer = int(m.group(1)) if m else None
    parts = name.split(".")
    module = next((MODULES[p] for p in reversed(parts) if p in MODULES), "other")
    return layer, module


def budget(rank: int | float, shape: Sequence[int]) -> int:
    """The rank budget of a matrix: ``rank`` itself if it is an int ≥ 1 (at most min(m, n)),
    else floor(rank · min(m, n)), at least 1, for a fraction in (0, 1)."""
    small = min(shape)
    if isinstance(rank, bool) or not isinstance(rank, (int, float)) or rank <= 0 or (
            isinstance(rank, float) and rank >= 1 and not rank.is_integer()):
        raise L2SError(f"rank must be an int >= 1 or a fraction in (0, 1), got {rank!r}")
    if isinstance(rank, float) and rank < 1:
        return max(1, math.floor(rank * small + 1e-9))
    return min(int(rank), small)


def budget_rule(rank: int | float) -> str:
    """The budget in words: "10% of min(m, n)" or "64"."""
    return f"{rank:.0%} of min(m, n)" if isinstance(rank, float) and rank < 1 else f"{int(rank)}"


def _pairs(base, model, modules: Sequence[str] | None, layers: Sequence[int] | None
           ) -> Iterator[tuple]:
    """(the merge engine's TensorJob, (base source, model source)) of every floating 2-D weight
    kept by ``modules`` and ``layers``."""
    from l2s_kit.merging.engine import as_sources, plan_merge

    inputs = as_sources([base, model])
    jobs, _, _ = plan_merge(inputs, None)
    for j in jobs:
        if not j.floating or len(j.out.shape) != 2:
            continue
        layer, module = parse_name(j.name)
        if modules is not None and module not in modules:
            continue
        if layers is not None and layer not in layers:
            continue
        yield j, inputs


def spectrum_values(base, model, modules: Sequence[str] | None = None,
                    rank: int | float = DEFAULT_RANK, k: int | None = None,
                    method: str = "auto", device: str = "cpu",
                    layers: Sequence[int] | None = None, progress: bool = True) -> pd.DataFrame:
    """Singular values of every 2-D task vector δ = ``model`` − ``base`` (folders, state dicts or
    modules), one row per value: name, layer, module, rows, cols, method, index (1-based), sigma,
    energy (‖δ‖²_F, exact), error_bound (σ − σ̂ ≤ it; 0 when exact).

    ``modules``: module types to keep (e.g. ["q", "v", "down"]; None: all); ``layers``: layer
    indices to keep (embedding and head have none: None keeps them). The exact path gives every
    value; the randomized one the top ``k`` (default max(2·budget, 64)) of matrices whose full SVD
    costs more than ``lowrank.EXACT_MAX_COST`` (``method``: "auto", "exact" or "randomized").
    Memory: one matrix of each checkpoint and δ at a time, in float32 on ``device`` (δ in float32
    plus both stored matrices: 1.9 GB for a 1.5B's 151936 × 1536 bf16 embedding).
    """
    from l2s_kit.merging.engine import resolve_device

    dev = resolve_device(device)
    bad = sorted(set(modules or ()) - set(MODULE_ORDER))
    if bad:
        raise L2SError(f"unknown module type '{bad[0]}'; choose from {', '.join(MODULE_ORDER)}")
    todo = list(_pairs(base, model, modules, layers))
    if not todo:
        raise L2SError(f"no 2-D weights of {base} match modules={modules} layers={layers}")
    frames = []
    total = sum(j.shared_rows * j.out.shape[1] for j, _ in todo)
    with tqdm(total=total, unit=" params", unit_scale=True, desc="spectrum",
              disable=not progress) as bar:
        for job, (b, m) in todo:
            rows = slice(0, job.shared_rows)
            stored = m.read(job.sources[1], rows)
            delta = stored.to(dev, torch.float32)
            if delta.data_ptr() == stored.data_ptr():  # the caller's own tensor: never modified
                delta = delta.clone()
            delta -= b.read(job.sources[0], rows).to(dev)  # promoted entry by entry: no copy
            del stored
            shape = tuple(delta.shape)
            kk = k or max(2 * budget(rank, shape), 64)
            how = svd_algorithm(shape, method, kk)
            d = singular_values(delta, None if how == "exact" else kk, how)
            del delta
            layer, module = parse_name(job.name)
            s = d.S.double().cpu().numpy()
            frames.append(pd.DataFrame({
                "name": job.name, "layer": layer, "module": module, "rows": shape[0],
                "cols": shape[1], "method": d.method, "index": np.arange(1, len(s) + 1),
                "sigma": s, "energy": d.energy, "error_bound": d.error_bound}))
            bar.update(shape[0] * shape[1])
    out = pd.concat(frames, ignore_index=True)
    out["layer"] = out["layer"].astype("Int64")
    return out


def _tail(s_k: float, energy: float, n: int) -> np.ndarray:
    """``n`` values continuing a spectrum after σ_k = ``s_k`` geometrically (σ_k·ρ^i, ρ ≤ 1)
    and holding ``energy`` in all (ρ by bisection; flat at sqrt(energy / n) if even ρ = 1 holds
    too little)."""
    i = np.arange(1, n + 1)
    if s_k <= 0 or s_k**2 * n <= energy:
        return np.full(n, math.sqrt(energy / n))
    lo, hi = 0.0, 1.0
    for _ in range(60):
        rho = (lo + hi) / 2
        lo, hi = (rho, hi) if s_k**2 * (rho ** (2 * i)).sum() < energy else (lo, rho)
    return s_k * ((lo + hi) / 2) ** i


def _effective_rank(s: np.ndarray, energy: float, n: int) -> float:
    tail_n = n - len(s)
    tail_e = max(energy - float((s**2).sum()), 0.0)
    if tail_n > 0 and tail_e > 0 and len(s):  # randomized: the unseen values estimated
        s = np.concatenate([s, _tail(float(s[-1]), tail_e, tail_n)])
    s = s[s > 0]
    if not len(s):
        return 0.0
    p = s / s.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


def matrix_summary(values: pd.DataFrame, rank: int | float = DEFAULT_RANK) -> pd.DataFrame:
    """One row per matrix of :func:`spectrum_values`: name, layer, module, rows, cols, params,
    method, budget (the rank budget in values), budget_rule, sigma_1, energy, energy_at_rank, rank_90,
    rank_99 (NaN when not reached by the values computed), effective_rank, stable_rank, and the
    same ranks as fractions of min(m, n) (``*_frac``)."""
    rows = []
    for name, g in values.groupby("name", sort=False):
        g = g.sort_values("index")
        s = g["sigma"].to_numpy()
        first = g.iloc[0]
        energy, small = float(first["energy"]), int(min(first["rows"], first["cols"]))
        cum = np.cumsum(s**2) / energy if energy > 0 else np.ones_like(s)
        r = budget(rank, (first["rows"], first["cols"]))

        def reach(target, cum=cum):
            hit = np.nonzero(cum >= target - 1e-12)[0]
            return float(hit[0] + 1) if len(hit) else math.nan

        rows.append({
            "name": name, "layer": first["layer"], "module": first["module"],
            "rows": int(first["rows"]), "cols": int(first["cols"]),
            "params": int(first["rows"] * first["cols"]), "method": first["method"],
            "budget": r, "budget_rule": budget_rule(rank), "sigma_1": float(s[0]) if len(s) else 0.0, "energy": energy,
            "energy_at_rank": float(cum[min(r, len(cum)) - 1]) if len(cum) else 1.0,
            "rank_90": reach(0.9), "rank_99": reach(0.99),
            "effective_rank": _effective_rank(s, energy, small),
            "stable_rank": energy / float(s[0]) ** 2 if len(s) and s[0] > 0 else 0.0,
            "error_bound": float(first["error_bound"]),
        })
    out = pd.DataFrame(rows)
    small = out[["rows", "cols"]].min(axis=1)
    for c in ("rank_90", "rank_99", "effective_rank", "stable_rank"):
        out[f"{c}_frac"] = out[c] / small
    out["layer"] = out["layer"].astype("Int64")
    return out


def low_rank_verdict(table: pd.DataFrame, energy_target: float = ENERGY_TARGET,
                     share_target: float = SHARE_TARGET) -> tuple[pd.DataFrame, str]:
    """Per module type and overall ("all"): matrices, parameters, the share of parameters in
    matrices whose top-``budget`` values hold ≥ ``energy_target`` of the energy (``low_rank_share``),
    the median energy at the budget and rank_90 fraction, and ``low_rank`` (share ≥
    ``share_target``); plus the answer as a sentence."""
    t = table.assign(ok=table["energy_at_rank"] >= energy_target - 1e-12)
    order = [m for m in MODULE_ORDER if m in set(t["module"])]

    def row(g, module):
        share = float((g["params"] * g["ok"]).sum() / g["params"].sum())
        return {"module": module, "matrices": len(g), "params": int(g["params"].sum()),
                "low_rank_share": share,
                "median_energy_at_rank": float(g["energy_at_rank"].median()),
                "median_rank_90_frac": float(g["rank_90_frac"].median()),
                "median_effective_rank_frac": float(g["effective_rank_frac"].median()),
                "low_rank": share >= share_target}

    out = pd.DataFrame([*(row(t[t["module"] == m], m) for m in order), row(t, "all")])
    share = out["low_rank_share"].iloc[-1]
    rank_txt = table["budget_rule"].iloc[0]
    sentence = (
        f"{'Low-rank enough' if share >= share_target else 'Not low-rank enough'} for SVD "
        f"merging: {share:.0%} of the task vector's parameters are in matrices whose top "
        f"{rank_txt} singular values hold ≥ {energy_target:.0%} of their energy "
        f"(rule: ≥ {share_target:.0%})."
    )
    return out, sentence


def check_table_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` as a table to write (.csv or .parquet, not in the way); checked before any work."""
    from l2s_kit.io import claim_file

    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise L2SError(f"{path}: save spectrum tables as .csv or .parquet")
    claim_file(path, overwrite, "spectrum table")
    return path


def save_table(df: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``df`` as .csv or .parquet (needs pyarrow: ``pip install l2s_kit[parquet]``), atomically;
    an existing file is only replaced with ``overwrite``."""
    from l2s_kit.io import atomic_file, write_csv

    path = check_table_path(path, overwrite)
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise L2SError(f"{path}: parquet needs pyarrow (pip install 'l2s_kit[parquet]'); "
                           "or save as .csv") from e
    if path.suffix == ".csv":
        return write_csv(df, path, remember=True)
    with atomic_file(path, remember=True) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table written by :func:`save_table` (``layer`` back as a nullable int)."""
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if "layer" in df:
        df["layer"] = df["layer"].astype("Int64")
    return df
