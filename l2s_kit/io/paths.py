"""Where the kit looks for things it does not ship: the public reference data (benchmarks in the
Qwen2.5-Math toolkit's layout, s1K, real model outputs), which a user points at with
``$L2S_SHARED_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the folder holding l2s_kit/ (a clone's root)


def reference_data_dir() -> Path:
    """``$L2S_SHARED_DATA``, else ``../shared/data`` beside the repository (it may not exist)."""
    return Path(os.environ.get("L2S_SHARED_DATA", REPO.parent / "shared" / "data"))
