"""Recipes: l2s_kit's YAML, presets, mergekit translation, hashing."""

from __future__ import annotations

import textwrap

import pytest

from l2s_kit.errors import RecipeError
from l2s_kit.merging import PRESETS, list_methods, load_recipe, merge


@pytest.fixture
def paths(tiny_pair):
    return {"base_model": str(tiny_pair[0]), "models": [{"model": str(tiny_pair[1])}]}


def test_yaml_file_with_paths_relative_to_the_recipe(tiny_pair, tmp_path, monkeypatch):
    base, model = tiny_pair
    (tmp_path / "recipes").mkdir()
    f = tmp_path / "recipes" / "r.yaml"
    f.write_text(textwrap.dedent(f"""\
        merge_method: ties
        base_model: ../{base.parent.name}/base
        models:
          - model: ../{model.parent.name}/model
            parameters: {{weight: 0.5}}
        parameters: {{k: 0.7}}
        out_dtype: bfloat16
    """))
    (tmp_path / base.parent.name).symlink_to(base.parent)
    monkeypatch.chdir("/")
    r = load_recipe(f)
    assert r.merge_method == "ties" and r.weights == [0.5]
    assert r.parameters == {"k": 0.7, "alpha": 1.0, "trim": "topk", "normalize": True}
    assert r.out_dtype == "bfloat16"


def test_preset_fills_method_and_parameters_and_explicit_ones_win(paths):
    r = load_recipe({**paths, "preset": "ties-14b"})
    assert r.merge_method == "ties"
    assert r.parameters == {"k": 0.2, "alpha": 0.5, "trim": "reference", "normalize": True}
    r = load_recipe({**paths, "preset": "ties-7b", "parameters": {"alpha": 0.9}})
    assert r.parameters == {"k": 0.8, "alpha": 0.9, "trim": "reference", "normalize": True}
    assert any("preset ties-7b" in n for n in r.notes)


def test_presets_are_the_paper_table():
    assert PRESETS["ta-7b"]["parameters"] == {"alpha": 0.7}
    assert PRESETS["ties-32b"]["parameters"]["k"] == 0.25
    assert PRESETS["ties-32b"]["parameters"]["alpha"] == 0.55
    assert PRESETS["dare-14b"]["parameters"] == {"p": 0.4}
    assert PRESETS["ties-qwen3-8b"]["parameters"]["k"] == 0.7


def test_mergekit_ties_is_translated(paths):
    r = load_recipe({
        "merge_method": "ties", "base_model": paths["base_model"],
        "models": [{"model": paths["models"][0]["model"],
                    "parameters": {"density": 0.2, "weight": 1.0}}],
        "parameters": {"lambda": 1.0, "normalize": True},
        "dtype": "bfloat16",
    })
    assert r.parameters == {"k": 0.8, "alpha": 1.0, "trim": "mergekit", "normalize": True}
    assert r.dtype == "float32" and r.out_dtype == "bfloat16"
    notes = " | ".join(r.notes)
    assert "density 0.2 -> k = 1 - density = 0.8" in notes
    assert "lambda 1.0 -> alpha 1.0" in notes
    assert "stores bfloat16" in notes


def test_mergekit_dare_linear_and_dare_ties(paths):
    r = load_recipe({**paths, "merge_method": "dare_linear",
                     "parameters": {"density": 0.7, "lambda": 0.5}})
    assert r.merge_method == "dare" and r.parameters["p"] == 0.3 and r.parameters["alpha"] == 0.5
    r = load_recipe({**paths, "merge_method": "dare_ties", "parameters": {"density": 0.6}})
    assert r.merge_method == "dare_ties" and r.parameters["p"] == 0.4 and r.parameters["k"] == 0.0


def test_mergekit_linear_without_base_takes_the_first_model(tiny_pair):
    base, model = map(str, tiny_pair)
    r = load_recipe({"merge_method": "linear", "models": [
        {"model": base, "parameters": {"weight": 0.3}},
        {"model": model, "parameters": {"weight": 0.7}}]})
    assert r.merge_method == "average" and r.base_model == base
    assert r.parameters == {"base_weight": 0.3} and r.weights == [0.7]


