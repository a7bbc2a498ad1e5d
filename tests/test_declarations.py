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
from l2s_kit.merging.registry import Mergekit, MergekitName, Range, Search, merge_method


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
    from l2s_kit.study.widget import slider_methods

    offered = slider_methods()
    assert "throwaway" in offered and "aim" not in offered  # a wrapping merge has no sliders


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


def test_a_method_declares_its_per_layer_coefficients(throwaway):
    """The per-layer table and figure read a method's ``layer_coefficients`` hook: none is
    needed anywhere else."""
    from l2s_kit.analysis import plots
    from l2s_kit.study.calibration import layer_coefficients_table
    from l2s_kit.zoo import build_family

    family = build_family()
    with pytest.raises(ValueError, match="throwaway has no per-layer coefficients; these have: "
                       "acm, fim, sens_merging"):
        layer_coefficients_table(family, "throwaway")

    def scaled(base, models, weights, *, beta: float = 1.0):
        return base + beta * (models[0] - base)

    seen = []

    def per_layer(paths, params):
        seen.append((paths, params))
        return {"model.layers.0": params["beta"], "model.layers.1": 2 * params["beta"], "no such group": 9.0}

    merge_method("scaled_by_layer", paper="-", layer_coefficients=per_layer,
                 coefficient_label="Scaled (β)")(scaled)
    try:
        table = layer_coefficients_table(family, "scaled_by_layer", {"beta": 0.25})
    finally:
        registry._REGISTRY.pop("scaled_by_layer", None)
    assert seen == [([str(family.system1), str(family.system2)], {"beta": 0.25})]
    assert table.to_dict("list") == {"group": ["model.layers.0", "model.layers.1"], "coefficient": [0.25, 0.5],
                                     "method": ["scaled_by_layer"] * 2, "label": ["Scaled (β)"] * 2}
    fig = plots.layer_coefficients(table)
    assert [t.name for t in fig.data] == ["Scaled (β)"]


def test_mergekit_vocabulary_is_read_from_the_declarations(tiny_pair):
    """A method's mergekit names for its parameters and the options it always has come from its
    declaration: a method declaring them is translated without the recipe loader knowing it."""
    def fn(base, models, weights, *,
           gain: Annotated[float, Range(0.0, 5.0), MergekitName("strength", lambda x: 2 * x,
                                                                 "strength {old} -> gain {new}")] = 1.0):
        return base + gain * (models[0] - base)

    merge_method("strength_merge", paper="-", aliases=("mk_strength",), mergekit=Mergekit(
        implied={"normalize": (False, "scale gain instead")}))(fn)
    base, model = map(str, tiny_pair)
    try:
        r = load_recipe({"merge_method": "mk_strength", "base_model": base,
                         "models": [{"model": model, "parameters": {"strength": 0.5}}],
                         "parameters": {"normalize": False}})
        assert r.merge_method == "strength_merge" and r.parameters == {"gain": 1.0}
        assert {"moved per-model 'strength' to the merge's parameters", "strength 0.5 -> gain 1.0",
                "normalize false: scale gain instead"} <= set(r.notes)
        with pytest.raises(Exception, match="parameters.normalize: true is not supported for "
                           "mk_strength; scale gain instead"):
            load_recipe({"merge_method": "mk_strength", "base_model": base, "models": [model],
                         "parameters": {"normalize": True}})
        with pytest.raises(Exception, match="give either 'strength' .mergekit. or 'gain'"):
            load_recipe({"merge_method": "strength_merge", "base_model": base, "models": [model],
                         "parameters": {"strength": 1.0, "gain": 1.0}})
    finally:
        registry._REGISTRY.pop("strength_merge", None)
        registry._ALIASES.pop("mk_strength", None)


def test_a_method_declares_how_a_calibration_set_is_chosen():
    """A calibration sweep asks each method which parameters pick a calibration set."""
    from l2s_kit.study.calibration import calibration_merges

    got = calibration_merges([("aim", {"omega": 0.4}), ("sens", {"alpha": 0.7})],
                             parts=["question+long"], samples=[10, 20], source="family", seed=3)
    assert got == [
        ("aim", {"omega": 0.4, "calib_source": "family", "calib_parts": "question+long",
                 "calib_samples": n, "calib_seed": 3}) for n in (10, 20)] + [
        ("sens", {"alpha": 0.7, "calib_source": "family", "calib_parts": "question+long",
                  "calib_samples": n, "calib_seed": 3, "calib_parts_base": "question+long"})
        for n in (10, 20)]
    for method, params in got:  # every parameter it sets is the method's own
        get_method(method).resolve(params, "test")

    def picky(base, models, weights, *, texts: str = "a", count: int = 1):
        return base

    merge_method("picky", paper="-", calibration_set=lambda source, parts, n, seed: {
        "texts": f"{source}:{parts}", "count": n})(picky)
    try:
        assert calibration_merges([("picky", {})], parts=["p"], samples=[5], source="s") == [
            ("picky", {"texts": "s:p", "count": 5})]
        with pytest.raises(ValueError, match="ties does not calibrate on texts"):
            calibration_merges([("ties", {})])
    finally:
        registry._REGISTRY.pop("picky", None)
