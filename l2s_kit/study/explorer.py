"""Merges of a pair made in memory and evaluated in seconds (the merge explorer).

>>> ex = Explorer(n_per_level=20)                       # the family's validation split
>>> ex = Explorer(study_setup(base=..., model=..., benchmark="math500", data_dir=..., limit=100))
>>> ex.responses("task_arithmetic", alpha=0.2)          # responses DataFrame, graded, annotated
>>> ex.sweep([("ties", {"k": 0.8, "alpha": a}) for a in (0.3, 0.5, 1.0)])  # one row per merge
>>> explorer_widget(ex, "ties")   # l2s_kit.study.widget: sliders; the figure updates in place

It works on any :class:`l2s_kit.study.setup.StudySetup` (the built-in family when none is given):
System 1 is loaded once and each merge's weights are swapped into it
(:func:`l2s_kit.study.runner.merge_into_base`). Nothing is written but the responses
(``workdir/<setup>/<split>-<n>-<settings>.jsonl``, the usual resumable file, every row naming the
model's weights hash), so asking again for a merge already evaluated generates nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from l2s_kit import analysis
from l2s_kit.analysis import reflection
from l2s_kit.evaluate import GenerationSettings
from l2s_kit.study.setup import REFERENCE, ROLES


def model_name(method: str, params: dict) -> str:
    """"ties k=0.8 alpha=1.0": the name a merge has in responses and tables."""
    return " ".join([method, *(f"{k}={v}" for k, v in params.items())])


class Explorer:
    """Evaluate System 1, System 2 and merges of them on the ``split`` rows of ``setup`` (a
    :class:`~l2s_kit.study.setup.StudySetup`, or a zoo ``Family``; default: the built-in family
    with ``n_per_level`` problems per level); see the module docstring. ``settings`` replaces the
    setup's generation settings for every model."""

    def __init__(self, setup=None, *, split: str = "validation", n_per_level: int = 20,
                 workdir: str | os.PathLike = "data/runs/explorer",
                 settings: GenerationSettings | None = None, device: str | None = None):
        from dataclasses import replace

        from l2s_kit.study.setup import StudySetup, family_setup

        if not isinstance(setup, StudySetup):  # a Family, or None: the built-in family
            setup = family_setup(setup, n_per_level, device=device or "cpu", progress=False)
        elif device is not None:
            setup = replace(setup, device=device)
        if settings is not None:
            setup = replace(setup, settings={role: settings for role in setup.settings})
        self.setup, self.split, self.device = setup, split, setup.device
        self.rows = setup.rows(split)
        self.settings = setup.settings["system2"]
        key = hashlib.sha256(json.dumps(
            [{r: v.to_dict() for r, v in sorted(setup.settings.items())}, setup.prompts,
             setup.grader], sort_keys=True).encode()).hexdigest()
        self.out = Path(workdir) / setup.name / f"{split}-{len(self.rows)}-{key[:8]}.jsonl"
        self._grader = None
        self._weights: dict[str, str] = {}  # merge key → merged weights hash, this session

    @property
    def family(self):
        return self.setup.family

    def _grade(self):
        if self._grader is None:
            from l2s_kit.evaluate import Grader

            self._grading = Grader(self.setup.grader).open()
            self._grader = self._grading.__enter__()
        return self._grader

    def close(self) -> None:
        """Stop the grader's worker process (math-verify), if one was started."""
        if self._grader is not None:
            self._grading.__exit__(None, None, None)
            self._grader = None

    def recipe(self, method: str, **params):
        from l2s_kit.merging import load_recipe

        return load_recipe({"merge_method": method, "base_model": str(self.setup.system1),
                            "models": [{"model": str(self.setup.system2)}],
                            "parameters": params, "device": self.device})

    def responses(self, method: str, subset: Sequence[str] | None = None,
                  **params) -> pd.DataFrame:
        """The graded responses of "system1", "system2" or ``method`` with ``params``, with
        ``method``, ``parameters`` and the reflection columns added. ``subset``: only the rows
        with these ids (generated into the same file, so the whole split reuses them later)."""
        from l2s_kit.study.runner import Job, evaluate_job

        s = self.setup
        wanted = None if subset is None else set(map(str, subset))
        if method in ROLES:
            if params:
                raise ValueError(f"{method} takes no parameters (got {', '.join(params)})")
            job, role = Job(method, model=str(getattr(s, method))), method
        else:
            job, role = Job(model_name(method, params), recipe=self.recipe(method, **params)), "merge"
        rows = [r for r in s.rows(self.split, role) if wanted is None or str(r["id"]) in wanted]
        df, _ = evaluate_job(job, rows, self.out, settings=s.settings_for(role),
                             grade=self._grade(), extract=s.extract, device=self.device,
                             merge_in="memory", weights=self._weights)
        label = ", ".join(f"{k}={v}" for k, v in params.items())
        return reflection.annotate(df).assign(method=method, parameters=label)

    def compare(self, merges: Iterable[tuple[str, dict]] = ()) -> pd.DataFrame:
        """Responses of System 1, System 2 and every ``(method, params)`` of ``merges``."""
        frames = [self.responses(m) for m in ROLES]
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
