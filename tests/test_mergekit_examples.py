"""mergekit's own example configs merge with ``l2s merge`` as they are written.

``benchmarks/mergekit_examples/`` holds mergekit's ``examples/*.yml`` unchanged (see its README).
They name their checkpoints by hub id (``psmathur/orca_mini_v3_13b``) or by a local folder
(``model_a``); here a hub cache laid out as the hub client lays it out holds tiny checkpoints
under those ids (40 layers where the examples slice 40 layers), the network is off, and each
example is merged by the CLI from an unchanged copy of its file. What each merge gives is checked
against what the config says, computed by hand; ``benchmarks/mergekit_parity.py --examples``
compares the same merges with mergekit's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from l2s_kit.cli import main
from l2s_kit.io import Checkpoint
from l2s_kit.io.hub import place_in_cache
from l2s_kit.merging.schedule import count_layers
from l2s_kit.zoo.synthetic import example_checkpoints

EXAMPLES = Path(__file__).resolve().parent.parent / "benchmarks" / "mergekit_examples"
LLAMA_13B = ["TheBloke/Llama-2-13B-fp16", "psmathur/orca_mini_v3_13b",
             "garage-bAInd/Platypus2-13B", "WizardLM/WizardMath-13B-V1.0"]
MISTRAL_7B = ["mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.2",
              "BioMistral/BioMistral-7B"]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """(work folder with model_a and model_b, every example's checkpoint's tensors by its name):
    the stand-ins of ``models.yaml``, hub ids in a hub cache, the network off."""
    import huggingface_hub.constants as constants

    root = tmp_path_factory.mktemp("mergekit-examples")
    spec = yaml.safe_load((EXAMPLES / "models.yaml").read_text())
    folders = example_checkpoints(root / "made", spec)
    place_in_cache(root / "hub", {k: v for k, v in folders.items() if k not in spec["local"]})
    work = root / "work"
    work.mkdir()
    for name in spec["local"]:
        shutil.copytree(folders[name], work / name)
    mp = pytest.MonkeyPatch()
    mp.setattr(constants, "HF_HUB_OFFLINE", True)
    mp.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
    yield work, {k: tensors(v) for k, v in folders.items()}
    mp.undo()


def tensors(folder) -> dict:
    """Every tensor of a checkpoint folder, by name."""
    c = Checkpoint(folder)
    return {n: c.read(n) for n in c.names}


def merged(examples, name: str, monkeypatch) -> dict:
    """``l2s merge`` of the example ``name`` (an unchanged copy), run in the work folder."""
    work, _ = examples
    yml = work / f"{name}.yml"
    shutil.copyfile(EXAMPLES / f"{name}.yml", yml)
    assert yml.read_bytes() == (EXAMPLES / f"{name}.yml").read_bytes()
    monkeypatch.chdir(work)
    out = work / f"out-{name}"
    assert main(["merge", str(yml), "--out", str(out), "--quiet"]) == 0
    got = tensors(out)
    assert all(t.dtype == torch.float16 for t in got.values()) or name == "arcee_fusion"
    return got


def naive_ties(base, deltas_weights, normalize):
    """TIES by hand: each task vector keeps its floor(density·n) largest magnitudes (mergekit),
    weighted; the entries agreeing with the sign of the sum are summed (and divided by their
    weights with ``normalize``)."""
    kept = []
    for d, density, w in deltas_weights:
        flat = d.reshape(-1)
        n_keep = max(1, int(density * flat.numel()))  # mergekit: max(1, floor(density·n))
        idx = torch.argsort(flat.abs(), descending=True, stable=True)[:n_keep]
        k = torch.zeros_like(flat)
        k[idx] = flat[idx]
        kept.append((w * k.reshape(d.shape), w))
    sign = torch.where(sum(k for k, _ in kept) >= 0, 1.0, -1.0).double()
    num = sum(k * ((k.sign() == sign) & (k != 0)) for k, _ in kept)
    if not normalize:
        return base + num
    den = sum(w * ((k.sign() == sign) & (k != 0)) for k, w in kept)
    return base + torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def test_linear_example(examples, monkeypatch):
    _, t = examples
    out = merged(examples, "linear", monkeypatch)
    a, b, c = (t[i] for i in ("psmathur/orca_mini_v3_13b", "WizardLM/WizardLM-13B-V1.2",
                              "garage-bAInd/Platypus2-13B"))
    for name, x in out.items():
        want = (a[name].double() + 0.3 * b[name].double() + 0.5 * c[name].double()) / 1.8
        assert torch.allclose(x.double(), want, atol=2e-3, rtol=2e-3), name


def test_orcamini_platy_44layer_example_stacks_layers(examples, monkeypatch):
    _, t = examples
    out = merged(examples, "orcamini-platy-44layer", monkeypatch)
    orca, platy = t["psmathur/orca_mini_v3_13b"], t["garage-bAInd/Platypus2-13B"]
    assert count_layers(out) == 44
    for name, x in out.items():
        if ".layers." in name:
            i = int(name.split(".layers.")[1].split(".")[0])
            src = (orca, name) if i < 24 else \
                (platy, name.replace(f".layers.{i}.", f".layers.{i - 24 + 20}."))
            want = src[0][src[1]]
        else:
            want = (orca if "embed" in name else platy)[name]
        assert torch.equal(x, want.half()), name


def test_gradient_slerp_example(examples, monkeypatch):
    _, t = examples
    out = merged(examples, "gradient-slerp", monkeypatch)
    orca, platy = t["psmathur/orca_mini_v3_13b"], t["garage-bAInd/Platypus2-13B"]
    # t at the first layer: 0 for self_attn (orca's), 1 for mlp (Platypus'); last layer reversed
    for i, attn_src, mlp_src in ((0, orca, platy), (39, platy, orca)):
        for name, x in out.items():
            if f".layers.{i}." in name and ("self_attn" in name or "mlp" in name):
                src = attn_src if "self_attn" in name else mlp_src
                assert torch.allclose(x.double(), src[name].double(), atol=2e-3), name


@pytest.mark.parametrize("name", ["ties", "bio-merge"])
def test_ties_examples(name, examples, monkeypatch):
    """bio-merge: density 0.5 and weight 0.5 for both models, normalize false: checked entry by
    entry against TIES by hand. ties: per-model density and weight gradients and filters over 40
    layers: checked at the first layer, where every gradient takes its first value (density 1,
    0.5, 0.33; weights 1, 0 and, for mlp, 0.5)."""
    _, t = examples
    out = merged(examples, name, monkeypatch)
    if name == "bio-merge":
        base = t["mistralai/Mistral-7B-v0.1"]
        models = [(t[m], 0.5, 0.5) for m in MISTRAL_7B[1:]]
        names, normalize = list(out), False
    else:
        base = t["TheBloke/Llama-2-13B-fp16"]
        names, normalize = [n for n in out if ".layers.0." in n], True
    for n in names:
        b = base[n].double()
        if name == "ties":
            models = [(t[LLAMA_13B[1]], 1.0, 1.0), (t[LLAMA_13B[2]], 0.5, 0.0),
                      (t[LLAMA_13B[3]], 0.33, 0.5 if "mlp" in n else 0.0)]
        want = naive_ties(b, [(m[n].double() - b, d, w) for m, d, w in models], normalize)
        assert torch.allclose(out[n].double(), want, atol=2e-3, rtol=2e-3), n


def test_arcee_fusion_example_takes_local_folders(examples, monkeypatch):
    _, t = examples
    out = merged(examples, "arcee_fusion", monkeypatch)
    a, b = t["model_a"], t["model_b"]
    changed = 0
    for name, x in out.items():  # each entry model_a's or model_b's (in bfloat16)
        is_a, is_b = x == a[name].to(x.dtype), x == b[name].to(x.dtype)
        assert bool((is_a | is_b).all()), name
        changed += int((~is_a).sum())
    assert changed > 0
