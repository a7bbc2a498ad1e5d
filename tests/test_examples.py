"""The published-setting recipes in examples/: every one validates (paths substituted) and matches
its preset, and one merges a checkpoint pair end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from l2s_kit.cli import main
from l2s_kit.merging import PRESETS, load_recipe

FOLDER = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(p for p in FOLDER.glob("*.yaml") if not p.name.startswith("sweep"))
PLACEHOLDER = re.compile(r"/models/[^\s#]+")


def with_paths(path: Path, base: Path, model: Path) -> str:
    """The example's text with its two placeholder folders replaced (System 1, then System 2)."""
    text = path.read_text()
    found = PLACEHOLDER.findall(text.split("\nname:", 1)[1])  # after the comment block
    assert len(found) == 2, f"{path.name}: expected a base_model and one model placeholder"
    body = text.split("\nname:", 1)[1].replace(found[0], str(base)).replace(found[1], str(model))
    return "name:" + body


def test_every_preset_has_an_example():
    assert {p.stem for p in EXAMPLES} == set(PRESETS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_and_matches_its_preset(path, tiny_pair):
    recipe = load_recipe(with_paths(path, *tiny_pair))  # paths are checked to exist
    preset = load_recipe({"preset": path.stem, "base_model": str(tiny_pair[0]),
                          "models": [str(tiny_pair[1])]})
    assert recipe.merge_method == preset.merge_method
    assert recipe.parameters == preset.parameters
    assert recipe.name == path.stem and recipe.out_dtype == "bfloat16"
    assert (recipe.base_model, recipe.models[0].model) == tuple(map(str, tiny_pair))
    text = path.read_text()
    assert f"l2s merge examples/{path.stem}.yaml --out merged/{path.stem}" in text


def test_example_merges(tiny_pair, tmp_path):
    recipe = tmp_path / "ties-7b.yaml"
    recipe.write_text(with_paths(Path(EXAMPLES[0]).with_name("ties-7b.yaml"), *tiny_pair))
    assert main([ "merge", str(recipe), "--out", str(tmp_path / "merged"), "--quiet"]) == 0
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "ties" in card and "0.8" in card


def test_7b_shaped_synthetic_checkpoint_has_the_real_layout():
    """The benchmark's qwen2.5-math-7b shape: Qwen2.5-Math-7B's tensor names and shapes (28
    layers, vocab rows 152064, untied lm_head), 7,615,616,512 parameters = 15,231,233,024 bytes in
    bf16, the total_size of the published checkpoint's safetensors index."""
    import math

    import torch

    from l2s_kit.zoo.synthetic import qwen2_config, tensor_infos

    cfg = qwen2_config("qwen2.5-math-7b")
    infos = {i.name: i.shape for i in tensor_infos(cfg, torch.bfloat16)}
    assert cfg["tie_word_embeddings"] is False and cfg["num_hidden_layers"] == 28
    assert infos["lm_head.weight"] == infos["model.embed_tokens.weight"] == (152064, 3584)
    assert infos["model.layers.27.mlp.down_proj.weight"] == (3584, 18944)
    assert infos["model.layers.0.self_attn.k_proj.weight"] == (512, 3584)  # 4 KV heads × 128
    assert infos["model.layers.0.self_attn.k_proj.bias"] == (512,)
    assert len(infos) == 28 * 12 + 3
    assert sum(math.prod(s) for s in infos.values()) * 2 == 15_231_233_024


def test_sweep_example_validates(tiny_pair, shared_data, tmp_path):
    """examples/sweep-7b.yaml with its folders substituted: 3 merges and System 2 on the paper's
    six benchmarks, as Ray tasks with one GPU each and vLLM."""
    import yaml

    from l2s_kit.study.sweep import load_sweep

    for name in ("ta-7b", "ties-7b", "dare-7b"):
        (tmp_path / f"{name}.yaml").write_text(with_paths(FOLDER / f"{name}.yaml", *tiny_pair))
    d = yaml.safe_load((FOLDER / "sweep-7b.yaml").read_text())
    d["models"]["system2"] = str(tiny_pair[1])
    d["data_dir"] = str(shared_data / "benchmarks")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    spec = load_sweep(tmp_path / "sweep.yaml")
    assert [j.name for j in spec["jobs"]] == ["system2", "ta-7b", "ties-7b", "dare-7b"]
    assert list(spec["datasets"]) == ["gsm8k", "math500", "aime24", "minerva_math",
                                      "olympiadbench", "college_math"]
    assert len(spec["datasets"]["math500"]) == 500
    assert spec["settings"].max_new_tokens == 8192 and spec["settings"].temperature == 0
    assert (spec["runner"], spec["num_gpus"], spec["backend"], spec["grader"]) == (
        "ray", 1, "vllm", "math-verify")


def test_cli_sweep_local(tiny_pair, shared_data, tmp_path, capsys):
    import yaml

    (tmp_path / "ta.yaml").write_text(with_paths(FOLDER / "ta-7b.yaml", *tiny_pair))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "recipes": {"ta": "ta.yaml"}, "models": {"s2": str(tiny_pair[1])},
        "benchmarks": ["gsm8k"], "data_dir": str(shared_data / "benchmarks"), "limit": 2,
        "max_new_tokens": 4, "grader": "math-verify", "reference": "s2", "workdir": "runs"}))
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--runner", "local", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 responses of 2 models; 0 grading timeouts" in out
    assert "| ta | accuracy (%) |" in out
    assert len(list((tmp_path / "runs" / "responses").glob("ta-*.jsonl"))) == 1  # relative to the file
    (tmp_path / "bad.yaml").write_text("recipes: {}\nbenchmark: [gsm8k]\n")
    assert main(["sweep", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key 'benchmark'" in capsys.readouterr().err