def test_mergekit_density_gradients_become_trim_ratio_schedules(paths):
    r = load_recipe({**paths, "merge_method": "ties", "parameters": {"density": [0.1, 0.5]}})
    assert r.parameters["k"] == [0.9, 0.5]
    r = load_recipe({**paths, "merge_method": "dare_ties", "parameters": {
        "density": [{"filter": "mlp", "value": [0.2, 0.6]}, {"value": 0.7}]}})
    assert r.parameters["p"] == [{"filter": "mlp", "value": [0.8, 0.4]},
                                 {"filter": None, "value": 0.3}]
    with pytest.raises(RecipeError, match="density must be a number or a layer schedule"):
        load_recipe({**paths, "merge_method": "ties", "parameters": {"density": "high"}})


def test_mergekit_differing_per_model_values_stay_per_model_where_the_method_takes_them(tiny_pair):
    base, model = map(str, tiny_pair)
    r = load_recipe({"merge_method": "ties", "base_model": base, "models": [
        {"model": model, "parameters": {"density": 0.2}},
        {"model": model, "parameters": {"density": 0.5}}]})
    assert [m.parameters["k"] for m in r.models] == [0.8, 0.5]
    assert "per-model density -> per-model k = 1 - density" in r.notes
    with pytest.raises(RecipeError, match="one lambda for the whole merge"):
        load_recipe({"merge_method": "ties", "base_model": base, "models": [
            {"model": model, "parameters": {"lambda": 0.2}},
            {"model": model, "parameters": {"lambda": 0.5}}]})


def test_recipe_hash_is_stable_and_parameter_sensitive(paths):
    a = load_recipe({**paths, "merge_method": "ties", "parameters": {"k": 0.8}})
    b = load_recipe({**paths, "merge_method": "ties", "parameters": {"k": 0.8, "alpha": 1.0}})
    c = load_recipe({**paths, "merge_method": "ties", "parameters": {"k": 0.7}})
    assert a.hash == b.hash != c.hash
    assert a.with_parameters(k=0.7).hash == c.hash


@pytest.mark.parametrize("name", [m.name for m in list_methods()])
def test_every_method_same_recipe_twice_same_weights_hash(name, paths, tmp_path):
    from l2s_kit.merging import get_method

    if get_method(name).n_models[0] > 1:  # model_stock: two models (the same one twice)
        paths = {**paths, "models": paths["models"] * 2}
    if get_method(name).stacks:  # passthrough: layers of both stacked
        paths = {"slices": [{"sources": [{"model": paths["base_model"], "layer_range": [0, 2]}]},
                            {"sources": [{"model": paths["models"][0]["model"],
                                          "layer_range": [1, 2]}]}]}
    r = load_recipe({**paths, "merge_method": name})
    a = merge(r, tmp_path / "a", progress=False)
    b = merge(r, tmp_path / "b", progress=False)
    assert a.weights_hash == b.weights_hash


def test_a_wrapping_method_passes_on_its_inner_merges_notes(paths):
    lore = load_recipe({**paths, "merge_method": "lore", "parameters": {"alpha": 0.5}})
    aim = load_recipe({**paths, "merge_method": "aim",
                       "parameters": {"inner": "lore", "alpha": 0.5}})
    assert any("plain averaging" in n for n in lore.notes)
    assert any("plain averaging" in n for n in aim.notes)


def test_a_preset_with_another_inner_merge_drops_the_old_inner_parameters(paths):
    r = load_recipe({**paths, "preset": "aim-ties-7b", "parameters": {"inner": "twin"}})
    assert r.parameters["inner"] == "twin" and r.parameters["omega"] == 0.4
    assert "k" not in r.parameters and "lam" in r.parameters  # twin's defaults, not ties' k
    assert r.parameters["calib_source"] == "s1k"  # AIM's own preset parameters are kept
