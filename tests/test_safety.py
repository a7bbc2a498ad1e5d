"""Nothing the user owns is deleted or mixed: outputs apart from inputs whatever the flags, an
output that appears meanwhile is never replaced unasked, non-finite parameters are refused."""

from __future__ import annotations

import math

import pytest

from l2s_kit.cli import main
from l2s_kit.errors import OutputExistsError, RecipeError
from l2s_kit.io import Checkpoint, weights_hash
from l2s_kit.io.shared import shown_path
from l2s_kit.merging import engine, load_recipe, merge
from l2s_kit.study.sweep import run_sweep, sweep_jobs
from l2s_kit.zoo.synthetic import make_pair


@pytest.fixture
def w(tmp_path):
    """A work folder holding base/ and model/ (a pair of the user's own), with their hashes."""
    base, model = make_pair(tmp_path / "w", "tiny", seed=3, delta_std=0.02)
    return tmp_path / "w", {p: weights_hash(Checkpoint(p)) for p in (base, model)}


def intact(hashes):
    return all(p.is_dir() and weights_hash(Checkpoint(p)) == h for p, h in hashes.items())


@pytest.mark.parametrize("out, how", [(".", "contains"), ("base", "is"),
                                      ("model/merged", "lies inside")])
def test_merge_refuses_an_output_on_an_input_even_with_overwrite(w, out, how, capsys):
    root, hashes = w
    code = main(["merge", "--method", "ta", "--base", str(root / "base"), "--model",
                 str(root / "model"), "--out", str(root / out), "--overwrite", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f" {how} the " in err and "Traceback" not in err
    assert intact(hashes)
    assert sorted(p.name for p in root.iterdir()) == ["base", "model"]


def test_tokenizer_source_is_an_input_too(w):
    root, hashes = w
    r = load_recipe({"merge_method": "ta", "base_model": str(root / "base"),
                     "models": [{"model": str(root / "model")}]})
    r.tokenizer_source = str(root)
    with pytest.raises(OutputExistsError, match="lies inside the tokenizer source"):
        merge(r, root / "merged", progress=False)
    assert intact(hashes) and not (root / "merged").exists()


def test_an_output_that_appears_meanwhile_is_not_replaced(w, tmp_path, monkeypatch):
    """Two merges into one folder: the one that finishes second fails and leaves the first's."""
    root, _ = w
    out = tmp_path / "out"
    run = engine.MergeRun.run

    def other_run_finishes_first(self, sink):
        run(self, sink)
        out.mkdir()
        (out / "from_the_other_run").write_text("kept")

    monkeypatch.setattr(engine.MergeRun, "run", other_run_finishes_first)
    with pytest.raises(OutputExistsError, match="appeared while this run was writing"):
        merge({"merge_method": "ta", "base_model": str(root / "base"),
               "models": [{"model": str(root / "model")}]}, out, progress=False)
    assert [p.name for p in out.iterdir()] == ["from_the_other_run"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries


@pytest.mark.parametrize("method, param", [("lore", "tau"), ("ties", "k"), ("twin", "lam"),
                                           ("task_arithmetic", "alpha")])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_parameters_are_refused_by_name(w, method, param, value):
    root, _ = w
    with pytest.raises(RecipeError, match=f"parameter '{param}' must be a finite number"):
        load_recipe({"merge_method": method, "base_model": str(root / "base"),
                     "models": [{"model": str(root / "model")}], "parameters": {param: value}})


def test_a_sweep_workdir_inside_a_checkpoint_is_refused(w):
    root, hashes = w
    jobs = sweep_jobs(models={"system2": str(root / "model")})
    with pytest.raises(OutputExistsError, match="lies inside the model of job system2"):
        run_sweep(jobs, {"d": [{"id": "1", "prompt": "Q", "gold": "1"}]}, root / "model" / "runs",
                  progress=False)
    assert intact(hashes) and not (root / "model" / "runs").exists()


def test_a_merge_without_tokenizer_says_so_and_eval_refuses_it(tmp_path, capsys):
    base, model = make_pair(tmp_path / "p", "tiny", seed=4, tokenizer=False)
    out = tmp_path / "merged"
    assert main(["merge", "--method", "ta", "--base", str(base), "--model", str(model), "--out",
                 str(out), "--quiet"]) == 0
    assert "note: no tokenizer files found in" in capsys.readouterr().err
    assert "no tokenizer files found in" in (out / "README.md").read_text()
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "1", "prompt": "Q", "gold": "1"}\n')
    code = main(["eval", str(out), "--data", str(rows), "--out", str(tmp_path / "r.jsonl"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"{out}: no tokenizer files" in err and "Traceback" not in err
    assert not (tmp_path / "r.jsonl").exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_runs_temporary_is_removed_by_the_next_run(w, tmp_path, capsys):
    root, _ = w
    out = tmp_path / "out"
    stale = tmp_path / f".out.tmp-{_dead_pid()}-x1y2"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 3 * 2**20)
    live = tmp_path / f".out.tmp-{__import__('os').getppid()}-a1b2"  # a live process's
    live.mkdir()
    merge({"merge_method": "ta", "base_model": str(root / "base"),
           "models": [{"model": str(root / "model")}]}, out, progress=False)
    assert not stale.exists() and live.exists() and out.is_dir()
    assert f"removed {stale} (3.0 MiB)" in capsys.readouterr().err


def test_sigterm_cleans_up_as_ctrl_c_does(w, tmp_path):
    import subprocess
    import sys

    root, _ = w
    out = tmp_path / "out"
    code = f"""
import os, signal, sys
from l2s_kit.cli import main
from l2s_kit.merging import engine
def killed(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
engine.MergeRun._merge_block = killed
sys.exit(main(["merge", "--method", "ta", "--base", {str(root / "base")!r}, "--model",
               {str(root / "model")!r}, "--out", {str(out)!r}, "--quiet"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted; no partial output was left behind" in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    assert not out.exists()


@pytest.mark.parametrize("params, message", [
    ({"alphas": [0.1]}, "'alphas' is declared only by hyperparameter_sensitivity, which is not "
                        "being run"),
    ({"n_per_level": "x"}, "'n_per_level' of notebook 'merge_explorer' must be of type int"),
    ({"alpha": True}, "'alpha' of notebook 'merge_explorer' must be of type float"),
])
def test_notebook_parameters_are_checked_before_anything_runs(params, message, tmp_path):
    from l2s_kit.notebooks import NotebookError, run_notebooks

    with pytest.raises(NotebookError, match=message):
        run_notebooks(["merge_explorer"], params, out=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_shared_parameters_file_may_hold_other_notebooks_parameters():
    import yaml

    from l2s_kit.notebooks.run import _per_notebook, find_notebooks, notebook_parameters

    found = find_notebooks()
    declared = {n: notebook_parameters(p) for n, p in found.items()}
    smoke = yaml.safe_load(open("notebooks/params/smoke.yaml"))
    got = _per_notebook(["merge_explorer"], declared, smoke)["merge_explorer"]
    assert set(got) <= set(declared["merge_explorer"]) and got


def _rows(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("data, message", [
    (b"", "holds no rows"),
    (b'{"id": "1", "prompt": null, "gold": "1"}\n', "line 1: field 'prompt' must be a non-empty"),
    (b'{"id": "1", "prompt": "  ", "gold": "1"}\n', "line 1: field 'prompt' must be a non-empty"),
    (b'{"id": "1", "prompt": "Q\xff", "gold": "1"}\n', "not UTF-8 text (byte 24"),
])
def test_bad_data_files_are_named_with_exit_2(w, tmp_path, capsys, data, message):
    root, _ = w
    rows = _rows(tmp_path, "rows.jsonl", data)
    code = main(["eval", str(root / "base"), "--data", str(rows), "--out",
                 str(tmp_path / "r.jsonl"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {rows}") and message in err
    assert "Traceback" not in err and not (tmp_path / "r.jsonl").exists()


def test_eval_out_that_is_a_folder(w, tmp_path, capsys):
    root, _ = w
    rows = _rows(tmp_path, "rows.jsonl", b'{"id": "1", "prompt": "Q", "gold": "1"}\n')
    (tmp_path / "outdir").mkdir()
    assert main(["eval", str(root / "base"), "--data", str(rows), "--out",
                 str(tmp_path / "outdir"), "--quiet"]) == 2
    assert "outdir is a folder" in capsys.readouterr().err


def test_config_not_an_object_and_truncated_weights_are_named(w, tmp_path, capsys):
    import shutil

    root, hashes = w
    for name, damage in [("cfg", lambda d: (d / "config.json").write_text("[1, 2]")),
                         ("cut", lambda d: (d / "model.safetensors").write_bytes(
                             (d / "model.safetensors").read_bytes()[:1000]))]:
        bad = tmp_path / name
        shutil.copytree(root / "base", bad)
        damage(bad)
        code = main(["merge", "--method", "ta", "--base", str(bad), "--model",
                     str(root / "model"), "--out", str(tmp_path / f"out-{name}"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert (f"{bad}/config.json: expected a JSON object" in err if name == "cfg" else
                f"{bad}/model.safetensors: not a readable safetensors file" in err)
        assert not (tmp_path / f"out-{name}").exists()


def test_spectrum_refuses_a_bad_out_extension_before_the_work(w, tmp_path, capsys, monkeypatch):
    from l2s_kit.analysis import spectrum

    root, _ = w
    monkeypatch.setattr(spectrum, "spectrum_values", lambda *a, **k: pytest.fail("work started"))
    assert main(["spectrum", str(root / "base"), str(root / "model"), "--out",
                 str(tmp_path / "t.txt"), "--quiet"]) == 2
    assert "save spectrum tables as .csv or .parquet" in capsys.readouterr().err


def test_rewriting_weights_in_place_changes_the_checkpoint_key(w):
    from l2s_kit.merging.calibration.cache import checkpoint_key

    root, _ = w
    f = root / "base" / "model.safetensors"
    before = checkpoint_key(root / "base")
    assert checkpoint_key(root / "base") == before  # remembered, not re-read
    data = bytearray(f.read_bytes())
    data[-64:] = bytes(64)  # the last weight bytes; header and size unchanged
    f.write_bytes(bytes(data))
    assert checkpoint_key(root / "base") != before


def test_a_damaged_cache_entry_is_computed_again_naming_the_file(w):
    import torch

    from l2s_kit.merging.calibration.cache import cache_file, cached_tensors

    root, _ = w
    calls = []

    def compute():
        calls.append(1)
        return {"a": torch.arange(6.0)}

    args = ("test_stat", [root / "base"], {"n": 1})
    assert torch.equal(cached_tensors(*args, compute)["a"], torch.arange(6.0))
    assert torch.equal(cached_tensors(*args, compute)["a"], torch.arange(6.0)) and calls == [1]
    f = cache_file(*args[:3])
    raw = bytearray(f.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf: same size, valid file
    f.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=f"{f} is damaged.*checksum"):
        got = cached_tensors(*args, compute)
    assert torch.equal(got["a"], torch.arange(6.0)) and calls == [1, 1]
    f.write_bytes(f.read_bytes()[:20])  # truncated
    with pytest.warns(UserWarning, match="cannot be read"):
        assert torch.equal(cached_tensors(*args, compute)["a"], torch.arange(6.0))


# ---- resumed evaluations never mix runs -------------------------------------------------------

class _Echo:
    """A backend that answers every prompt with its last word (no model needed)."""

    name = "echo"

    def generate(self, prompts, settings):
        from l2s_kit.evaluate import Generation

        return [[Generation(f"The answer is \\boxed{{{p.split()[-1]}}}", 1, "stop")] * settings.n
                for p in prompts]


ROWS = [{"id": i, "prompt": f"say {i}", "gold": str(i)} for i in range(4)]


def test_a_resume_with_other_weights_grader_or_rows_is_refused(w, tmp_path):
    import shutil

    from l2s_kit.evaluate import ResponsesError, evaluate

    root, _ = w
    out = tmp_path / "r.jsonl"
    # two checkpoints in folders of one name: the second does not resume the first's file
    a, b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    shutil.copytree(root / "base", a)
    shutil.copytree(root / "model", b)
    first = evaluate(a, ROWS, out, backend=_Echo(), progress=False)
    assert first["correct"].all() and first["weights_hash"].nunique() == 1
    assert first["weights_hash"].iloc[0] == weights_hash(Checkpoint(a))
    again = evaluate(a, ROWS, out, backend=_Echo(), progress=False)  # same weights: resumed
    assert len(again) == 4 and len(out.read_text().splitlines()) == 4
    with pytest.raises(ResponsesError, match="with other weights .*same name"):
        evaluate(b, ROWS, out, backend=_Echo(), progress=False)
    # another grader
    def strict(answer, gold):
        return answer == gold

    with pytest.raises(ResponsesError, match="graded by 'grade', now 'strict'"):
        evaluate(a, ROWS, out, backend=_Echo(), grader=strict, progress=False)
    # an edited row under its old id
    edited = [dict(r) for r in ROWS]
    edited[2]["gold"] = "7"
    with pytest.raises(ResponsesError, match="row 2 .*another prompt or gold"):
        evaluate(a, edited, out, backend=_Echo(), progress=False)
    assert len(out.read_text().splitlines()) == 4  # nothing appended by the refused runs


def test_two_evaluations_cannot_write_one_file_at_once(tmp_path):
    from l2s_kit.evaluate import ResponsesError, evaluate
    from l2s_kit.io import exclusive

    out = tmp_path / "r.jsonl"
    with exclusive(out, "evaluation"):  # another evaluation holds the file
        with pytest.raises(ResponsesError, match="another evaluation is writing this now"):
            evaluate(None, ROWS, out, backend=_Echo(), weights_hash="x", progress=False)
    assert not out.exists()
    df = evaluate(None, ROWS, out, backend=_Echo(), weights_hash="x", progress=False)
    assert len(df) == 4  # the lock is released with its holder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]  # and no lock file is left
    # a symlink to the file is the same file: it takes the same lock
    (tmp_path / "link.jsonl").symlink_to(out)
    with exclusive(out, "evaluation"):
        with pytest.raises(ResponsesError, match="another evaluation is writing this now"):
            evaluate(None, ROWS, tmp_path / "link.jsonl", backend=_Echo(), weights_hash="x",
                     progress=False)


def _own_system2(w, tmp_path):
    """A copy of the pair's System 2 (to edit) and a task-arithmetic recipe merging it."""
    import shutil

    root, _ = w
    s2 = tmp_path / "s2"
    shutil.copytree(root / "model", s2)
    return s2, load_recipe({"merge_method": "task_arithmetic", "base_model": str(root / "base"),
                            "models": [{"model": str(s2)}], "parameters": {"alpha": 0.5}})


def test_a_changed_input_gives_a_new_merge_not_a_stale_one(w, tmp_path):

    import torch
    from safetensors.torch import load_file, save_file

    from l2s_kit.merging import merge_once

    s2, recipe = _own_system2(w, tmp_path)
    first = merge_once(recipe, tmp_path / "merges", "ta")
    assert merge_once(recipe, tmp_path / "merges", "ta") == first  # reused
    f = s2 / "model.safetensors"
    state = load_file(f)
    name = sorted(state)[0]
    state[name] = torch.zeros_like(state[name])  # System 2 replaced in place, same folder
    save_file(state, f, metadata={"format": "pt"})
    second = merge_once(recipe, tmp_path / "merges", "ta")
    assert second != first  # the same recipe, other inputs: a new merge
    assert weights_hash(Checkpoint(second)) != weights_hash(Checkpoint(first))


def test_prompts_longer_than_the_context_are_warned_about(family):
    from l2s_kit.evaluate import GenerationSettings, TransformersBackend

    b = TransformersBackend(family.system2, progress=False)
    prompts = [r["prompt"] for r in family.rows("test", 1)]
    with pytest.warns(UserWarning, match=r"5 of 5 prompts .* exceed the model's context of 128"):
        b.generate(prompts, GenerationSettings(max_new_tokens=120))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b.generate(prompts, GenerationSettings(max_new_tokens=8))  # within the context: silent


@pytest.mark.parametrize("name", ["../../victim", "..", ".", "team/alice", "/tmp/x", ".hidden"])
def test_a_notebook_run_name_is_one_folder_inside_out(tmp_path, name, capsys):
    """--run NAME can never reach, replace or compare against anything outside out/<notebook>/."""
    from l2s_kit.cli import main

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    out = tmp_path / "a" / "b"
    (out / "study" / "old-run").mkdir(parents=True)
    code = main(["notebooks", "run", "study", "--out", str(out), "--run", name, "--overwrite",
                 "--no-png", "--quiet"])
    assert code == 2
    assert "a run name is one folder name" in capsys.readouterr().err
    assert (victim / "keep.txt").read_text() == "mine" and (out / "study" / "old-run").is_dir()


def test_check_csv_never_replaces_an_input_or_a_users_file(tiny_pair, tmp_path, capsys):
    from l2s_kit.cli import main

    base, model = tiny_pair
    config = (model / "config.json").read_bytes()
    assert main(["check", str(base), str(model), "--csv", str(model / "config.json")]) == 2
    assert main(["check", str(base), str(model), "--csv", str(model / "config.json"),
                 "--overwrite"]) == 2  # an input's file: never, whatever the flags
    assert (model / "config.json").read_bytes() == config
    mine = tmp_path / "mine.csv"
    mine.write_text("my notes\n")
    assert main(["check", str(base), str(model), "--csv", str(mine)]) == 2
    assert mine.read_text() == "my notes\n"
    assert "pass --overwrite" in capsys.readouterr().err
    # a file the kit did not write: never, even with --overwrite
    assert main(["check", str(base), str(model), "--csv", str(mine), "--overwrite"]) == 2
    assert mine.read_text() == "my notes\n"
    assert "was not written by the kit" in capsys.readouterr().err
    ours = tmp_path / "ours.csv"  # its own earlier table: replaced with --overwrite
    assert main(["check", str(base), str(model), "--csv", str(ours)]) in (0, 1)
    ours.write_text(ours.read_text())  # the same bytes (a copy) are still the kit's
    assert main(["check", str(base), str(model), "--csv", str(ours), "--overwrite"]) in (0, 1)
    assert ours.read_text().startswith("model,")


def test_eval_never_appends_responses_to_its_input_data(tmp_path, capsys):
    import json

    from l2s_kit.cli import main

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "Q", "gold": "1"}) + "\n")
    before = data.read_bytes()
    assert main(["eval", str(tmp_path / "nomodel"), "--data", str(data), "--out", str(data)]) == 2
    assert data.read_bytes() == before
    assert "choose an output folder apart from every input" in capsys.readouterr().err


def _tiny_study(tmp_path, out, **kw):
    from l2s_kit.study import run_study

    return run_study(tmp_path / "runs", out, n_per_level=2, progress=False,
                     grid=[("task_arithmetic", {"alpha": 0.3})], **kw)


def test_a_study_never_writes_over_the_users_files_nor_beside_an_earlier_study(
        tmp_path, monkeypatch, capsys):
    """An --out holding the user's own files is refused before any work (exit 2), with or
    without --overwrite; a study into an earlier study's folder replaces it as a whole, so no
    figure of the earlier run is left beside the new tables."""
    from l2s_kit.analysis import plots

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("my own table\n")
    assert main(["study", "--n-per-level", "2", "--workdir", str(tmp_path / "runs"), "--out",
                 str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds 1 file the kit did not write (summary.csv)" in err and "new folder" in err
    assert (out / "summary.csv").read_text() == "my own table\n"
    assert not (tmp_path / "runs").exists()  # refused before any work

    def fake_png(fig, path, tries=None):  # a PNG without kaleido: what the first run left
        path.write_bytes(b"png")

    monkeypatch.setattr(plots, "export_png", fake_png)
    again = tmp_path / "again"
    first = _tiny_study(tmp_path, again, png=True)
    assert (again / "by_level.png").is_file() and first.out == again
    second = _tiny_study(tmp_path, again)  # an earlier study's folder: replaced without asking
    assert not list(again.glob("*.png")), "the first run's PNGs were left beside the new tables"
    assert {p.name for p in second.files} == {p.name for p in again.iterdir()} - {
        "run.json", "metrics.json", ".l2s-output.json", "plotly.min.js"}
    assert all(p.parent == again for p in second.files)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries

    with pytest.raises(OutputExistsError, match="did not write"):  # asked: still refused
        _tiny_study(tmp_path, out, overwrite=True)
    assert (out / "summary.csv").read_text() == "my own table\n"


def test_two_studies_into_one_folder_at_once_are_refused(tmp_path):
    from l2s_kit.io import exclusive

    out = tmp_path / "out"
    with exclusive(out, "study"):  # another study is running into out
        with pytest.raises(OutputExistsError, match="another study is writing this now"):
            _tiny_study(tmp_path, out)
    assert not out.exists()


def test_tune_out_holds_only_the_searchs_tables(tmp_path):
    import pandas as pd

    from l2s_kit.study.tune import TuneResult, write

    r = TuneResult("ties", "shortest", 3.0, pd.DataFrame({"trial": [0]}), pd.DataFrame(),
                   pd.DataFrame(), {"accuracy": 1.0, "mean_tokens": 2.0})
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"the kit did not write \(notes.txt\)"):
        write(r, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "notes.txt").unlink()
    assert [p.name for p in write(r, out)] == ["trials.csv", "chosen.csv", "test.csv"]
    write(r, out)  # its own earlier tables: replaced
    assert pd.read_csv(out / "trials.csv")["trial"].tolist() == [0]


def test_replacing_an_output_reached_by_a_symlink_leaves_no_old_link(w, tmp_path):
    """--overwrite of an output that is a symbolic link replaces the link; what it pointed at is
    left as it is, and no '.old' entry stays behind."""
    folder, _ = w
    recipe = {"merge_method": "task_arithmetic", "base_model": str(folder / "base"),
              "models": [{"model": str(folder / "model")}], "parameters": {"alpha": 0.5}}
    merge(recipe, tmp_path / "first", progress=False)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "first")
    merge(recipe, link, overwrite=True, progress=False)
    assert link.is_dir() and not link.is_symlink() and (tmp_path / "first" / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _recipe(folder):
    return {"merge_method": "task_arithmetic", "base_model": str(folder / "base"),
            "models": [{"model": str(folder / "model")}], "parameters": {"alpha": 0.5}}


@pytest.mark.parametrize("how", ["rewritten", "truncated"])
def test_an_input_changed_during_a_merge_stops_it_naming_the_file(w, tmp_path, monkeypatch, how):
    """A shard rewritten or truncated while the merge reads it: exit 2 naming the file, no output
    (it gave exit 0 and weights matching neither version, or a bus error)."""
    import os

    from l2s_kit.io.checkpoint import Checkpoint as C

    folder, hashes = w
    shard = folder / "model" / "model.safetensors"
    original = C.read
    calls = []

    def read(self, name, rows=None):
        if self.path.name == "model":
            calls.append(name)
        if len(calls) == 2 and self.path.name == "model":
            data = shard.read_bytes()
            if how == "truncated":
                with open(shard, "r+b") as f:
                    f.truncate(len(data) // 2)
            else:
                tmp = shard.with_suffix(".new")
                tmp.write_bytes(data)
                os.replace(tmp, shard)  # the same bytes, another file: as a re-download does
        return original(self, name, rows)

    monkeypatch.setattr(C, "read", read)
    (tmp_path / "r.yaml").write_text(__import__("yaml").safe_dump(_recipe(folder)))
    assert main(["merge", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_file_truncated_inside_a_read_is_an_error_not_a_bus_error(w, monkeypatch):
    """Reads use pread, not a memory map: a shard cut short under a read says so."""
    from l2s_kit.errors import CheckpointError
    from l2s_kit.io import checkpoint

    folder, _ = w
    ck = Checkpoint(folder / "model")
    name = max(ck.names, key=lambda n: ck.info(n).numel)
    full = ck.read(name)
    assert torch_equal(ck.read(name, rows=slice(1, 3)), full[1:3])
    monkeypatch.setattr(ck, "_check", lambda file: None)  # truncated after the check
    start = ck._where[name][0]
    with open(folder / "model" / "model.safetensors", "r+b") as f:
        f.truncate(start + 8)
    with pytest.raises(CheckpointError, match=r"model.safetensors ends inside tensor .*truncated"):
        ck.read(name)
    assert checkpoint.Checkpoint is Checkpoint


def torch_equal(a, b):
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("index, message", [
    ("[1, 2]", "has no 'weight_map' object"),
    ('{"weight_map": []}', "has no 'weight_map' object"),
    ('{"weight_map": {"x": 3}}', "tensor x is mapped to 3"),
    ('{"weight_map": {"x": "../base/model.safetensors"}}', "mapped to '../base/model.safetensors'"),
    ("{", "is not valid JSON"),
    (b"\xff\xfe{}", "is not valid JSON"),
])
def test_a_malformed_index_is_named_before_any_work(w, tmp_path, capsys, index, message):
    folder, hashes = w
    p = folder / "model" / "model.safetensors.index.json"
    p.write_bytes(index if isinstance(index, bytes) else index.encode())
    (tmp_path / "r.yaml").write_text(__import__("yaml").safe_dump(_recipe(folder)))
    assert main(["merge", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "model.safetensors.index.json" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_file_size_limit_is_one_line_with_exit_2_and_no_output(w, tmp_path):
    """Past ``ulimit -f`` a write fails (EFBIG) and is said in one line; the process is not
    killed by SIGXFSZ without a word (exit 153) and leaves no temporary."""
    import resource
    import subprocess
    import sys

    import yaml

    folder, _ = w
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_recipe(folder)))
    out = tmp_path / "o" / "merged"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    p = subprocess.run([sys.executable, "-m", "l2s_kit.cli", "merge", str(tmp_path / "r.yaml"),
                        "--out", str(out), "--quiet"], capture_output=True, text=True,
                       preexec_fn=limit, env={**__import__("os").environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert p.returncode == 2, p.stderr
    assert "File too large" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not out.exists() and list((tmp_path / "o").iterdir()) == []


def test_an_output_without_room_is_refused_before_any_work(w, tmp_path, monkeypatch, capsys):
    import collections
    import shutil

    folder, _ = w
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    (tmp_path / "r.yaml").write_text(__import__("yaml").safe_dump(_recipe(folder)))
    assert main(["merge", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs about 0.00 GiB" in err and "has 0.00 GiB free" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "w"]


def _edit_config(folder, **changes):
    import json

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_an_edited_config_gives_a_new_merge_and_is_not_resumed(w, tmp_path):
    """System 2's config.json edited (eos_token_id): a new merge, not the stale one; responses
    generated before the edit are not resumed as if they were the same model's."""

    from l2s_kit.evaluate import ResponsesError, evaluate
    from l2s_kit.merging import merge_once

    s2, recipe = _own_system2(w, tmp_path)
    first = merge_once(recipe, tmp_path / "merges", "ta")
    out = tmp_path / "r.jsonl"
    evaluate(s2, ROWS, out, backend=_Echo(), progress=False)
    _edit_config(s2, eos_token_id=7)
    second = merge_once(recipe, tmp_path / "merges", "ta")
    assert second != first
    with pytest.raises(ResponsesError, match="config or tokenizer files were others"):
        evaluate(s2, ROWS, out, backend=_Echo(), progress=False)


def test_a_resumed_evaluation_reports_the_levels_the_data_has_now(tmp_path):
    from l2s_kit.evaluate import evaluate

    out = tmp_path / "r.jsonl"
    rows = [{**r, "level": 1} for r in ROWS]
    assert evaluate(None, rows, out, backend=_Echo(), weights_hash="x", progress=False)["level"] \
        .tolist() == [1] * 4
    rows[2]["level"] = 3  # the data's level corrected, then the evaluation resumed
    df = evaluate(None, rows, out, backend=_Echo(), weights_hash="x", progress=False)
    assert df.set_index("id")["level"].to_dict() == {0: 1, 1: 1, 2: 3, 3: 1}


def test_a_study_rerun_with_other_settings_evaluates_anew_and_reuses_the_merges(tmp_path):
    """Another --max-new-tokens (or sampling) in the same workdir is a new evaluation, not an
    error telling the user to rename the model; the merges are reused, the earlier responses
    stay."""
    first = _tiny_study(tmp_path, tmp_path / "o1")
    files = set(first.models["responses"])
    second = _tiny_study(tmp_path, tmp_path / "o2", n=2, temperature=0.7, ks=[1, 2])
    assert second.models["weights_hash"].tolist() == first.models["weights_hash"].tolist()
    assert not files & set(second.models["responses"])
    assert all(__import__("os").path.exists(f) for f in files)
    third = _tiny_study(tmp_path, tmp_path / "o3")  # the first settings again: all reused
    assert list(third.models["responses"]) == list(first.models["responses"])
    assert third.summary["accuracy"].tolist() == first.summary["accuracy"].tolist()


@pytest.mark.parametrize("configs", [(False, False), (False, True), (None, None)])
def test_the_cards_note_on_tied_embeddings_agrees_with_its_config(tmp_path, configs):
    """Inputs storing no head are tied whatever their config says: the merged config, the stored
    tensors and the card's notes tell one story (a config saying 'untied' with no head stored
    gave an untied output and a note calling the inputs tied)."""
    import json

    base, model = make_pair(tmp_path / "p", "tiny", seed=1, base_tied=True, model_tied=True)
    for folder, tie in zip((base, model), configs):
        config = json.loads((folder / "config.json").read_text())
        if tie is None:
            config.pop("tie_word_embeddings", None)
        else:
            config["tie_word_embeddings"] = tie
        (folder / "config.json").write_text(json.dumps(config))
    assert "lm_head.weight" not in Checkpoint(base) and "lm_head.weight" not in Checkpoint(model)
    out = merge({"merge_method": "task_arithmetic", "base_model": str(base),
                 "models": [{"model": str(model)}], "parameters": {"alpha": 0.5}},
                tmp_path / "out", progress=False)
    config = json.loads((out / "config.json").read_text())
    card = (out / "README.md").read_text()
    assert config["tie_word_embeddings"] is True and "lm_head.weight" not in Checkpoint(out)
    assert "untied" not in card.replace("tie_word_embeddings = false", "")
    says_false = [f for f, t in zip((base, model), configs) if t is False]
    for f in says_false:
        assert (f"{shown_path(f)}'s config says tie_word_embeddings = false but it stores no "
                "lm_head.weight") in card


@pytest.mark.parametrize("command", ["study", "tune"])
def test_an_out_under_a_file_is_one_line_before_any_work(tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    argv = [command, *(["--method", "ties", "--trials", "1"] if command == "tune" else []), "--n-per-level",
            "2", "--workdir", str(tmp_path / "runs"), "--out", str(afile / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{afile} is a file where a folder is needed" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and afile.read_text() == "mine"
    assert not (tmp_path / "runs").exists()
