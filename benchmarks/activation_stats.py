"""Memory and time of AIM's activation statistics: layer by layer against the whole model.

For a synthetic Qwen2-shaped checkpoint (``l2s_kit.zoo.synthetic.make_pair``, bf16, built once under
``--workdir``), the statistics of ``--samples`` s1K calibration texts (question + solution, cut
to ``--max-tokens`` tokens) are computed twice, each in a fresh Python process:

- ``layerwise``: ``l2s_kit.merging.calibration.activations.stats_layerwise`` (one decoder layer in memory at a time);
- ``whole``: ``stats_whole_model`` (the model loaded whole in float32, hooks on every module),
  the reference the tests compare against.

Printed per mode: wall time, the peak resident memory of the process (VmHWM), the RSS after the
imports, and the ratios layerwise / whole; the largest relative difference between the two
results is printed too (it must be at float tolerance). Run from the repository root::

    .venv/bin/python benchmarks/activation_stats.py                      # qwen2-0.5b, 32 samples
    .venv/bin/python benchmarks/activation_stats.py --size small --samples 8   # smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(mode: str, path: str, samples: int, max_tokens: int, out: str, source: str) -> None:
    import torch

    from l2s_kit.merging.calibration import activations
    from l2s_kit.merging.calibration.sets import CalibrationSpec, texts

    torch.set_num_threads(2)
    rss0 = _vm("VmRSS")
    batches = activations.tokenize(path, texts(CalibrationSpec(source, samples=samples)),
                                   max_tokens, batch_size=8)
    t = time.perf_counter()
    fn = activations.stats_layerwise if mode == "layerwise" else activations.stats_whole_model
    stats = fn(path, batches)
    secs = time.perf_counter() - t
    torch.save(stats, out)
    print(json.dumps({"mode": mode, "seconds": secs, "peak_mb": _vm("VmHWM"), "import_mb": rss0,
                      "tokens": int(sum(int(m.sum()) for _, m in batches))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="qwen2-0.5b")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--workdir", default=str(ROOT / "data" / "bench"))
    ap.add_argument("--source", default="s1k",
                    help="calibration texts: s1k (the shared reference data) or family")
    ap.add_argument("--one", nargs=4, metavar=("MODE", "PATH", "SAMPLES", "OUT"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        mode, path, n, out = a.one
        return one(mode, path, int(n), a.max_tokens, out, a.source)
    import torch

    from l2s_kit.zoo.synthetic import make_pair

    folder = Path(a.workdir) / f"act-{a.size}"
    if not (folder / "base" / "config.json").exists():
        print(f"building a synthetic {a.size} pair under {folder} ...", flush=True)
        make_pair(folder, a.size, dtype=torch.bfloat16, progress=True)
    rows = {}
    for mode in ("layerwise", "whole"):
        out = folder / f"stats-{mode}.pt"
        proc = subprocess.run([sys.executable, __file__, "--max-tokens", str(a.max_tokens),
                               "--source", a.source, "--one", mode, str(folder / "base"),
                               str(a.samples), str(out)], capture_output=True, text=True)
        if proc.returncode != 0:  # the measurement's own error, in one line
            raise SystemExit(f"{mode} run failed: {proc.stderr.strip().splitlines()[-1]}")
        rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    lw = torch.load(folder / "stats-layerwise.pt")
    wh = torch.load(folder / "stats-whole.pt")
    diff = max(float(((lw[k] - wh[k]).abs() / wh[k].abs().max()).max()) for k in wh)
    print(f"{a.size}, {a.samples} {a.source} samples, {rows['whole']['tokens']} tokens")
    print(f"{'mode':<10} {'seconds':>8} {'peak MB':>8} {'after imports MB':>17}")
    for mode, r in rows.items():
        print(f"{mode:<10} {r['seconds']:8.1f} {r['peak_mb']:8.0f} {r['import_mb']:17.0f}")
    print(f"ratio layerwise/whole: time {rows['layerwise']['seconds'] / rows['whole']['seconds']:.2f}, "
          f"peak memory {rows['layerwise']['peak_mb'] / rows['whole']['peak_mb']:.2f}; "
          f"largest relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
