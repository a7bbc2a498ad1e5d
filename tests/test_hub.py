"""Hub ids wherever a checkpoint is taken, resolved offline from a local cache laid out as the
hub client lays it out (``models--owner--name/refs/<rev>`` and ``snapshots/<commit>/``)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from l2s_kit.cli import main
from l2s_kit.io import Checkpoint, weights_hash
from l2s_kit.io.hub import place_in_cache
from l2s_kit.zoo.synthetic import make_pair

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A hub cache holding acme/tiny-s1 and acme/tiny-s2 (main = COMMIT), the network off."""
    import huggingface_hub.constants as constants

    base, model = make_pair(tmp_path / "src", "tiny", seed=2, delta_std=0.02)
    cache = place_in_cache(tmp_path / "hub", {"acme/tiny-s1": base, "acme/tiny-s2": model},
                           COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return base, model, cache


def test_merge_check_and_recipes_take_hub_ids(hub, tmp_path):
    base, model, cache = hub
    local = tmp_path / "local"
    assert main(["merge", "--method", "task_arithmetic", "--base", str(base), "--model",
                 str(model), "--out", str(local), "--quiet"]) == 0
    by_id = tmp_path / "by-id"
    assert main(["merge", "--method", "task_arithmetic", "--base", "acme/tiny-s1", "--model",
                 f"acme/tiny-s2@{COMMIT}", "--out", str(by_id), "--quiet"]) == 0
    assert weights_hash(Checkpoint(by_id)) == weights_hash(Checkpoint(local))
    assert f"`acme/tiny-s1@{COMMIT[:12]}`" in (by_id / "README.md").read_text()  # the id given
    assert f"models--acme--tiny-s1/snapshots/{COMMIT}" in (by_id / "l2s_recipe.yaml").read_text()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "task_arithmetic",
                                      "base_model": "acme/tiny-s1",
                                      "models": [{"model": "acme/tiny-s2"}]}))
    assert main(["merge", str(recipe), "--out", str(tmp_path / "from-yaml"), "--quiet"]) == 0
    assert weights_hash(Checkpoint(tmp_path / "from-yaml")) == weights_hash(Checkpoint(local))
    assert main(["check", "acme/tiny-s1", "acme/tiny-s2"]) == 0


def test_a_pair_setup_takes_hub_ids(hub):
    from l2s_kit.study.setup import _checkpoint

    assert _checkpoint("acme/tiny-s2", "model").name == COMMIT


@pytest.mark.parametrize("name, hint", [("acme/missing", "hf download acme/missing`"),
                                        ("acme/tiny-s2@v9", "hf download acme/tiny-s2 --revision v9`")])
def test_a_hub_id_not_cached_offline_is_exit_2_naming_it(hub, tmp_path, capsys, name, hint):
    argv = ["merge", "--method", "task_arithmetic", "--base", "acme/tiny-s1", "--model", name,
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--model {name}: not in the local hub cache" in err and "HF_HUB_OFFLINE=1" in err
    assert hint in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_local_folder_wins_over_a_hub_id_of_the_same_spelling(hub, tmp_path, monkeypatch):
    from l2s_kit.io.hub import hub_id, resolve_checkpoint

    base, _, _ = hub
    monkeypatch.chdir(tmp_path)
    shutil.copytree(base, tmp_path / "acme" / "tiny-s1")
    assert hub_id("acme/tiny-s1") is None and resolve_checkpoint("acme/tiny-s1") == "acme/tiny-s1"
    assert hub_id("./acme/x") is None and hub_id("/abs/path") is None
    assert hub_id("Qwen/Qwen2.5-Math-7B@main") == ("Qwen/Qwen2.5-Math-7B", "main")


def test_notebook_pair_parameters_take_hub_ids(tmp_path):
    from l2s_kit.notebooks.run import NotebookError, _check_pair

    declared = {"base": {}, "model": {}}
    _check_pair("study", {"base": "acme/tiny-s1", "model": "acme/tiny-s2@main"}, declared, tmp_path)
    with pytest.raises(NotebookError, match="does not exist"):
        _check_pair("study", {"base": "./acme/tiny-s1", "model": "acme/tiny-s2"}, declared, tmp_path)
