"""Bad inputs: each is refused with the documented error type and a message that names the
offending thing (field, file, tensor, shapes) and says what to do, and no output folder or
temporary sibling is left behind."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from l2s_kit.errors import (
    CheckpointError,
    IncompatibleModelsError,
    L2SError,
    NonFiniteError,
    OutputExistsError,
    RecipeError,
)
from l2s_kit.io import INDEX_FILE, Checkpoint
from l2s_kit.merging import PRESETS, engine, get_method, list_methods, merge, read_merge_info
from l2s_kit.zoo.synthetic import SHAPES, make_pair

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
UP_PROJ = "model.layers.1.mlp.up_proj.weight"


# -- fixtures and helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """A sharded tiny (base, model) pair. Never modified: tests that corrupt it copy it first."""
    return make_pair(tmp_path_factory.mktemp("bad_inputs") / "pair", "tiny", seed=0,
                     shard_size=20_000, extra_rows=0, base_tied=None, model_tied=None)


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A pair whose MLP is narrower (intermediate_size 48 instead of tiny's 64)."""
    shape = dict(SHAPES["tiny"], intermediate_size=48)
    return make_pair(tmp_path_factory.mktemp("bad_inputs") / "pair48", shape, seed=0)


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def recipe(base, model, method="task_arithmetic", **params) -> dict:
    return {"merge_method": method, "base_model": str(base), "models": [{"model": str(model)}],
            "parameters": params}


def leftovers(out: Path) -> list[str]:
    """Output folder and temporary/old siblings of ``out`` present in its parent folder."""
    if not out.parent.exists():
        return []
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name == out.name or p.name.startswith((f".{out.name}.tmp-",
                                                              f".{out.name}.old-")))


def assert_nothing_left(out: Path) -> None:
    assert leftovers(out) == [], f"merge left {leftovers(out)} in {out.parent}"


def merge_fails(exc_type, recipe_, out: Path, **kw) -> str:
    """Run the merge, expect ``exc_type``, check nothing is left behind; return the message."""
    with pytest.raises(exc_type) as ei:
        merge(recipe_, out, progress=False, **kw)
    assert_nothing_left(out)
    return str(ei.value)


def edit_tensors(folder: Path, edit) -> None:
    """Rewrite every shard of ``folder`` with ``edit(dict of tensors) -> dict``; fix the index."""
    index_path = folder / INDEX_FILE
    files = sorted(folder.glob("*.safetensors"))
    weight_map = {}
    for f in files:
        tensors = edit(load_file(f))
        save_file(tensors, f, metadata={"format": "pt"})
        weight_map.update({name: f.name for name in tensors})
    if index_path.exists():
        index = json.loads(index_path.read_text())
        index["weight_map"] = weight_map
        index_path.write_text(json.dumps(index, indent=2))


def edit_one(folder: Path, name: str, fn) -> None:
    """Replace tensor ``name`` (in whichever shard holds it) by ``fn(tensor)``."""
    seen = []

    def edit(tensors):
        if name in tensors:
            seen.append(name)
            tensors[name] = fn(tensors[name].clone()).contiguous()
        return tensors

    edit_tensors(folder, edit)
    assert seen == [name], f"{name} not found in {folder}"


# -- recipes ------------------------------------------------------------------------------------------
def test_unknown_method_lists_available(pair, tmp_path):
    msg = merge_fails(RecipeError, recipe(*pair, method="tie_merging"), tmp_path / "out")
    assert "unknown merge method 'tie_merging'" in msg
    assert "available:" in msg
    for m in list_methods():
        assert m.name in msg


def test_unknown_parameter_lists_valid_ones(pair, tmp_path):
    msg = merge_fails(RecipeError, recipe(*pair, method="ties", kk=0.5), tmp_path / "out")
    assert "unknown parameter 'kk'" in msg
    assert "'ties'" in msg
    valid = msg.split("valid parameters:")[1]
    assert {p.strip() for p in valid.split(",")} == set(get_method("ties").params)


@pytest.mark.parametrize("method, key, value, rng", [
    ("ties", "k", 1.0, "[0, 1)"),
    ("dare", "p", 1.5, "[0, 1)"),
    ("task_arithmetic", "alpha", -1, "[0, 10]"),
])
def test_out_of_range_value(pair, tmp_path, method, key, value, rng):
    msg = merge_fails(RecipeError, recipe(*pair, method=method, **{key: value}), tmp_path / "out")
    assert f"parameter '{key}' = {float(value)!r} is out of range {rng}" in msg
    assert msg.startswith("recipe: parameters:")


