"""One typed specification from every face: the same study built from the command line, a YAML
file, the study notebook's parameters and Python keywords is one equal StudySpec, checked once
with errors naming the field, and its JSON form rebuilds it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from l2s_kit.cli import PAIR_FIELDS, STUDY_FIELDS, _spec, build_parser, main
from l2s_kit.study import SetupError, StudySpec

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "study.ipynb"


@pytest.fixture
def settings(tmp_path):
    """One study's settings, as a user writes them anywhere."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("- [task_arithmetic, {alpha: 0.3}]\n- [ties, {k: 0.8, alpha: 0.5}]\n")
    return {"base": str(tmp_path / "s1"), "model": str(tmp_path / "s2"),
            "benchmark": "l2s_family", "data_dir": str(tmp_path / "data"), "validation": 10,
            "max_new_tokens": "8k", "n": 2, "temperature": 0.5, "ks": "1,2",
            "grid": str(grid), "tolerance": 2.0, "workdir": str(tmp_path / "w"),
            "out": str(tmp_path / "o")}


def _from_cli(s) -> StudySpec:
    argv = ["study", "--base", s["base"], "--model", s["model"], "--benchmark", s["benchmark"],
            "--data-dir", s["data_dir"], "--validation", str(s["validation"]),
            "--max-new-tokens", s["max_new_tokens"], "--n", str(s["n"]), "--temperature",
            str(s["temperature"]), "--k", s["ks"], "--grid", s["grid"], "--tolerance",
            str(s["tolerance"]), "--workdir", s["workdir"], "--out", s["out"]]
    args = build_parser().parse_args(argv)
    return _spec(args, PAIR_FIELDS + STUDY_FIELDS, "study")


def _from_yaml(s, tmp_path) -> StudySpec:
    import yaml

    f = tmp_path / "study.yaml"
    grid = yaml.safe_load(Path(s["grid"]).read_text())  # inline in the file this time
    f.write_text(yaml.safe_dump({**s, "grid": grid, "max_new_tokens": 8192, "ks": [1, 2]}))
    return StudySpec.from_yaml(f)


