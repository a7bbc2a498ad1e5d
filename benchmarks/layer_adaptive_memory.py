"""Peak memory and time of ACM's and FIM-Merging's statistics on Qwen2-shaped pairs.

Each measurement runs in a fresh Python process (this script, ``--one``) and reports its peak
anonymous memory (RssAnon sampled every 20 ms: what the process holds; the checkpoints' mapped
pages are page cache) against the size of one checkpoint's weights in float32:

- ``acm``: :func:`l2s_kit.merging.calibration.mutual_info.layer_nmi`, both models one decoder
  layer at a time over ``--samples`` family calibration texts of at most ``--tokens`` tokens;
- ``fim``: :func:`l2s_kit.merging.calibration.fisher.fisher_diagonal` of System 1 on 8 random
  sequences of 64 tokens, layer by layer (as for any model above 0.5B parameters).

The pairs are synthetic (``l2s_kit.zoo.synthetic.make_pair``, bfloat16, built once under
``--workdir``; the Sens-Merging benchmark's pairs are reused).

    .venv/bin/python benchmarks/layer_adaptive_memory.py                 # qwen2-0.5b and qwen2-1.5b
    .venv/bin/python benchmarks/layer_adaptive_memory.py --sizes qwen2-0.5b

This is a measurement, not a test: it prints a table (and saves it to
``<workdir>/layer_adaptive_memory.csv``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(base: str, model: str, what: str, samples: int, tokens: int) -> dict:
    import transformers

    transformers.logging.set_verbosity_error()
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _status("RssAnon"))
            done.wait(0.02)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    if what == "acm":
        from l2s_kit.merging.calibration.mutual_info import layer_nmi
        from l2s_kit.merging.calibration.sets import CalibrationSpec

        spec = CalibrationSpec("family", "question+both", samples=samples, max_tokens=tokens)
        out = layer_nmi(base, model, spec, cache=False)
    else:
        from l2s_kit.merging.calibration.fisher import fisher_diagonal

        out = fisher_diagonal(base, cache=False, layerwise=True)
    done.set()
    return {"seconds": time.perf_counter() - t0,
            "peak_anon_mb": max(peak[0], _status("RssAnon")), "groups": len(out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", default=["qwen2-0.5b", "qwen2-1.5b"])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--workdir", default="data/bench")
    ap.add_argument("--one", nargs=3, metavar=("BASE", "MODEL", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.samples, args.tokens)))
        return 0
    import pandas as pd
    import torch

    from l2s_kit.io import Checkpoint
    from l2s_kit.zoo.synthetic import make_pair

    rows = []
    for size in args.sizes:
        pair = Path(args.workdir) / f"sens-{size}"
        if not (pair / "model").exists():
            make_pair(pair, size, seed=0, dtype=torch.bfloat16, delta_std=0.01)
        base, model = str(pair / "base"), str(pair / "model")
        ck = Checkpoint(base)
        fp32_mb = 4 * sum(ck.info(n).numel for n in ck.names) / 2**20
        for what in ("acm", "fim"):
            cmd = [sys.executable, __file__, "--one", base, model, what, "--samples",
                   str(args.samples), "--tokens", str(args.tokens)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                          text=True).stdout.strip().splitlines()[-1])
            rows.append({"size": size, "statistic": what, "seconds": round(r["seconds"], 1),
                         "peak_anon_mb": round(r["peak_anon_mb"]),
                         "fp32_weights_mb": round(fp32_mb),
                         "peak / fp32 weights": round(r["peak_anon_mb"] / fp32_mb, 2)})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(Path(args.workdir) / "layer_adaptive_memory.csv", index=False)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
