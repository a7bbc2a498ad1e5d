"""The one deletion rule: the kit deletes or replaces only what it wrote itself. Every command
that writes is run against a folder holding a user's file and against a (scratch) home folder,
with --overwrite, and every byte there must remain; an earlier output of the kit is replaced;
every input folder is byte for byte the same after every command of the README, and no cache
appears inside one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from l2s_kit.cli import main
from l2s_kit.errors import OutputExistsError
from l2s_kit.io import claim_output, results_folder
from l2s_kit.zoo.synthetic import make_pair


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below ``folder`` (hidden ones and links included) with its bytes' hash."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "folder"
    return out


@pytest.fixture
def pair(tmp_path):
    base, model = make_pair(tmp_path / "pair", "tiny", seed=5, delta_std=0.02)
    return base, model


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A scratch home folder with a user's files in it (never the real one)."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_ed25519").write_text("secret key\n")
    (h / "thesis.tex").write_text("\\chapter{Results}\n")
    monkeypatch.setenv("HOME", str(h))
    return h


@pytest.fixture
def models_folder(tmp_path, pair):
    """A folder of other checkpoints (a user's ~/models) and a note."""
    folder = tmp_path / "models"
    make_pair(folder, "tiny", seed=6, delta_std=0.02)
    (folder / "notes.txt").write_text("which model is which\n")
    return folder


def _data(tmp_path) -> Path:
    rows = [{"id": i, "prompt": f"{i}+1=", "gold": str(i + 1)} for i in range(2)]
    f = tmp_path / "rows.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _responses(tmp_path, pair) -> Path:
    out = tmp_path / "kit-responses.jsonl"
    assert main(["eval", str(pair[1]), "--data", str(_data(tmp_path)), "--out",
                 str(out), "--max-new-tokens", "2", "--quiet"]) == 0
    return out


def _command(name: str, pair, tmp_path, target: Path, capsys) -> list[str]:
    """The command ``name`` (one that writes) aimed at ``target``; what it needs made first."""
    argv = _commands(pair, tmp_path, target)[name]()
    capsys.readouterr()  # what making its inputs printed
    return argv


def _commands(pair, tmp_path, target: Path) -> dict:
    """Each command that writes, aimed at ``target`` (made when called)."""
    base, model = map(str, pair)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"workdir": str(target), "max_new_tokens": 2,
                                 "data": {"rows": str(_data(tmp_path))}, "models": {"s2": model}}))
    t, ow, q = str(target), "--overwrite", "--quiet"  # each command's own flags, where it has them
    argv = {
        "merge": ["merge", "--method", "task_arithmetic", "--base", base, "--model", model,
                  "--out", t, ow, q],
        "study": ["study", "--n-per-level", "2", "--workdir", str(tmp_path / "runs"), "--out", t,
                  ow, q],
        "tune": ["tune", "--method", "ties", "--trials", "1", "--n-per-level", "2", "--workdir",
                 str(tmp_path / "runs"), "--out", t, ow, q],
        "sweep": ["sweep", str(sweep), q],
        "eval": ["eval", model, "--data", str(_data(tmp_path)), "--out", t, "--max-new-tokens",
                 "2", q],
        "regrade": ["regrade", "{responses}", "--out", t, "--grader", "simple", ow, q],
        "spectrum": ["spectrum", base, model, "--out", t, ow, q],
        "check --csv": ["check", base, model, "--csv", t, ow],
        "notebooks": ["notebooks", "run", "length_vs_difficulty", "--run", "r", "--out", t,
                      "--no-png", ow, q],
    }

    def made(name):
        if name == "regrade":
            return [str(_responses(tmp_path, pair)) if a == "{responses}" else a
                    for a in argv[name]]
        return argv[name]
    return {name: (lambda name=name: made(name)) for name in argv}


COMMANDS = ["merge", "study", "tune", "sweep", "eval", "regrade", "spectrum", "check --csv",
            "notebooks"]


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_touches_a_home_folder_even_with_overwrite(command, pair, home, tmp_path,
                                                               capsys):
    before = snapshot(home)
    argv = _command(command, pair, tmp_path, home, capsys)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert any(w in err for w in ("home folder", "is a folder", ".csv or .parquet")), err
    assert snapshot(home) == before


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "sweep"])
def test_no_command_replaces_a_folder_of_the_users_even_with_overwrite(command, pair, tmp_path,
                                                                       models_folder, capsys):
    target = models_folder
    if command == "notebooks":  # the run folder it would replace: <out>/<notebook>/<run>
        target = tmp_path / "nb"
        (target / "length_vs_difficulty" / "r").mkdir(parents=True)
        (target / "length_vs_difficulty" / "r" / "mine.txt").write_text("mine\n")
    before = snapshot(target)
    argv = _command(command, pair, tmp_path, target, capsys)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if command in ("merge", "study", "tune", "notebooks"):  # folder outputs name what they hold
        assert "the kit did not write" in err and ("notes.txt" in err or "mine.txt" in err), err
    assert snapshot(target) == before


def test_the_refusal_names_how_many_files_and_the_first_few(tmp_path):
    out = tmp_path / "models"
    for i in range(6):
        (out / f"m{i}").mkdir(parents=True)
        (out / f"m{i}" / "config.json").write_text("{}")
    with pytest.raises(OutputExistsError, match=r"holds 6 files the kit did not write "
                       r"\(m0/config.json, m1/config.json, m2/config.json, m3/config.json and 2 "
                       r"more\).*choose a new folder \(or an empty one\)"):
        claim_output(out, "merge", overwrite=True)


