"""What a study found: its setup, models, responses by split, tables, figures and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from l2s_kit.study.setup import StudySetup


@dataclass
class StudyResult:
    setup: StudySetup
    workdir: Path                            # merges/ and responses/<model>-<key>.jsonl
    out: Path                                # tables and figures
    models: pd.DataFrame                     # model, method, parameters, weights_hash, folder, ...
    responses: dict[str, pd.DataFrame] = field(default_factory=dict)  # split → responses
    summary: pd.DataFrame | None = None      # split, model, accuracy, mean_tokens, ...
    by_level: pd.DataFrame | None = None     # test split, per model and level (or dataset)
    table1: pd.DataFrame | None = None
    figures: dict = field(default_factory=dict)  # name → plotly Figure
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing_pngs: list[str] = field(default_factory=list)  # PNGs asked for but not written, why

    @property
    def family(self):
        return self.setup.family

