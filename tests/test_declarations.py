"""A method declares everything about itself next to its function: its parameters' ranges and
where to search them. Adding a method is its module alone: a throwaway method registered here is
merged by ``l2s merge`` and by a mergekit-shaped recipe, and ``l2s tune`` and the explorer's
sliders search it where it says."""

from __future__ import annotations

from typing import Annotated

import pytest
import torch

from l2s_kit.io import Checkpoint
from l2s_kit.merging import get_method, list_methods, load_recipe, merge_state_dicts, registry
from l2s_kit.merging.registry import Range, Search, merge_method


@pytest.fixture
def throwaway():
    """``throwaway``: the base plus beta times the mean task vector (task arithmetic by
    another name), searched over [0.1, 2.0] in steps of 0.1."""

    def fn(base, models, weights, *,
           beta: Annotated[float, Range(0.0, 5.0), Search(0.1, 2.0, 0.1), "scale"] = 1.0):
        return base + beta * sum(w * (m - base) for m, w in zip(models, weights))

    merge_method("throwaway", paper="https://example.org/throwaway")(fn)
    try:
        yield get_method("throwaway")
    finally:
        registry._REGISTRY.pop("throwaway", None)


def test_a_throwaway_method_is_merged_everywhere(throwaway, tiny_pair, tmp_path):
    from l2s_kit.cli import main
    from l2s_kit.study.tune import search_space

    assert "throwaway" in [m.name for m in list_methods()]
    base, model = map(str, tiny_pair)
    ta = merge_state_dicts("task_arithmetic", base, [model], alpha=0.5)
    # the command line, with the method's own parameter
    out = tmp_path / "cli"
    assert main(["merge", "--method", "throwaway", "--param", "beta=0.5", "--base", base,
                 "--model", model, "--out", str(out), "--quiet"]) == 0
    merged = Checkpoint(out)
    for name, t in ta.items():
        assert torch.allclose(merged.read(name).float(), t.float(), atol=1e-6), name
    # a mergekit-shaped recipe
    r = load_recipe({"merge_method": "throwaway", "base_model": base,
                     "models": [{"model": model, "parameters": {"weight": 1.0}}],
                     "parameters": {"beta": 0.5}})
    assert r.merge_method == "throwaway" and r.parameters == {"beta": 0.5}
    # where the tuner searches, and the explorer's slider
    assert search_space("throwaway", None) == {"beta": (0.1, 2.0)}
    assert throwaway.params["beta"].search == Search(0.1, 2.0, 0.1)


def test_a_search_interval_outside_the_range_fails_at_import():
    def bad(base, models, weights, *,
            beta: Annotated[float, Range(0.0, 1.0), Search(0.0, 2.0, 0.1)] = 0.5):
        return base

    with pytest.raises(TypeError, match="beta.*must lie in its range"):
        merge_method("test_bad_search", paper="-")(bad)
    with pytest.raises(TypeError, match="need lo < hi"):
        Search(1.0, 0.5, 0.1)


def test_the_paper_methods_declare_where_to_search():
    """The sliders and search intervals the explorer showed for the paper's parameters."""
    want = {"alpha": (0.0, 1.5, 0.05), "k": (0.0, 0.95, 0.05), "p": (0.0, 0.9, 0.05),
            "lam": (0.0, 1.0, 0.05), "mask_rate": (0.0, 0.99, 0.01),
            "temperature": (0.5, 10.0, 0.5)}
    for method in ("task_arithmetic", "ties", "dare", "dare_ties", "twin", "sens_merging", "lore"):
        for name, p in get_method(method).params.items():
            if name in want:
                assert (p.search.lo, p.search.hi, p.search.step) == want[name], (method, name)