def test_a_folder_above_the_home_or_a_root_is_refused_by_name(home):
    for place, why in ((home.parent, "holds your home folder"), (Path("/"), "filesystem root")):
        with pytest.raises(OutputExistsError, match=why):
            claim_output(place, "study", overwrite=True)


def test_an_earlier_output_is_replaced_and_an_edited_one_is_not(pair, tmp_path, capsys):
    base, model = map(str, pair)
    out = tmp_path / "merged"
    argv = ["merge", "--method", "task_arithmetic", "--base", base, "--model", model, "--out",
            str(out), "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0  # its own earlier output: replaced
    (out / "README.md").write_text("my edited card\n")  # the user's now
    assert main([*argv, "--overwrite"]) == 2
    assert "README.md" in capsys.readouterr().err
    assert (out / "README.md").read_text() == "my edited card\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv[:-2], str(empty), "--quiet"]) == 0  # an empty folder: written
    assert (empty / "config.json").is_file()


def test_a_file_dropped_in_while_the_output_is_replaced_is_kept(tmp_path, monkeypatch):
    """The folder is checked again once moved aside: a file that appeared after the first check
    is put back with the folder, untouched."""
    from l2s_kit.io import atomic

    out = tmp_path / "out"
    with results_folder(out, "study") as tmp:
        (tmp / "a.csv").write_text("1\n")
    real = atomic.claim_output
    calls = []

    def late(folder, *a, **k):
        calls.append(folder)
        if len(calls) == 2:  # after the first checks: the user drops a file in
            (out / "late.txt").write_text("mine\n")
        return real(folder, *a, **k)

    monkeypatch.setattr(atomic, "claim_output", late)
    with pytest.raises(OutputExistsError, match="late.txt"):
        with results_folder(out, "study") as tmp:
            (tmp / "a.csv").write_text("2\n")
    assert (out / "late.txt").read_text() == "mine\n" and (out / "a.csv").read_text() == "1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it


def test_readme_commands_leave_every_input_unchanged_and_cache_nothing_inside(
        pair, tmp_path, monkeypatch):
    """merge, check, eval, regrade, spectrum on a pair: every input's bytes are the same after,
    and no cache (``.l2s_cache``) appears inside one, even where the kit could write there."""
    monkeypatch.delenv("L2S_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    base, model = pair
    data = _data(tmp_path)
    inputs = {p: snapshot(p) for p in (base, model)}
    data_bytes = data.read_bytes()
    out = tmp_path / "outs"
    steps = [
        ["merge", "--method", "ties", "--base", str(base), "--model", str(model), "--out",
         str(out / "m")],
        ["check", str(base), str(model), "--csv", str(out / "check.csv")],
        ["eval", str(model), "--data", str(data), "--out", str(out / "r.jsonl"),
         "--max-new-tokens", "2"],
        ["eval", str(out / "m"), "--data", str(data), "--out", str(out / "m.jsonl"),
         "--max-new-tokens", "2"],
        ["regrade", str(out / "r.jsonl"), "--out", str(out / "rr.jsonl"), "--grader", "simple"],
        ["spectrum", str(base), str(model), "--out", str(out / "s.csv")],
    ]
    for argv in steps:
        merged = snapshot(out / "m") if (out / "m").is_dir() else None
        assert main([*argv, *(["--quiet"] if argv[0] != "check" else [])]) in (0, 1), argv
        for p, snap in inputs.items():
            assert snapshot(p) == snap, f"{argv[0]} changed {p}"
        if argv[0] == "eval" and merged is not None and str(out / "m") in argv:
            assert snapshot(out / "m") == merged  # a merge evaluated is an input too
    assert data.read_bytes() == data_bytes
    assert not list(tmp_path.rglob(".l2s_cache"))
    assert (tmp_path / "home" / ".cache" / "l2s_kit" / "checkpoints").is_dir()


def test_a_symlinked_cache_inside_an_input_is_never_written_through(pair, tmp_path, monkeypatch):
    monkeypatch.delenv("L2S_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    base, model = pair
    users = tmp_path / "users"
    users.mkdir()
    (users / "weights_hash.json").write_text("the user's own\n")
    (model / ".l2s_cache").symlink_to(users)
    assert main(["eval", str(model), "--data", str(_data(tmp_path)), "--out",
                 str(tmp_path / "r.jsonl"), "--max-new-tokens", "2", "--quiet"]) == 0
    assert [p.name for p in users.iterdir()] == ["weights_hash.json"]
    assert (users / "weights_hash.json").read_text() == "the user's own\n"


def test_eval_appends_only_to_its_own_responses_files(pair, tmp_path, capsys):
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text('{"question": "q", "answer": "a"}\n{"question": "r"')
    before = theirs.read_bytes()
    assert main(["eval", str(pair[1]), "--data", str(_data(tmp_path)), "--out",
                 str(theirs), "--max-new-tokens", "2", "--quiet"]) == 2
    assert "line 1: not a response row written by the kit" in capsys.readouterr().err
    assert theirs.read_bytes() == before


def test_a_results_folder_recorded_by_an_earlier_version_is_still_the_kits(tmp_path):
    """Earlier versions recorded a results folder's files by name only: such a folder is still
    replaced by the next study, and a file added beside them is still the user's."""
    out = tmp_path / "study"
    out.mkdir()
    (out / "summary.csv").write_text("old\n")
    (out / ".l2s-output.json").write_text(json.dumps({"kind": "study", "files": ["summary.csv"]}))
    claim_output(out, "study", replace_own=True)
    (out / "mine.txt").write_text("mine\n")
    with pytest.raises(OutputExistsError, match=r"did not write \(mine.txt\)"):
        claim_output(out, "study", overwrite=True)
