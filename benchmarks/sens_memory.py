"""Peak memory of Sens-Merging's sensitivities: the whole model with its gradients against one
decoder layer at a time (``sensitivities_layerwise``), on Qwen2-shaped checkpoints.

Each measurement runs in a fresh Python process (this script, ``--one``) and reports its peak
resident memory (VmHWM from /proc/self/status, which counts the checkpoint's memory-mapped pages
too), its peak anonymous memory (RssAnon sampled every 20 ms: what the process itself holds; the
mapped pages are page cache the kernel can drop) and time, for the same calibration samples
(``--samples`` texts of the family's task, at most ``--tokens`` tokens each). The two results are
compared (largest relative difference over the layer groups). The checkpoints are synthetic
(``l2s_kit.zoo.synthetic.make_pair``, bfloat16 on disk, built once under ``--workdir``). From the
layer-by-layer pass's parts it extrapolates to the 7B shape: the embedding and head in float32,
one decoder layer's float32 weights and gradients, one sample's logits and their gradient, and
the hidden states kept at the layer boundaries (printed part by part).

    .venv/bin/python benchmarks/sens_memory.py                      # qwen2-0.5b and qwen2-1.5b
    .venv/bin/python benchmarks/sens_memory.py --sizes qwen2-0.5b --samples 2

This is a measurement, not a test: it prints a table (and saves it to ``<workdir>/sens_memory.csv``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(path: str, layerwise: bool, samples: int, tokens: int) -> dict:
    import threading

    import transformers

    anon = [0.0]
    done = threading.Event()

    def sample():  # anonymous memory only: the checkpoint's mapped pages are page cache
        while not done.is_set():
            anon[0] = max(anon[0], _status("RssAnon"))
            done.wait(0.02)

    threading.Thread(target=sample, daemon=True).start()
    from l2s_kit.merging.calibration import sensitivity
    from l2s_kit.merging.calibration.sets import CalibrationSpec

    transformers.logging.set_verbosity_error()
    spec = CalibrationSpec("family", "question+long", samples=samples, seed=0, max_tokens=tokens)
    t0 = time.perf_counter()
    s = sensitivity.sensitivities(path, spec, cache=False, layerwise=layerwise)
    done.set()
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_mb(),
            "peak_anon_mb": max(anon[0], _status("RssAnon")), "s": s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", default=["qwen2-0.5b", "qwen2-1.5b"])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--workdir", default="data/bench")
    ap.add_argument("--one", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        r = one(args.one[0], args.one[1] == "layerwise", args.samples, args.tokens)
        print(json.dumps(r))
        return 0
    import pandas as pd
    import torch

    from l2s_kit.io import Checkpoint
    from l2s_kit.zoo.synthetic import make_pair

    rows = []
    for size in args.sizes:
        pair = Path(args.workdir) / f"sens-{size}"
        if not (pair / "model").exists():
            make_pair(pair, size, seed=0, dtype=torch.bfloat16, delta_std=0.005, progress=True)
        path = str(pair / "model")
        ck = Checkpoint(path)
        n = sum(ck.info(x).numel for x in ck.names)
        res = {}
        for mode in ("whole", "layerwise"):
            proc = subprocess.run([sys.executable, __file__, "--one", path, mode, "--samples",
                                   str(args.samples), "--tokens", str(args.tokens)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        a, b = res["whole"]["s"], res["layerwise"]["s"]
        diff = max(abs(a[g] - b[g]) / abs(a[g]) for g in a)
        rows.append({"size": size, "parameters_M": round(n / 1e6), "samples": args.samples,
                     "whole_peak_mb": round(res["whole"]["peak_rss_mb"]),
                     "layerwise_peak_mb": round(res["layerwise"]["peak_rss_mb"]),
                     "whole_anon_mb": round(res["whole"]["peak_anon_mb"]),
                     "layerwise_anon_mb": round(res["layerwise"]["peak_anon_mb"]),
                     "anon_ratio": round(res["layerwise"]["peak_anon_mb"]
                                         / res["whole"]["peak_anon_mb"], 3),
                     "whole_s": round(res["whole"]["seconds"], 1),
                     "layerwise_s": round(res["layerwise"]["seconds"], 1),
                     "max_rel_diff": f"{diff:.1e}"})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.workdir) / "sens_memory.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(df.to_string(index=False))
    # 7B: embedding and head 152064 x 3584 (untied), 28 layers of 233M parameters
    v, h, layer, layers, t, chunk = 152064, 3584, 233_000_000, 28, 512, 8
    parts = {"embedding and head, float32": 2 * v * h * 4,
             "one layer's float32 weights and gradients": layer * 8,
             "one sample's logits and their gradient (512 tokens)": 2 * t * v * 4,
             f"hidden states at {layers + 1} layer boundaries (chunk {chunk} x {t} tokens)":
                 chunk * t * h * 4 * (layers + 1)}
    print("\n7B-shaped extrapolation, layer by layer (plus the process's baseline, ~0.5 GB here):")
    for k, b in parts.items():
        print(f"  {k}: {b / 2**30:.1f} GB")
    print(f"  total: {sum(parts.values()) / 2**30:.1f} GB; the whole model needs "
          f"{7.6e9 * 8 / 2**30:.0f} GB for its weights and gradients alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