def test_wrong_type_names_file_and_parameter(pair, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"merge_method: ties\nbase_model: {pair[0]}\nmodels:\n  - model: {pair[1]}\n"
                    "parameters:\n  k: high\n")
    msg = merge_fails(RecipeError, str(path), tmp_path / "out")
    assert str(path) in msg
    assert "parameter 'k' must be float, got 'high'" in msg


def test_missing_base_model(pair, tmp_path):
    r = recipe(*pair)
    del r["base_model"]
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert "missing 'base_model'" in msg


def test_empty_models(pair, tmp_path):
    r = recipe(*pair)
    r["models"] = []
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert "'models' must be a non-empty list" in msg


def test_missing_checkpoint_path_names_field(pair, tmp_path):
    missing = tmp_path / "no-such-model"
    msg = merge_fails(RecipeError, recipe(pair[0], missing), tmp_path / "out")
    assert "models[0].model" in msg
    assert str(missing) in msg
    assert "does not exist" in msg


def test_missing_base_folder_names_field(pair, tmp_path):
    missing = tmp_path / "no-such-base"
    msg = merge_fails(RecipeError, recipe(missing, pair[1]), tmp_path / "out")
    assert "base_model" in msg
    assert str(missing) in msg
    assert "does not exist" in msg


def test_unknown_top_level_field(pair, tmp_path):
    r = recipe(*pair)
    r["alpha"] = 0.5
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert "unknown field 'alpha'" in msg
    assert "valid fields:" in msg
    assert "merge_method" in msg and "base_model" in msg


def test_unknown_per_model_parameter(pair, tmp_path):
    r = recipe(*pair)
    r["models"][0]["parameters"] = {"weight": 1.0, "alpha": 0.5}
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert "models[0].parameters: unknown parameter 'alpha'" in msg
    assert "weight" in msg


def test_unknown_preset_lists_presets(pair, tmp_path):
    r = recipe(*pair)
    del r["merge_method"]
    r["preset"] = "ties-70b"
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert "unknown preset 'ties-70b'" in msg
    for name in PRESETS:
        assert name in msg


def test_density_and_k_together(pair, tmp_path):
    msg = merge_fails(RecipeError, recipe(*pair, method="ties", density=0.2, k=0.8),
                      tmp_path / "out")
    assert "'density'" in msg and "'k'" in msg and "not both" in msg


