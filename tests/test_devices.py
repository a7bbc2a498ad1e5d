"""Every torch path on the merge's device. On a machine with a CUDA GPU, every registered method
and the exact trim's radix select run on ``cuda`` and give the CPU's result; on any machine, every
tensor the merging code creates is checked for its device (a tensor made on the CPU and met with a
GPU tensor is how TIES once crashed on a GPU: ``radix_select``'s search key)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from l2s_kit.merging.methods.sparsify import radix_select
from l2s_kit.merging.registry import get_method, list_methods

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device: the cuda-against-cpu checks "
                                "run on a machine with a GPU (benchmarks/gpu_check.sh)")

# ---- a review of every tensor created in the merging code, for its device ----------------------
CREATORS = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "eye", "linspace",
            "rand", "randn", "randint", "randperm"}
# Tensors deliberately made on the CPU, each with why it never meets a GPU tensor there (or is
# moved before it does). A new creation without ``device=`` fails the test below until it is
# given one or reviewed here.
ON_CPU = {
    ("merging/engine.py", "torch.tensor([r])"):
        "a row index into a checkpoint, read on the CPU; the row is moved to the device",
    ("merging/vocab.py", "torch.full((rows,), -1, dtype=torch.long)"):
        "row indices into checkpoints, read on the CPU",
    ("merging/calibration/activations.py", "torch.empty(len(uniq), hidden)"):
        "filled from checkpoint reads (CPU); moved with the embedding",
    ("merging/calibration/fisher.py", "torch.randint(0, vocab, (1, tokens), generator=g)"):
        "seeded token ids from a CPU generator; batches are moved to the device when used",
    ("merging/calibration/fisher.py", "torch.zeros((), dtype=torch.float64)"):
        "sums checkpoint reads (CPU)",
    ("merging/calibration/mutual_info.py", "torch.arange(1, bins, dtype=torch.float64)"):
        "quantiles of values moved to the CPU first",
    ("merging/calibration/mutual_info.py", "torch.arange(total)"):
        "positions, moved to the states' device where used",
    ("merging/calibration/mutual_info.py", "torch.randperm(total, generator=g)"):
        "seeded positions from a CPU generator, moved where used",
    ("merging/calibration/mutual_info.py", "torch.tensor([nmi("):
        "a statistic of CPU values, cached on the CPU",
    ("merging/calibration/sensitivity.py", "torch.zeros((), dtype=torch.float64)"):
        "sums values moved to the CPU (.cpu()) first",
    ("merging/calibration/sensitivity.py", "torch.eye(n, dtype=g.dtype)"):
        "coefficients of CPU statistics",
    ("merging/methods/activation.py", "torch.zeros(n, n, dtype=torch.float64)"):
        "logit distances as Python floats",
    ("merging/methods/activation.py", "torch.tensor([[s.get(gr, 0.0)"):
        "CPU statistics",
    ("merging/methods/lowrank.py", "torch.randn(a.shape[1], k, generator=g, dtype=a.dtype)"):
        "seeded from a CPU generator, then .to(a.device)",
    ("merging/methods/mergekit_family.py", "torch.tensor(dot, dtype=torch.float64)"):
        "an angle from a Python float",
    ("merging/methods/mergekit_family.py", "torch.rand(probs.shape, generator=gen, dtype=torch.float64)"):
        "seeded from a CPU generator, then .to(probs.device)",
    ("merging/methods/sparsify.py", "torch.tensor([bits], dtype=torch.int64)"):
        "a Python int's bits, read back with .item()",
    ("merging/methods/sparsify.py", "torch.tensor([bits], dtype=torch.int32)"):
        "a Python int's bits, read back with .item()",
    ("merging/methods/sparsify.py", "torch.randint(0, n, (sample,), generator=g)"):
        "sample positions from a CPU generator, .to(a.device) where used",
    ("merging/methods/sparsify.py", "torch.rand(min(MASK_BLOCK, end - b * MASK_BLOCK), generator=g)"):
        "DARE's mask from a CPU generator (the same on every device), .to(device) when bound",
}


def _creations():
    for path in sorted((ROOT / "l2s_kit" / "merging").rglob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and node.func.attr in CREATORS
                    and not any(k.arg == "device" for k in node.keywords)):
                yield str(path.relative_to(ROOT / "l2s_kit")), ast.get_source_segment(text, node)


def test_every_tensor_the_merging_code_creates_has_a_device_or_a_reviewed_reason():
    unreviewed = [(f, src) for f, src in _creations()
                  if not any(f == rf and src.startswith(rs) for rf, rs in ON_CPU)]
    assert not unreviewed, ("tensors created without device= (give them the data's device, or "
                            f"review them in ON_CPU with why): {unreviewed}")


def test_the_review_lists_only_tensors_that_exist():
    found = list(_creations())
    stale = [k for k in ON_CPU if not any(k[0] == f and src.startswith(k[1]) for f, src in found)]
    assert not stale


def test_radix_select_keeps_its_search_key_on_the_histograms_device():
    """The TIES crash: the key of ``searchsorted`` was made on the CPU against CUDA counts."""
    src = (ROOT / "l2s_kit/merging/methods/sparsify.py").read_text()
    call = next(ln for ln in src.splitlines() if "torch.searchsorted(cum" in ln)
    assert "device=cum.device" in call


# ---- cuda against cpu, where a GPU is at hand --------------------------------------------------

def _case():
    g = torch.Generator().manual_seed(5)
    base = torch.randn(64, 96, generator=g)
    return base, [base + 0.05 * torch.randn(64, 96, generator=g) for _ in range(2)]


@needs_cuda
@pytest.mark.parametrize("name", [m.name for m in list_methods()])
def test_every_method_gives_the_cpus_result_on_cuda(name):
    m = get_method(name)
    base, models = _case()
    lo, hi = m.n_models
    models = models[:hi] if hi is not None else models
    params = {"p": 0.3} if "p" in m.params else {}
    cpu = m(base, models, [1.0] * len(models), **params)
    gpu = m(base.cuda(), [x.cuda() for x in models], [1.0] * len(models), **params)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)


@needs_cuda
def test_radix_select_on_cuda_equals_the_cpu():
    a = torch.randn(1 << 20, generator=torch.Generator().manual_seed(1))
    for rank in (1, 1000, 1 << 19):
        assert radix_select(lambda: [a.cuda()], rank) == radix_select(lambda: [a], rank)
