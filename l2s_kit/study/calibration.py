"""Activation-based merges on the built-in family: the comparison with TA / TIES, and how the
result depends on the calibration set (which parts of the answers, how many samples).

>>> ex = Explorer(family, split="test", n_per_level=100)
>>> grid = calibration_grid(ex, [("aim", {"omega": 0.4, "inner": "ties", "k": 0.8})],
...                         parts=PARTS, samples=(10, 20, 100))   # one row per calibration set
>>> sens_coefficients_table(family)                               # Sens-Merging's n·σ per layer

Statistics are cached next to the checkpoints (or in ``$L2S_CACHE``), responses in the
explorer's file, so asking again costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from l2s_kit.merging.calibration.sets import PARTS
from l2s_kit.study.explorer import Explorer

__all__ = ["PARTS", "calibration_grid", "calibration_merges", "layer_coefficients_table",
           "sens_coefficients_table"]


def calibration_merges(merges: Iterable[tuple[str, dict]], parts: Sequence[str] = PARTS,
                       samples: Sequence[int] = (10, 20, 100), source: str = "family",
                       seed: int = 0) -> list[tuple[str, dict]]:
    """Every ``(method, params)`` of ``merges`` once per calibration set (parts × samples).
    Sens-Merging calibrates every model on the same parts here (``calib_parts_base`` too)."""
    out = []
    for method, params in merges:
        for part in parts:
            for n in samples:
                p = {**params, "calib_source": source, "calib_parts": part, "calib_samples": n,
                     "calib_seed": seed}
                if method in ("sens_merging", "sens"):
                    p["calib_parts_base"] = part
                out.append((method, p))
    return out


def calibration_grid(explorer: Explorer, merges: Iterable[tuple[str, dict]],
                     parts: Sequence[str] = PARTS, samples: Sequence[int] = (10, 20, 100),
                     source: str = "family", seed: int = 0) -> pd.DataFrame:
    """One row per model (System 1, System 2, then each merge × calibration set): accuracy,
    mean_tokens, length_change, reflection_ratio and the ``calib_parts`` / ``calib_samples``
    columns (:meth:`Explorer.sweep`)."""
    return explorer.sweep(calibration_merges(merges, parts, samples, source, seed))


def sens_coefficients_table(family, params: dict | None = None) -> pd.DataFrame:
    """Sens-Merging's coefficient n·σ of System 2 per layer group on ``family`` (System 1 as the
    base), as ``group``, ``coefficient`` rows in model order (embedding, layers, norm, head)."""
    from l2s_kit.merging import get_method
    from l2s_kit.merging.methods.activation import sens_table

    resolved = get_method("sens_merging").resolve(params or {}, "sens_coefficients_table")
    table = sens_table([str(family.system1), str(family.system2)], resolved)
    order = _group_order(family.system1)
    rows = sorted(table.items(), key=lambda kv: order.get(kv[0], len(order)))
    return pd.DataFrame([{"group": g, "coefficient": c[0]} for g, c in rows])


def layer_coefficients_table(family, method: str, params: dict | None = None) -> pd.DataFrame:
    """The per-layer coefficient a layer-adaptive merge gives System 2 on ``family`` (System 1 as
    the base), as ``group``, ``coefficient``, ``method`` rows in model order: Sens-Merging's n·σ
    (``sens_merging``), ACM's scale·c (``acm``), FIM-Merging's α before the gate factor
    (``fim``). Statistics are cached, so asking again costs nothing."""
    from l2s_kit.merging import get_method
    from l2s_kit.merging.methods import layer_adaptive as la

    m = get_method(method)
    paths = [str(family.system1), str(family.system2)]
    if m.name == "sens_merging":
        return sens_coefficients_table(family, {k: v for k, v in (params or {}).items()
                                                if k != "alpha"}).assign(method=m.name)
    resolved = m.resolve(params or {}, "layer_coefficients_table")
    if m.name == "acm":
        table = {g: resolved["scale"] * c for g, c in la.acm_table(paths, resolved).items()}
    elif m.name == "fim":
        table = {g: la.fim_coefficient(z, resolved["lo"], resolved["hi"], resolved["sharpness"])
                 for g, z in la.fim_table(paths, resolved).items()}
    else:
        raise ValueError(f"{method} has no per-layer coefficients; use sens_merging, acm or fim")
    order = _group_order(family.system1)  # only groups the checkpoint has (no head when tied)
    rows = sorted(((g, c) for g, c in table.items() if g in order), key=lambda kv: order[kv[0]])
    return pd.DataFrame([{"group": g, "coefficient": c, "method": m.name} for g, c in rows])


def _group_order(path) -> dict[str, int]:
    from l2s_kit.merging.calibration.sensitivity import layer_group

    return {g: i for i, g in enumerate(dict.fromkeys(layer_group(n) for n in _names(path)))}


def _names(path) -> list[str]:
    from l2s_kit.io import Checkpoint

    return Checkpoint(path).names
