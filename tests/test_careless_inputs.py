"""A careless user's inputs, each seen once in an adversarial pass: every one is a clear line
with exit 2 (or, for a damaged neighbouring run record, a one-line note while the work goes on),
never a traceback, and nothing is half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from l2s_kit.cli import main
from l2s_kit.io import Checkpoint
from l2s_kit.merging import get_method, list_methods, merge
from l2s_kit.zoo.synthetic import make_pair


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path / "pair", "tiny", seed=7, delta_std=0.02)


def _rows(tmp_path) -> Path:
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"id": 0, "prompt": "1+1=", "gold": "2"}) + "\n")
    return f


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--temperature", "inf", "--n", "2"], "'inf' is not a finite number"),
    (["--temperature", "nan"], "'nan' is not a finite number"),
    (["--top-p=-inf"], "'-inf' is not a finite number"),
])
def test_non_finite_generation_settings_are_refused(pair, tmp_path, capsys, argv, message):
    out = tmp_path / "r.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["eval", str(pair[1]), "--data", str(_rows(tmp_path)), "--out", str(out), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err and not out.exists()


def test_generation_settings_refuse_infinity_from_python():
    from l2s_kit.evaluate import GenerationError, GenerationSettings

    with pytest.raises(GenerationError, match="temperature=inf"):
        GenerationSettings(temperature=float("inf"), n=2)


def test_regrade_timeout_inf_is_refused(tmp_path, capsys):
    src = tmp_path / "r.jsonl"
    src.write_text("{}\n")
    with pytest.raises(SystemExit) as e:
        main(["regrade", str(src), "--out", str(tmp_path / "o.jsonl"), "--grade-timeout", "inf"])
    assert e.value.code == 2 and "'inf' is not a finite number" in capsys.readouterr().err


def test_a_repeated_param_is_refused(pair, tmp_path, capsys):
    assert main(["merge", "--method", "task_arithmetic", "--base", str(pair[0]), "--model",
                 str(pair[1]), "--param", "alpha=0.3", "--param", "alpha=0.7", "--out",
                 str(tmp_path / "m"), "--quiet"]) == 2
    assert "--param alpha is given twice" in _one_line(capsys)
    assert not (tmp_path / "m").exists()


def test_an_out_that_is_a_loop_of_links_is_named(pair, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert main(["merge", "--method", "task_arithmetic", "--base", str(pair[0]), "--model",
                 str(pair[1]), "--out", str(loop), "--quiet"]) == 2
    assert "loop of symbolic links" in _one_line(capsys)
    assert loop.is_symlink()


def test_a_legal_long_out_name_merges(pair, tmp_path):
    out = tmp_path / ("m" * 250)
    result = merge({"merge_method": "task_arithmetic", "base_model": str(pair[0]),
                    "models": [{"model": str(pair[1])}]}, out, progress=False)
    assert Checkpoint(result).names and sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(["pair", out.name])


def test_l2s_zoo_set_to_a_file_fails_before_any_training(tmp_path, monkeypatch, capsys):
    from l2s_kit.zoo import build_family, train
    from l2s_kit.zoo.spec import FamilySpec

    afile = tmp_path / "zoo"
    afile.write_text("not a folder")
    monkeypatch.setenv("L2S_ZOO", str(afile))
    monkeypatch.setattr(train, "train_system1", lambda *a, **k: pytest.fail("trained"))
    from l2s_kit.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="is a file where a folder is needed"):
        build_family(spec=FamilySpec(seed=12345), progress=False)
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("what, message", [("folder", "is a folder"),
                                           ("/dev/zero", "is not a regular file")])
def test_data_that_is_a_folder_or_a_device_is_named_so(pair, tmp_path, capsys, what, message):
    data = (tmp_path / "data") if what == "folder" else Path(what)
    data.mkdir(exist_ok=True) if what == "folder" else None
    assert main(["eval", str(pair[1]), "--data", str(data), "--out", str(tmp_path / "r.jsonl"),
                 "--quiet"]) == 2
    err = _one_line(capsys)
    assert f"data file {data} {message}" in err and "does not exist" not in err


def test_a_hostile_chat_template_is_refused_naming_chat_template(pair, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(pair[1], model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    bench = tmp_path / "data" / "gsm8k"
    bench.mkdir(parents=True)
    row = {"idx": 0, "question": "1+1?", "answer": "1+1=2\n#### 2"}
    (bench / "test.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["eval", str(model), "--benchmark", "gsm8k", "--data-dir", str(tmp_path / "data"),
                 "--prompt", "chat", "--out", str(tmp_path / "r.jsonl"), "--quiet"]) == 2
    err = _one_line(capsys)
    assert "chat template (chat_template)" in err and "SecurityError" in err
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("method", [m.name for m in list_methods()
                                    if m.name not in ("passthrough", "model_stock")])
def test_a_zero_element_tensor_is_written_as_it_is_by_every_method(tmp_path, method):
    base, model = make_pair(tmp_path / "z", "tiny", seed=1, delta_std=0.02)
    for p in (base, model):
        sd = load_file(p / "model.safetensors")
        sd["model.extra.weight"] = torch.zeros(0, 4)
        sd["model.extra2.bias"] = torch.zeros(3, 0)
        save_file(sd, p / "model.safetensors", metadata={"format": "pt"})
    m = get_method(method)
    models = [model] * m.n_models[0]
    out = merge({"merge_method": method, "base_model": str(base),
                 "models": [{"model": str(x)} for x in models]}, tmp_path / "out", progress=False)
    ck = Checkpoint(out)
    assert ck.info("model.extra.weight").shape == (0, 4)
    assert ck.info("model.extra2.bias").shape == (3, 0)


def test_a_damaged_run_record_beside_a_run_is_a_note_and_the_gallery_goes_on(tmp_path, capsys):
    from l2s_kit.io import runs
    from l2s_kit.notebooks.gallery import write_gallery

    good, bad, worse = tmp_path / "nb" / "good", tmp_path / "nb" / "bad", tmp_path / "nb" / "worse"
    for f in (good, bad, worse):
        f.mkdir(parents=True)
    runs.write_json({"kind": "notebook", "notebook": "nb", "run": "good", "status": "ok",
                     "started": "2026-01-01T00:00:00", "seconds": 3.0, "files": {}}, good / "run.json")
    (bad / "run.json").write_text(json.dumps({"run": "bad", "seconds": "soon", "files": {}}))
    (worse / "run.json").write_text(json.dumps({"run": "worse", "code": "x", "comparison": "y"}))
    path = write_gallery(tmp_path)
    err = capsys.readouterr().err
    assert err.count("note: passed over a damaged run record") == 2
    assert "'seconds' is 'soon', not a number" in err and "'code' is 'x'" in err
    text = path.read_text()
    assert "1 run in 1 notebook" in text
    assert [r["run"] for r in runs.runs_of(tmp_path / "nb")] == ["good"]


def test_the_model_card_names_no_path_of_this_machine(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    base, model = make_pair(home / "models", "tiny", seed=8, delta_std=0.02)
    out = merge({"merge_method": "ties", "base_model": str(base), "models": [{"model": str(model)}],
                 "parameters": {"k": 0.5}}, tmp_path / "out", progress=False)
    card = (out / "README.md").read_text()
    assert str(tmp_path) not in card and "`~/models/base`" in card and "`~/models/model`" in card
    assert out.weights_hash in card
    assert str(base) in (out / "l2s_recipe.yaml").read_text()  # what a rerun needs stays


@pytest.mark.parametrize("how", ["mismatched", "duplicated"])
def test_a_bad_shard_index_blocks_in_check_and_merge_naming_the_tensor(tmp_path, capsys, how):
    base, model = make_pair(tmp_path / "s", "tiny", seed=1, delta_std=0.02, shard_size=20_000)
    index = model / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    shards = sorted(set(data["weight_map"].values()))
    name = next(n for n, f in data["weight_map"].items() if f == shards[0])
    if how == "mismatched":
        data["weight_map"][name] = shards[1]
        index.write_text(json.dumps(data))
    else:  # the same tensor, another value, in a second shard
        sd = load_file(model / shards[1])
        sd[name] = load_file(model / shards[0])[name] * 3
        save_file(sd, model / shards[1], metadata={"format": "pt"})
    assert main(["check", str(base), str(model)]) == 1
    out = capsys.readouterr().out
    assert "[blocks] checkpoint model" in out and name in out and shards[1] in out
    assert main(["merge", "--method", "task_arithmetic", "--base", str(base), "--model",
                 str(model), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    err = _one_line(capsys)
    assert name in err and shards[0] in err and shards[1] in err
    assert not (tmp_path / "m").exists()
