"""Merges of the built-in family made in memory and evaluated in seconds (the merge explorer).

>>> ex = Explorer(n_per_level=20)                       # the family's validation split
>>> ex.responses("task_arithmetic", alpha=0.2)          # responses DataFrame, graded, annotated
>>> ex.sweep([("ties", {"k": 0.8, "alpha": a}) for a in (0.3, 0.5, 1.0)])  # one row per merge
>>> explorer_widget(ex)      # l2s_kit.study.widget: sliders; the figure updates in place

Nothing is written but the responses (``workdir/<family>/<split>-<n>-<settings>.jsonl``, the
usual resumable file), so asking again for a merge already evaluated costs nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from l2s_kit import analysis
from l2s_kit.analysis import reflection
from l2s_kit.evaluate import FAMILY_SETTINGS, GenerationSettings, evaluate, extract_family
from l2s_kit.zoo import Family, build_family

REFERENCE = "system2"
ENDPOINTS = ("system1", "system2")
# Slider ranges (min, max, step) of the parameters the explorer shows.
SLIDERS = {"alpha": (0.0, 1.5, 0.05), "k": (0.0, 0.95, 0.05), "p": (0.0, 0.9, 0.05),
           "lam": (0.0, 1.0, 0.05), "mask_rate": (0.0, 0.99, 0.01),
           "temperature": (0.5, 10.0, 0.5)}


def model_name(method: str, params: dict) -> str:
    """"ties k=0.8 alpha=1.0": the name a merge has in responses and tables."""
    return " ".join([method, *(f"{k}={v}" for k, v in params.items())])


class _Merged:
    """A backend that merges the family in memory when (and only when) asked to generate."""

    def __init__(self, explorer: Explorer, recipe):
        self.explorer, self.recipe = explorer, recipe
        self.name = recipe.merge_method

    def generate(self, prompts, settings):
        from l2s_kit.merging import merge_in_memory

        backend = self.explorer._backend()
        state = merge_in_memory(self.recipe)
        missing, unexpected = backend.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if backend.model.config.tie_word_embeddings else set()
        if unexpected or set(missing) - tied:
            raise RuntimeError(f"merged state does not fit the model: missing {missing}, "
                               f"unexpected {unexpected}")
        return backend.generate(prompts, settings)


class Explorer:
    """Evaluate System 1, System 2 and merges of them on ``n_per_level`` problems per level of
    ``split``; see the module docstring."""

    def __init__(self, family: Family | None = None, *, split: str = "validation",
                 n_per_level: int = 20, workdir: str | os.PathLike = "data/runs/explorer",
                 settings: GenerationSettings = FAMILY_SETTINGS, device: str = "cpu"):
        self.family = family or build_family(progress=False)
        self.rows = self.family.rows(split, n_per_level)
        key = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True).encode()).hexdigest()
        self.out = (Path(workdir) / self.family.root.name /
                    f"{split}-{n_per_level}-{key[:8]}.jsonl")
        self.settings, self.device = settings, device
        self._loaded = None

    def _backend(self):
        from l2s_kit.evaluate import TransformersBackend

        if self._loaded is None:
            self._loaded = TransformersBackend(self.family.system1, device=self.device,
                                               progress=False)
        return self._loaded

    def recipe(self, method: str, **params):
        from l2s_kit.merging import load_recipe

        return load_recipe({"merge_method": method, "base_model": str(self.family.system1),
                            "models": [{"model": str(self.family.system2)}],
                            "parameters": params, "device": self.device})

    def responses(self, method: str, **params) -> pd.DataFrame:
        """The graded responses of "system1", "system2" or ``method`` with ``params``, with
        ``method``, ``parameters`` and the reflection columns added."""
        common = dict(settings=self.settings, extract=extract_family, progress=False)
        if method in ENDPOINTS:
            if params:
                raise ValueError(f"{method} takes no parameters (got {', '.join(params)})")
            df = evaluate(getattr(self.family, method), self.rows, self.out, model_name=method,
                          device=self.device, **common)
        else:
            recipe = self.recipe(method, **params)
            df = evaluate(None, self.rows, self.out, backend=_Merged(self, recipe),
                          model_name=model_name(method, params), recipe_hash=recipe.hash,
                          **common)
        label = ", ".join(f"{k}={v}" for k, v in params.items())
        return reflection.annotate(df).assign(method=method, parameters=label)

    def compare(self, merges: Iterable[tuple[str, dict]] = ()) -> pd.DataFrame:
        """Responses of System 1, System 2 and every ``(method, params)`` of ``merges``."""
        frames = [self.responses(m) for m in ENDPOINTS]
        frames += [self.responses(m, **p) for m, p in merges]
        return pd.concat(frames, ignore_index=True)

    def sweep(self, merges: Iterable[tuple[str, dict]]) -> pd.DataFrame:
        """One row per model (System 1, System 2, then ``merges``): method, its parameters as
        columns, accuracy, mean_tokens, length and accuracy change against System 2, reflection.
        """
        merges = list(merges)
        df = self.compare(merges)
        s = analysis.model_summary(df, reference=REFERENCE, keep=("method", "parameters"))
        params = pd.DataFrame([{}, {}, *[p for _, p in merges]])
        return pd.concat([s, params.reset_index(drop=True)], axis=1)


def param_grid(spec: dict[str, dict[str, Sequence]]) -> list[tuple[str, dict]]:
    """Every ``(method, params)`` of the product of each method's value lists:
    ``param_grid({"task_arithmetic": {"alpha": [0.2, 0.5]}, "ties": {"k": [0.8], "alpha": [0.5]}})``
    gives TA at α 0.2 and 0.5, then TIES at (k 0.8, α 0.5). Parameters are checked by name."""
    from l2s_kit.merging import get_method

    out = []
    for m, values in spec.items():
        method = get_method(m)
        names = list(values)
        for combo in itertools.product(*values.values()):
            params = dict(zip(names, combo))
            own = dict(method.params)
            if method.wraps:  # AIM: its own parameters and those of this combination's inner merge
                own.update(get_method(params.get("inner", own["inner"].default)).params)
            unknown = [k for k in params if k not in own]
            if unknown:
                inner = f" wrapping {params.get('inner', own['inner'].default)}" \
                    if method.wraps else ""
                raise ValueError(f"{m}{inner} has no parameter {', '.join(unknown)}; it takes "
                                 f"{', '.join(own)}")
            out.append((m, params))
    return out
