"""The explorer: in-memory merges of the family give exactly what the merged checkpoint gives,
responses are cached, and the widget re-merges when a slider moves."""

from __future__ import annotations

import os
import stat

import pytest

from l2s_kit.study.explorer import Explorer
from l2s_kit.study.widget import explorer_widget


@pytest.fixture(scope="module")
def explorer(family, tmp_path_factory):
    return Explorer(family, split="validation", n_per_level=5,
                    workdir=tmp_path_factory.mktemp("explore"))


@pytest.mark.slow
def test_in_memory_merge_answers_like_the_merged_checkpoint(explorer, family, tmp_path):
    from l2s_kit.evaluate import evaluate, extract_family
    from l2s_kit.merging import merge

    mine = explorer.responses("ties", k=0.8, alpha=0.5)
    folder = merge(explorer.recipe("ties", k=0.8, alpha=0.5), tmp_path / "ties", progress=False)
    disk = evaluate(folder, explorer.rows, tmp_path / "r.jsonl", settings=explorer.settings,
                    extract=extract_family, progress=False)
    assert list(mine["response"]) == list(disk["response"])
    assert list(mine["correct"]) == list(disk["correct"])
    assert mine["recipe_hash"].iloc[0] == disk["recipe_hash"].iloc[0]
    assert set(mine["model"]) == {"ties k=0.8 alpha=0.5"}


@pytest.mark.slow
def test_sweep_is_cached_and_says_what_the_family_does(explorer):
    s = explorer.sweep([("task_arithmetic", {"alpha": 0.3})]).set_index("model")
    assert s.loc["system2", "accuracy_change"] == 0 and s.loc["system2", "length_change"] == 0
    assert s.loc["system1", "mean_tokens"] < s.loc["system2", "mean_tokens"] / 4
    ta = s.loc["task_arithmetic alpha=0.3"]
    assert ta["alpha"] == 0.3 and ta["length_change"] < -20 and ta["accuracy_change"] >= -5
    before = explorer.out.stat().st_size
    explorer.sweep([("task_arithmetic", {"alpha": 0.3})])
    assert explorer.out.stat().st_size == before  # nothing generated again
    assert stat.S_IMODE(explorer.out.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.slow
def test_widget_remerges_when_a_slider_moves(explorer):
    box = explorer_widget(explorer, "task_arithmetic", alpha=0.2)
    assert box.summary["model"] == "task_arithmetic alpha=0.2"
    assert box.controls["alpha"].layout.display == "" and box.controls["k"].layout.display == "none"
    box.controls["alpha"].value = 0.5
    assert box.summary["model"] == "task_arithmetic alpha=0.5"
    assert "task_arithmetic alpha=0.5" in box.status.value
    box.method.value = "ties"
    assert box.summary["model"] == "ties k=0.8 alpha=0.5"  # the slider's α carries over
    assert box.controls["k"].layout.display == ""
    box.controls["trim"].value = "global"
    assert box.summary["model"] == "ties k=0.8 alpha=0.5 trim=global"
    box.method.value = "twin"  # an SVD method: its own sliders
    assert box.summary["model"] == "twin lam=0.3 mask_rate=0.9"
    assert box.controls["lam"].layout.display == "" and box.controls["k"].layout.display == "none"
