"""Shared fixtures: tiny Qwen2 checkpoint pairs built on the fly (never downloaded)."""

from __future__ import annotations

import pytest

from l2s_kit.synthetic import make_pair


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(base, model) folders: tied embeddings, one safetensors file each."""
    return make_pair(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, delta_std=0.02)


@pytest.fixture(scope="session")
def sharded_pair(tmp_path_factory):
    """(base, model): sharded (index + several files), untied lm_head, model with 3 extra rows."""
    return make_pair(tmp_path_factory.mktemp("sharded"), "tiny", seed=1, delta_std=0.02,
                     base_tied=False, model_tied=False, extra_rows=3, shard_size=20_000)


@pytest.fixture(scope="session")
def mixed_tie_pair(tmp_path_factory):
    """(base, model): base ties lm_head to the embedding, model stores its own (as 1.5B pairs do)."""
    return make_pair(tmp_path_factory.mktemp("mixed"), "tiny", seed=2, delta_std=0.02,
                     base_tied=True, model_tied=False, shard_size=30_000)


@pytest.fixture(scope="session")
def shared_data():
    """The reference data folder: $L2S_SHARED_DATA, else ../shared/data beside the repository."""
    import os
    from pathlib import Path

    path = Path(os.environ.get("L2S_SHARED_DATA",
                               Path(__file__).resolve().parents[2] / "shared" / "data"))
    assert path.is_dir(), (f"reference data not found at {path}; set L2S_SHARED_DATA to the folder "
                           "holding benchmarks/, samples/ and calibration/")
    return path


@pytest.fixture(scope="session")
def family():
    """The default built-in family, built once into data/zoo (or $L2S_ZOO) and reused."""
    from l2s_kit.zoo import build_family

    return build_family(progress=False)


@pytest.fixture(scope="session")
def chromium():
    """The system Chromium (Debian's package, installed by scripts/setup.sh)."""
    import os
    import shutil

    path = os.environ.get("L2S_CHROMIUM") or shutil.which("chromium")
    assert path, ("no Chromium found: run scripts/setup.sh (it installs Debian's chromium) or set "
                  "L2S_CHROMIUM to a Chromium binary")
    return path


@pytest.fixture(scope="session", autouse=True)
def stats_cache(tmp_path_factory):
    """Calibration statistics go to a temporary cache, never into the (shared) family's folders."""
    import os

    old = os.environ.get("L2S_CACHE")
    os.environ["L2S_CACHE"] = str(tmp_path_factory.mktemp("l2s_cache"))
    yield os.environ["L2S_CACHE"]
    if old is None:
        os.environ.pop("L2S_CACHE", None)
    else:
        os.environ["L2S_CACHE"] = old
