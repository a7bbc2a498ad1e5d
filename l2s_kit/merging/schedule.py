"""Layer schedules: a scalar merge parameter that varies over the layers or by tensor name,
in mergekit's syntax.

A float parameter of a recipe may be, instead of a number:

- a **gradient**, a list of numbers interpolated linearly over the decoder layers:
  ``alpha: [0.2, 0.9]`` is 0.2 at the first layer and 0.9 at the last; ``t: [0, 0.5, 1]`` passes
  0.5 at the middle layer. Layer i of L sits at position i / (L − 1) (1 when L = 1); the value is
  interpolated between the list's entries at position · (len − 1). Tensors outside the layers
  (embeddings, final norm, LM head) sit at position 0, as in mergekit.
- a list of **conditions** ``{filter: TEXT, value: NUMBER or GRADIENT}``, the first whose
  ``filter`` occurs in the tensor's name applies (``self_attn``, ``mlp``, ``layers.0.``); one
  without ``filter`` (or ``filter: "*"``) matches every tensor. A tensor no condition matches
  gets the parameter's default.

Schedules are validated (every value in the parameter's range) when the recipe is loaded,
before any tensor is read; they are part of the recipe, so of its hash and the model card.
"""

from __future__ import annotations

import math
import re

from l2s_kit.errors import RecipeError

LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def is_schedule(value: object) -> bool:
    return isinstance(value, list)


def canonical(value: list, check, where: str, name: str) -> list:
    """The schedule ``value`` with every number checked by ``check(number) -> float``; gradients
    as lists of floats, conditions as ``{"filter": str or None, "value": ...}``."""
    def gradient(v, at: str) -> list[float]:
        if not v:
            raise ValueError(f"{at}: a gradient needs at least one number")
        return [check(x) for x in v]

    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        return gradient(value, f"{where}: parameter '{name}'")
    out = []
    for i, cond in enumerate(value):
        at = f"{where}: parameter '{name}'[{i}]"
        if not isinstance(cond, dict) or "value" not in cond or set(cond) - {"filter", "value"}:
            raise ValueError(f"{at}: a schedule is a list of numbers (a gradient over the layers) "
                             "or of {filter: TEXT, value: NUMBER or [NUMBERS]} conditions")
        f = cond.get("filter")
        if f is not None and (not isinstance(f, str) or not f):
            raise ValueError(f"{at}.filter must be a non-empty text (part of a tensor name)")
        v = cond["value"]
        value_ = gradient(v, at) if isinstance(v, list) else check(v)
        out.append({"filter": None if f in (None, "*") else f, "value": value_})
    return out


def position(name: str, n_layers: int) -> float:
    """mergekit's position of tensor ``name`` among ``n_layers`` layers (see module doc)."""
    m = LAYER.search(name)
    if m is None:
        return 0.0
    return int(m.group(1)) / (n_layers - 1) if n_layers > 1 else 1.0


def interpolate(values: list[float], t: float) -> float:
    scaled = t * (len(values) - 1)
    i0 = int(math.floor(scaled))
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def value_at(schedule: list, name: str, n_layers: int, default):
    """The value of ``schedule`` for tensor ``name``."""
    return value_at_position(schedule, name, position(name, n_layers), default)


def value_at_position(schedule: list, name: str, t: float, default):
    """The value of ``schedule`` for tensor ``name`` at position ``t`` of a gradient (a
    stacked slice's layers run from 0 to 1 within the slice, as in mergekit)."""
    if schedule and isinstance(schedule[0], dict):
        for cond in schedule:
            if cond["filter"] is None or cond["filter"] in name:
                v = cond["value"]
                return interpolate(v, t) if isinstance(v, list) else v
        return default
    return interpolate(schedule, t)


def count_layers(names) -> int:
    """Decoder layers among tensor names (1 + the largest ``layers.N.`` index; 0 without any)."""
    idx = [int(m.group(1)) for n in names if (m := LAYER.search(n))]
    return max(idx) + 1 if idx else 0


def numbers(value) -> list[float]:
    """Every number a scalar or a schedule holds (a gradient's values bound its interpolations)."""
    if not isinstance(value, list):
        return [value]
    out = []
    for x in value:
        v = x["value"] if isinstance(x, dict) else x
        out += v if isinstance(v, list) else [v]
    return out


def describe(params: dict) -> list[str]:
    """One line per scheduled parameter, for the model card and notes."""
    out = []
    for k, v in params.items():
        if not is_schedule(v):
            continue
        if v and isinstance(v[0], dict):
            parts = [f"{c['filter'] or 'any other tensor'}: {c['value']}" for c in v]
            out.append(f"{k} by tensor name ({'; '.join(parts)}), gradients over the layers")
        else:
            out.append(f"{k} over the layers: {v} (first layer → last)")
    return out


def unmatched_filters(params: dict, names) -> list[tuple[str, str]]:
    """``(parameter, filter)`` of every schedule condition whose filter occurs in none of
    ``names`` (the tensors merged): most likely a typo, since it would change nothing."""
    names = list(names)
    return [(k, c["filter"]) for k, v in params.items() if is_schedule(v)
            for c in v if isinstance(c, dict) and c.get("filter")
            and not any(c["filter"] in n for n in names)]


def model_weight(w, where: str, name: str = "weight") -> float | list:
    """A model's weight (or a slice's ``scale``): a finite number, or a schedule of finite
    numbers (a gradient over the layers, ``[0.2, 0.9]``, or ``{filter, value}`` conditions), as
    mergekit takes it."""
    def finite(x) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise RecipeError(f"{where}.parameters.{name} must be a finite number or a gradient "
                              f"of finite numbers ([0.2, 0.9] over the layers), got {x!r}")
        return float(x)

    if is_schedule(w):
        try:
            return canonical(w, finite, where, name)
        except ValueError as e:
            raise RecipeError(str(e)) from None
    return finite(w)