def _from_notebook(s) -> StudySpec:
    """The study notebook's own cells: its parameters cell, the values papermill would inject,
    then the cell that builds the spec (its run_study caught, not run)."""
    nb = json.loads(NOTEBOOK.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    exec(code[0], namespace)  # the parameters cell: literals only
    namespace.update({**s, "k": s["ks"], "out_dir": s["out"]})
    made = []

    class study:  # what the notebook imports, with run_study caught
        StudySpec = StudySpec

        @staticmethod
        def run_study(spec):
            made.append(spec)

    namespace["study"] = study
    builds = next(c for c in code if "StudySpec(" in c)
    exec(builds, namespace)
    return made[0]


def test_every_face_builds_the_same_spec(settings, tmp_path):
    python = StudySpec(**settings)
    faces = {"command line": _from_cli(settings), "YAML": _from_yaml(settings, tmp_path),
             "notebook": _from_notebook(settings), "Python": python}
    for face, spec in faces.items():
        assert spec == python, face
    assert python.max_new_tokens == 8192 and python.ks == (1, 2) and python.validation == 10
    assert python.grid == (("task_arithmetic", {"alpha": 0.3}), ("ties", {"k": 0.8, "alpha": 0.5}))
    again = StudySpec.from_dict(json.loads(json.dumps(python.to_dict())))
    assert again == python  # the run record's form rebuilds it exactly


@pytest.mark.parametrize("change, message", [
    ({"tolerance": -1}, "tolerance: a finite number of at least 0, got -1"),
    ({"tolerance": float("nan")}, "tolerance: a finite number"),
    ({"max_new_tokens": "12k"}, "max_new_tokens='12k' is invalid; it must be a positive integer "
                                "or one of 8k, 10k"),
    ({"ks": "1,4", "n": 2, "temperature": 0.5}, "ks: 4 is larger than n (2)"),
    ({"n": 3, "temperature": 0.0, "ks": None},
     "n=3 asks for several samples per prompt, but temperature=0"),
    ({"runner": "slurm"}, "runner: 'slurm' is not one of local, ray"),
    ({"grader": "exact"}, "grader: 'exact' is not one of simple, math-verify, reference"),
    ({"validation": 0}, "validation: a number of problems (at least 1) or a file, got 0"),
    ({"grid": [["ties", {"kk": 1}]]}, "grid: grid: entry 1: ties has no parameter kk"),
    ({"grid": [["tie", {}]]}, "grid: grid: entry 1: unknown merge method 'tie'"),
])
def test_a_field_that_cannot_be_used_is_named(settings, change, message):
    with pytest.raises(SetupError, match=None) as e:
        StudySpec(**{**settings, **change})
    assert message in str(e.value)


def test_flags_that_go_together_are_checked_once_in_the_spec():
    with pytest.raises(SetupError, match=r"model \(System 2\) is not given"):
        StudySpec(base="a")
    with pytest.raises(SetupError, match="validation applies to a pair's data"):
        StudySpec(validation=10)
    with pytest.raises(SetupError, match="data given without a pair"):
        StudySpec(benchmark="math500")
    assert StudySpec(base="", model="", benchmark="").is_family  # a notebook's "" is not given


def test_an_unknown_setting_is_named_with_the_known_ones(tmp_path, capsys):
    f = tmp_path / "study.yaml"
    f.write_text("tolerence: 2\n")
    with pytest.raises(SetupError, match=r"study.yaml: unknown setting 'tolerence'; settings: "
                                         r"base, model"):
        StudySpec.from_yaml(f)
    assert main(["study", "--config", str(f), "--quiet"]) == 2
    assert "unknown setting 'tolerence'" in capsys.readouterr().err


def test_the_command_line_wins_over_its_config_file(tmp_path):
    f = tmp_path / "study.yaml"
    f.write_text("tolerance: 2\nn_per_level: 7\n")
    args = build_parser().parse_args(["study", "--config", str(f), "--tolerance", "5"])
    spec = _spec(args, PAIR_FIELDS + STUDY_FIELDS, "study", args.config)
    assert spec.tolerance == 5.0 and spec.n_per_level == 7
    assert set(spec.given) == {"tolerance", "n_per_level"}


# -- l2s eval: the same typed object from its flags and from Python ----------------------------

def test_eval_flags_and_python_build_the_same_eval_spec(tmp_path, monkeypatch):
    import l2s_kit.evaluate.spec as evalspec
    from l2s_kit.cli import main
    from l2s_kit.evaluate import EvalSpec

    seen = []
    monkeypatch.setattr(evalspec, "run_eval", lambda spec, progress: seen.append(spec) or 1 / 0)
    assert 2 == main(["eval", "model/", "--benchmark", "math500", "--data-dir", "data/", "--out",
              str(tmp_path / "r.jsonl"), "--max-new-tokens", "8k", "--n", "4",
              "--temperature", "0.6", "--k", "1,4", "--grader", "reference"])  # stopped
    python = EvalSpec.from_options(model="model/", benchmarks=["math500"], data_dir="data/",
                                   out=tmp_path / "r.jsonl", max_new_tokens=8192, n=4,
                                   temperature=0.6, ks=[1, 4], grader="reference")
    assert seen == [python]
    spec = seen[0]
    # the data's defaults settled once: the template, its stop strings, the grader's extractor
    assert spec.prompt == "qwen25-math-cot"
    assert spec.settings.stop == ("<|im_end|>", "<|endoftext|>")
    assert spec.settings.max_new_tokens == 8192 and spec.settings.n == 4
    assert spec.grader.extractor.__name__ == "extract_labelled"
    assert spec.to_dict()["settings"]["max_new_tokens"] == 8192
    assert spec.to_dict()["grader"] == {"name": "reference", "timeout": 5.0}


def test_eval_spec_takes_the_family_format_and_a_rows_file_the_simple_grader(tmp_path):
    from l2s_kit.evaluate import FAMILY_SETTINGS, EvalSpec, extract_family

    family = EvalSpec.from_options(model="m", out=tmp_path / "r.jsonl", benchmarks="l2s_family",
                                   data_dir=tmp_path)
    assert family.own_format and family.prompt is None
    assert family.settings.max_new_tokens == FAMILY_SETTINGS.max_new_tokens
    assert family.grader.extractor is extract_family
    rows = EvalSpec.from_options(model="m", out=tmp_path / "r.jsonl", data=tmp_path / "x.jsonl")
    assert rows.grader.name == "simple" and rows.settings.stop == ()


@pytest.mark.parametrize("options, message", [
    ({}, "either --data"),
    ({"benchmarks": "math500"}, "--data-dir"),
    ({"data": "x.jsonl", "ks": [8]}, "--k 8 is larger than --n 1"),
    ({"data": "x.jsonl", "max_new_tokens": "lots"}, "max_new_tokens"),
    ({"data": "x.jsonl", "top_k": 5}, "'top_k'"),
    ({"benchmarks": "l2s_family", "data_dir": "d", "prompt": "chat"}, "drop --prompt chat"),
])
def test_eval_options_that_cannot_be_used_are_named(options, message):
    from l2s_kit.errors import L2SError
    from l2s_kit.evaluate import EvalSpec

    with pytest.raises(L2SError, match=re.escape(message)):
        EvalSpec.from_options(model="m", out="r.jsonl", **options)
