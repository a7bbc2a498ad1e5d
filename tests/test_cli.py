"""The ``l2s`` command line: help, ``methods``, ``merge`` (recipe file and preset), errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from l2s_kit.cli import main
from l2s_kit.io import Checkpoint, weights_hash
from l2s_kit.merging import PRESETS, list_methods, read_merge_info
from l2s_kit.zoo.synthetic import make_pair

L2S = Path(sys.executable).with_name("l2s")  # the console script of this environment
SUBCOMMANDS = ("merge", "methods", "eval", "spectrum", "study", "zoo", "notebooks")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return make_pair(tmp_path_factory.mktemp("cli") / "pair", "tiny", seed=0, shard_size=20_000,
                     extra_rows=0, base_tied=None, model_tied=None)


def run_l2s(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(L2S), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def listed_subcommands(help_text: str) -> set[str]:
    """Names listed in an argparse help section as indented `name   description` rows (a long
    name has its description on the next line)."""
    names = set()
    for m in re.finditer(r"^ {2,}(\w+)(?: {2,}|\n {6,})\S", help_text, flags=re.M):
        names.add(m.group(1))
    return names


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: l2s")
    assert set(SUBCOMMANDS) <= listed_subcommands(out)
    for cmd in SUBCOMMANDS:
        assert f"l2s {cmd}" in out  # the examples show each one


def test_help_via_console_script():
    assert L2S.exists(), f"console script {L2S} is not installed (pip install -e .)"
    proc = run_l2s("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: l2s")
    assert set(SUBCOMMANDS) <= listed_subcommands(proc.stdout)


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert set(SUBCOMMANDS) <= listed_subcommands(capsys.readouterr().out)


def test_methods_lists_methods_parameters_and_presets(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    methods = list_methods()
    assert {m.name for m in methods} >= {"average", "task_arithmetic", "ties", "dare", "dare_ties"}
    for m in methods:
        assert any(line.startswith(m.name) for line in lines), m.name
        for p in m.params.values():
            assert f"    {p.name}: {p.type.__name__} = {p.default!r}" in out, (m.name, p.name)
    for name, preset in PRESETS.items():
        assert f"  {name}: {preset['merge_method']} {preset['parameters']}" in lines
    assert "  ties-7b: ties {'k': 0.8, 'alpha': 1.0, 'trim': 'reference'}" in lines


def test_merge_recipe_prints_weights_hash(pair, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "ties", "base_model": str(pair[0]), "models": [{"model": str(pair[1])}],
        "parameters": {"k": 0.5, "alpha": 1.0},
    }))
    out = tmp_path / "merged"
    assert main(["merge", str(recipe), "--out", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    info = read_merge_info(out)
    m = re.search(r"^weights hash ([0-9a-f]{64})$", stdout, flags=re.M)
    assert m, stdout
    assert m.group(1) == info["weights_hash"]
    assert weights_hash(Checkpoint(out)) == info["weights_hash"]
    assert f"merged ties -> {out}" in stdout
    assert info["recipe"]["parameters"]["k"] == 0.5


def test_merge_preset_with_param_override(pair, tmp_path, capsys):
    out = tmp_path / "merged"
    rc = main(["merge", "--preset", "ties-7b", "--base", str(pair[0]), "--model", str(pair[1]),
               "--out", str(out), "--param", "alpha=0.5", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    saved = yaml.safe_load((out / "l2s_recipe.yaml").read_text())
    assert saved["merge_method"] == "ties"
    assert saved["parameters"]["alpha"] == 0.5
    assert saved["parameters"]["k"] == 0.8
    assert saved["parameters"]["trim"] == "reference"
    assert read_merge_info(out)["recipe"]["parameters"]["alpha"] == 0.5
    assert "note: preset ties-7b" in capsys.readouterr().err


def test_bad_recipe_exits_2_with_message(pair, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"merge_method: tie\nbase_model: {pair[0]}\nmodels:\n  - model: {pair[1]}\n")
    out = tmp_path / "merged"
    assert main(["merge", str(recipe), "--out", str(out), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: unknown merge method 'tie'; available:")
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not out.exists()


def test_bad_recipe_exit_code_via_console_script(pair, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"merge_method: ties\nbase_model: {pair[0]}\nmodels:\n  - model: {pair[1]}\n"
                      "parameters: {k: high}\n")
    proc = run_l2s("merge", str(recipe), "--out", str(tmp_path / "merged"), "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert f"{recipe}: parameters: parameter 'k' must be float, got 'high'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "merged").exists()


def test_bad_param_syntax_exits_2(pair, tmp_path, capsys):
    rc = main(["merge", "--preset", "ties-7b", "--base", str(pair[0]), "--model", str(pair[1]),
               "--out", str(tmp_path / "merged"), "--param", "alpha"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --param 'alpha': write it as NAME=VALUE")
    assert not (tmp_path / "merged").exists()


def test_merge_without_inputs_exits_2(tmp_path, capsys):
    assert main(["merge", "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err.startswith("error: give a recipe file, or --preset/--method")


def test_bad_device_exits_2_without_traceback(pair, tmp_path):
    proc = run_l2s("merge", "--method", "task_arithmetic", "--base", str(pair[0]),
                   "--model", str(pair[1]), "--out", str(tmp_path / "merged"), "--device", "gpu",
                   "--quiet")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "gpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "merged").exists()


def test_param_overrides_bring_their_own_notes_and_inner_merge(pair, tmp_path, capsys):
    base, model = pair
    lore = tmp_path / "lore.yaml"
    lore.write_text(yaml.safe_dump({"merge_method": "lore", "base_model": str(base),
                                    "models": [{"model": str(model)}],
                                    "parameters": {"alpha": 0.7}}))
    with pytest.warns(UserWarning, match="plain averaging"):
        assert main(["merge", str(lore), "--param", "alpha=0.5", "--out",
                     str(tmp_path / "avg"), "--quiet"]) == 0
    assert "note: LoRE-Merging of exactly two models" in capsys.readouterr().err
    assert "plain averaging" in (tmp_path / "avg" / "README.md").read_text()
    # a recipe file's AIM switched to another inner merge drops the old one's parameters
    aim = tmp_path / "aim.yaml"
    aim.write_text(yaml.safe_dump({"merge_method": "aim", "base_model": str(base),
                                   "models": [{"model": str(model)}],
                                   "parameters": {"inner": "ties", "k": 0.8, "alpha": 1.0}}))
    assert main(["merge", str(aim), "--param", "inner=twin", "--out", str(tmp_path / "aim"),
                 "--quiet"]) == 0
    params = read_merge_info(tmp_path / "aim")["recipe"]["parameters"]
    assert params["inner"] == "twin" and "k" not in params and params["lam"] == 0.3


@pytest.mark.parametrize("argv", [
    ["eval", "m", "--data", "d.jsonl", "--out", "o.jsonl", "--limit", "-1"],
    ["eval", "m", "--data", "d.jsonl", "--out", "o.jsonl", "--batch-size", "0"],
    ["tune", "--method", "ties", "--trials", "zero"],
    ["study", "--n-per-level", "0"],
])
def test_counts_below_one_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "is not a whole number of at least 1" in err and "Traceback" not in err
