"""Activation-based merges on the built-in family: the comparison with TA / TIES, and how the
result depends on the calibration set (which parts of the answers, how many samples).

>>> ex = Explorer(family, split="test", n_per_level=100)
>>> grid = calibration_grid(ex, [("aim", {"omega": 0.4, "inner": "ties", "k": 0.8})],
...                         parts=PARTS, samples=(10, 20, 100))   # one row per calibration set
>>> layer_coefficients_table(family, "sens_merging")              # Sens-Merging's n·σ per layer

Statistics are cached next to the checkpoints (or in ``$L2S_CACHE``), responses in the
explorer's file, so asking again costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from l2s_kit.merging.calibration.sets import PARTS
from l2s_kit.study.explorer import Explorer, model_name

__all__ = ["PARTS", "calibration_grid", "calibration_merges", "layer_coefficients_table"]


def calibration_merges(merges: Iterable[tuple[str, dict]], parts: Sequence[str] = PARTS,
                       samples: Sequence[int] = (10, 20, 100), source: str = "family",
                       seed: int = 0) -> list[tuple[str, dict]]:
    """Every ``(method, params)`` of ``merges`` once per calibration set (parts × samples), with
    the parameters each method declares for choosing one (``calibration_set``; Sens-Merging
    calibrates every model on the same parts here)."""
    return [(m, p) for m, p, _, _ in _calibrated(merges, parts, samples, source, seed)]


def _calibrated(merges, parts, samples, source, seed) -> list[tuple[str, dict, str, int]]:
    from l2s_kit.merging import get_method

    out = []
    for method, params in merges:
        choose = get_method(method).calibration_set
        if choose is None:
            raise ValueError(f"{method} does not calibrate on texts: a calibration sweep needs a "
                             "method that does (e.g. aim, sens_merging, acm)")
        out += [(method, {**params, **choose(source, part, n, seed)}, part, n)
                for part in parts for n in samples]
    return out


def calibration_grid(explorer: Explorer, merges: Iterable[tuple[str, dict]],
                     parts: Sequence[str] = PARTS, samples: Sequence[int] = (10, 20, 100),
                     source: str = "family", seed: int = 0) -> pd.DataFrame:
    """One row per model (System 1, System 2, then each merge × calibration set): accuracy,
    mean_tokens, length_change, reflection_ratio, each merge's parameters
    (:meth:`Explorer.sweep`) and its calibration set as ``calibration_parts`` and
    ``calibration_samples`` (empty for System 1 and 2)."""
    jobs = _calibrated(merges, parts, samples, source, seed)
    grid = explorer.sweep([(m, p) for m, p, _, _ in jobs])
    sets = {model_name(m, p): (part, n) for m, p, part, n in jobs}
    grid["calibration_parts"] = grid["model"].map(lambda m: sets.get(m, (None, None))[0])
    grid["calibration_samples"] = grid["model"].map(lambda m: sets.get(m, (None, None))[1])
    return grid


def layer_coefficients_table(family, method: str, params: dict | None = None) -> pd.DataFrame:
    """The per-layer coefficient a layer-adaptive merge gives System 2 on ``family`` (System 1 as
    the base), as ``group``, ``coefficient``, ``method``, ``label`` rows in model order: what the
    method's own ``layer_coefficients`` declaration says (Sens-Merging's n·σ, ACM's scale·c,
    FIM-Merging's α before the gate factor). Statistics are cached, so asking again costs
    nothing."""
    from l2s_kit.merging import get_method, list_methods

    m = get_method(method)
    if m.layer_coefficients is None:
        have = [x.name for x in list_methods() if x.layer_coefficients is not None]
        raise ValueError(f"{method} has no per-layer coefficients; these have: {', '.join(have)}")
    resolved = m.resolve(params or {}, "layer_coefficients_table")
    table = m.layer_coefficients([str(family.system1), str(family.system2)], resolved)
    order = _group_order(family.system1)  # only groups the checkpoint has (no head when tied)
    rows = sorted(((g, c) for g, c in table.items() if g in order), key=lambda kv: order[kv[0]])
    return pd.DataFrame([{"group": g, "coefficient": c, "method": m.name,
                          "label": m.coefficient_label} for g, c in rows])


def _group_order(path) -> dict[str, int]:
    from l2s_kit.merging.calibration.sensitivity import layer_group

    return {g: i for i, g in enumerate(dict.fromkeys(layer_group(n) for n in _names(path)))}


def _names(path) -> list[str]:
    from l2s_kit.io import Checkpoint

    return Checkpoint(path).names