# -- checkpoint folders ------------------------------------------------------------------------------
def test_pytorch_bin_only_says_how_to_convert(pair, tmp_path):
    folder = tmp_path / "bin-model"
    folder.mkdir()
    shutil.copy(pair[1] / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    msg = merge_fails(CheckpointError, recipe(pair[0], folder), tmp_path / "out")
    assert str(folder) in msg
    assert "pytorch_model.bin" in msg
    assert "safetensors" in msg
    assert "save_pretrained" in msg


def test_folder_without_config(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")
    (folder / "config.json").unlink()
    msg = merge_fails(CheckpointError, recipe(pair[0], folder), tmp_path / "out")
    assert f"{folder} has no config.json" in msg


def test_checkpoint_folder_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError) as ei:
        Checkpoint(missing)
    assert str(missing) in str(ei.value)
    assert "does not exist" in str(ei.value)


def test_index_names_missing_shard(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")
    shard = "model-00002-of-00005.safetensors"
    assert shard in json.loads((folder / INDEX_FILE).read_text())["weight_map"].values()
    (folder / shard).unlink()
    msg = merge_fails(CheckpointError, recipe(pair[0], folder), tmp_path / "out")
    assert str(folder / INDEX_FILE) in msg
    assert shard in msg
    assert "incomplete" in msg


# -- checkpoints that do not fit together ------------------------------------------------------------
def test_different_model_type(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(cfg))
    msg = merge_fails(IncompatibleModelsError, recipe(pair[0], folder), tmp_path / "out")
    assert "different architectures" in msg
    assert str(pair[0]) in msg and str(folder) in msg
    assert "qwen2" in msg and "llama" in msg


def test_different_architectures_field(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["Qwen2ForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(cfg))
    msg = merge_fails(IncompatibleModelsError, recipe(pair[0], folder), tmp_path / "out")
    assert "architectures" in msg
    assert "Qwen2ForCausalLM" in msg and "Qwen2ForSequenceClassification" in msg


def test_missing_tensor_is_named(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")
    edit_tensors(folder, lambda ts: {n: t for n, t in ts.items() if n != UP_PROJ})
    assert UP_PROJ not in Checkpoint(folder)
    msg = merge_fails(IncompatibleModelsError, recipe(pair[0], folder), tmp_path / "out")
    assert f"tensor {UP_PROJ} is missing from {folder}" in msg


def test_extra_tensor_is_named(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")
    extra = "model.layers.1.mlp.extra_proj.weight"

    def add(ts):
        if UP_PROJ in ts:
            ts[extra] = torch.zeros(4, 4)
        return ts

    edit_tensors(folder, add)
    assert extra in Checkpoint(folder)
    msg = merge_fails(IncompatibleModelsError, recipe(pair[0], folder), tmp_path / "out")
    assert f"tensor {extra} is in {folder} but not in base {pair[0]}" in msg


def test_shape_mismatch_names_tensor_and_both_shapes(pair, wide_pair, tmp_path):
    msg = merge_fails(IncompatibleModelsError, recipe(pair[0], wide_pair[1]), tmp_path / "out")
    name = "model.layers.0.mlp.down_proj.weight"  # the first mismatching tensor in name order
    assert f"tensor {name}: shape (32, 64) in base {pair[0]} but (32, 48) in {wide_pair[1]}" in msg


# -- non-finite values -------------------------------------------------------------------------------
def test_nan_in_input_is_named(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")

    def poison(t):
        t[3, 5] = math.nan
        return t

    edit_one(folder, Q_PROJ, poison)
    msg = merge_fails(NonFiniteError, recipe(pair[0], folder), tmp_path / "out")
    assert f"input tensor {Q_PROJ} of {folder} has 1 non-finite values" in msg


def test_fp16_overflow_names_merged_tensor(pair, tmp_path):
    folder = copy_ckpt(pair[1], tmp_path / "model")
    edit_one(folder, Q_PROJ, lambda t: torch.full_like(t, 60000.0))
    r = recipe(pair[0], folder, alpha=10.0)
    r["out_dtype"] = "float16"
    msg = merge_fails(NonFiniteError, r, tmp_path / "out")
    assert f"merged tensor {Q_PROJ} has" in msg
    assert "out_dtype" in msg  # says what to do


# -- the output folder -------------------------------------------------------------------------------
def test_output_exists_is_left_untouched(pair, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker.txt").write_text("keep me")
    with pytest.raises(OutputExistsError) as ei:
        merge(recipe(*pair), out, progress=False)
    msg = str(ei.value)
    assert str(out) in msg and "overwrite" in msg
    assert (out / "marker.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["marker.txt"]
    assert leftovers(out) == ["out"]


def test_overwrite_replaces_the_kits_earlier_output_not_the_users(pair, tmp_path):
    out = tmp_path / "out"
    first = merge({**recipe(*pair), "parameters": {"alpha": 0.2}}, out, progress=False)
    result = merge(recipe(*pair), out, overwrite=True, progress=False)
    assert result == out and result.weights_hash != first.weights_hash
    (out / "marker.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"did not write \(marker.txt\)"):
        merge(recipe(*pair), out, overwrite=True, progress=False)
    (out / "marker.txt").unlink()
    assert read_merge_info(out)["weights_hash"] == result.weights_hash
    assert Checkpoint(out).names == Checkpoint(pair[0]).names
    assert leftovers(out) == ["out"]


def test_failed_overwrite_keeps_old_output(pair, tmp_path, monkeypatch):
    out = tmp_path / "out"
    old = merge({**recipe(*pair), "parameters": {"alpha": 0.2}}, out, progress=False)

    def fail(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(engine.MergeRun, "_merge_block", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        merge(recipe(*pair), out, overwrite=True, progress=False)
    assert read_merge_info(out)["weights_hash"] == old.weights_hash
    assert leftovers(out) == ["out"]


def test_cuda_without_gpu(pair, tmp_path):
    out = tmp_path / "out"
    if torch.cuda.is_available():
        result = merge(recipe(*pair), out, device="cuda", progress=False)
        assert Checkpoint(result).names == Checkpoint(pair[0]).names
        return
    msg = merge_fails(L2SError, recipe(*pair), out, device="cuda")
    assert "device cuda" in msg
    assert "device: cpu" in msg  # says what to do


def test_cuda_in_recipe_without_gpu(pair, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; test_cuda_without_gpu covers the successful merge")
    r = recipe(*pair)
    r["device"] = "cuda:0"
    msg = merge_fails(L2SError, r, tmp_path / "out")
    assert "cuda:0" in msg


def test_unknown_device_in_recipe(pair, tmp_path):
    r = recipe(*pair)
    r["device"] = "gpu"
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert "device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in msg


def test_unknown_device_argument(pair, tmp_path):
    """``merge(..., device=...)`` (and ``l2s merge --device``) is validated like the recipe's."""
    msg = merge_fails(RecipeError, recipe(*pair), tmp_path / "out", device="gpu")
    assert "device" in msg and "'gpu'" in msg


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_merge_leaves_nothing(pair, tmp_path, monkeypatch, exc):
    original = engine.MergeRun._merge_block
    calls = []

    def flaky(self, job, *args):
        calls.append(job.name)
        if len(calls) > 3:
            raise exc("interrupted mid-way")
        return original(self, job, *args)

    monkeypatch.setattr(engine.MergeRun, "_merge_block", flaky)
    out = tmp_path / "out"
    with pytest.raises(exc, match="interrupted mid-way"):
        merge(recipe(*pair), out, progress=False)
    assert len(calls) == 4
    assert_nothing_left(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_good_recipe_leaves_only_the_output(pair, tmp_path):
    """Sanity check of the helpers: a good recipe merges and leaves exactly the output."""
    out = tmp_path / "out"
    result = merge(recipe(*pair, alpha=0.5), out, progress=False)
    saved = yaml.safe_load((out / "l2s_recipe.yaml").read_text())
    assert saved["parameters"] == {"alpha": 0.5}
    assert read_merge_info(result)["weights_hash"] == result.weights_hash
    assert leftovers(out) == ["out"]


# -- YAML as every file of the kit is read ----------------------------------------------------------
def _yaml_recipe(pair, tmp_path, body: str) -> Path:
    base, model = pair
    f = tmp_path / "recipe.yaml"
    f.write_text(f"merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {model}\n"
                 + body)
    return f


def test_a_yaml_alias_bomb_is_refused_at_once(pair, tmp_path):
    import time

    laughs = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 12))
    f = _yaml_recipe(pair, tmp_path, "l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]\n" + laughs
                     + "name: *l11\n")
    start = time.perf_counter()
    msg = merge_fails(RecipeError, f, tmp_path / "out")
    assert time.perf_counter() - start < 5  # 9**11 nodes were it expanded
    assert "aliases (*l0) are not accepted" in msg and str(f) in msg


def test_a_key_given_twice_is_refused_naming_both_lines(pair, tmp_path):
    f = _yaml_recipe(pair, tmp_path, "parameters:\n  alpha: 0.3\n  alpha: 0.7\n")
    msg = merge_fails(RecipeError, f, tmp_path / "out")
    assert "the key 'alpha' is given twice (first on line 6); keep one" in msg
    assert "line 7" in msg


def test_a_number_in_exponent_form_is_a_number(pair, tmp_path):
    from l2s_kit.merging import load_recipe

    f = _yaml_recipe(pair, tmp_path, "parameters: {alpha: 1e-1}\n")
    assert load_recipe(f).parameters == {"alpha": 0.1}
    assert yaml.safe_load("alpha: 1e-1") == {"alpha": "1e-1"}  # what PyYAML alone reads


def test_bad_yaml_in_a_sweep_or_a_notebook_parameters_file_is_one_line_exit_2(tmp_path, capsys):
    from l2s_kit.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("recipes: {a: 1\n")
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    bad.write_text("a: &x 1\nb: *x\n")
    assert main(["notebooks", "run", "-f", str(bad), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"parameters file {bad}" in err and "aliases" in err and "Traceback" not in err
    assert main(["merge", "--method", "task_arithmetic", "--param", "alpha=[1", "--base", "x",
                 "--model", "y", "--out", str(tmp_path / "o")]) == 2
    assert "--param alpha=[1: not a YAML value" in capsys.readouterr().err


def test_every_yaml_file_is_read_through_one_loader():
    import re
    from pathlib import Path as P

    pkg = P(__file__).resolve().parents[1] / "l2s_kit"
    direct = [str(f.relative_to(pkg)) for f in pkg.rglob("*.py")
              if f.name != "yamlfile.py" and re.search(r"yaml\.(safe_)?load\(", f.read_text())]
    assert not direct, f"read YAML with l2s_kit.io.yamlfile.safe_load: {direct}"


@pytest.mark.parametrize("body, extra, message", [
    ("merge_method: task_arithmetic\n{head}", ["--shard-size", "infGB"],
     "shard_size must be a positive size such as '2GB'"),
    ("merge_method: [ties]\n{head}", [], "merge_method must be a name such as ties, got ['ties']"),
    ("merge_method: ties\nparameters: [1]\n{head}", [],
     "parameters must be a mapping such as {alpha: 0.7}, got [1]"),
    ("merge_method: average\nbase_model: {base}\nmodels: [{{model: {model}, parameters: "
     "{{weight: -1}}}}]\n", [], "base_weight and the models' weights sum to 0"),
    ("slices:\n  - sources:\n      - model: {base}\n        layer_range: 2\n"
     "merge_method: task_arithmetic\nbase_model: {base}\n", [],
     "slices[0].sources[0].layer_range must be [first, end], got 2"),
])
def test_a_recipe_of_the_wrong_shape_is_one_line_exit_2(pair, tmp_path, capsys, body, extra,
                                                        message):
    from l2s_kit.cli import main

    base, model = pair
    f = tmp_path / "r.yaml"
    f.write_text(body.format(head=f"base_model: {base}\nmodels: [{{model: {model}}}]\n",
                             base=base, model=model))
    out = tmp_path / "out"
    assert main(["merge", str(f), "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert_nothing_left(out)


def test_a_recipe_that_is_a_folder_or_not_utf8_is_named(tmp_path, capsys):
    from l2s_kit.cli import main

    f = tmp_path / "latin.yaml"
    f.write_bytes("merge_method: ties\nname: caf\xe9\n".encode("latin-1"))
    assert main(["merge", str(f), "--out", str(tmp_path / "o")]) == 2
    assert f"{f} is not UTF-8 text (byte 28)" in capsys.readouterr().err
    assert main(["merge", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path} is a folder; give the recipe's YAML file" in capsys.readouterr().err


def test_an_output_under_a_file_or_an_unforeseen_error_is_one_line(pair, tmp_path, capsys,
                                                                   monkeypatch):
    from l2s_kit import cli

    base, model = pair
    afile = tmp_path / "afile"
    afile.write_text("mine")
    argv = ["merge", "--method", "task_arithmetic", "--base", str(base), "--model", str(model),
            "--quiet"]
    assert cli.main([*argv, "--out", str(afile / "merged")]) == 2
    err = capsys.readouterr().err
    assert f"{afile} is a file where a folder is needed" in err and "Traceback" not in err
    assert afile.read_text() == "mine"

    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_methods", boom)
    monkeypatch.delenv("L2S_DEBUG", raising=False)
    assert cli.main(["methods"]) == 2
    err = capsys.readouterr().err
    assert "error: l2s methods: ZeroDivisionError: division by zero" in err
    assert "L2S_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("L2S_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["methods"])


def test_a_schedule_filter_that_matches_no_tensor_is_refused(pair, tmp_path):
    r = recipe(*pair, alpha=[{"filter": "self_atn", "value": 0.5}, {"value": 0.2}])
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert "parameters.alpha: the filter 'self_atn' occurs in no tensor name" in msg
    ok = recipe(*pair, alpha=[{"filter": "self_attn", "value": 0.5}, {"value": 0.2}])
    merge(ok, tmp_path / "ok", progress=False)


@pytest.mark.parametrize("how", ["same", "slash", "dotdot", "symlink", "hardlink"])
def test_a_model_that_is_the_base_is_refused_however_it_is_reached(pair, tmp_path, how):
    import os

    base, model = pair
    if how == "same":
        other = str(base)
    elif how == "slash":
        other = str(base) + "/"
    elif how == "dotdot":
        other = str(base / ".." / base.name)
    elif how == "symlink":
        (tmp_path / "link").symlink_to(base, target_is_directory=True)
        other = str(tmp_path / "link")
    else:
        copy = tmp_path / "copy"
        copy.mkdir()
        for f in base.iterdir():
            if f.is_file():
                (os.link if f.suffix == ".safetensors" else shutil.copy)(f, copy / f.name)
        other = str(copy)
    r = {"merge_method": "task_arithmetic", "base_model": str(base), "models": [{"model": other}]}
    msg = merge_fails(RecipeError, r, tmp_path / "out")
    assert ("is the base_model" in msg and "give System 2's folder" in msg) or \
        ("every model is the base_model" in msg and how == "same"), msg
