"""Wall time and peak memory of the task-vector spectrum, exact against randomized, side by side.

What is measured: ``l2s_kit.analysis.spectrum.spectrum_values`` over the task vector of a synthetic
Qwen2-shaped pair (``l2s_kit.zoo.synthetic.make_pair``, bf16, the same cached pair as
``merge_speed.py``: built once under ``--workdir``), every 2-D weight of the chosen layers (all by
default; ``--layers 0 1`` times a subset, ``--embedding`` adds the 151936 × 1536 embedding), once
with ``method="exact"`` (every singular value, ``torch.linalg.svdvals``) and once with
``method="randomized"`` (the top k = max(2 · budget, 64) values of every matrix; budget
``--rank``, default 10% of min(m, n)). Each run is a fresh Python process, so its peak RSS (VmHWM)
is its own; the table also shows the RSS right after the imports.

Then the two runs are compared on what both computed: the largest relative error of the
randomized top-10 singular values, and whether every randomized value lies within its stated
bound (σ − σ̂ ≤ ``error_bound``) of the exact one.

Run (from the repository root)::

    .venv/bin/python benchmarks/spectrum_speed.py --layers 0 1         # two layers (~1 min)
    .venv/bin/python benchmarks/spectrum_speed.py --layers 0 --embedding
    .venv/bin/python benchmarks/spectrum_speed.py                      # every layer (minutes)

A synthetic task vector is Gaussian noise (full rank, a flat spectrum): the hardest case for the
randomized SVD's accuracy, and the same cost as a real one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULT_TAG = "SPECTRUM_SPEED_RESULT "


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(args) -> None:
    """The measured process: one spectrum, its time and peak memory, values saved for comparison."""
    import torch

    from l2s_kit.analysis.spectrum import save_table, spectrum_values

    if args.threads:
        torch.set_num_threads(args.threads)
    rss_imports = _status_mb("VmRSS")
    rank = float(args.rank) if "." in args.rank else int(args.rank)
    t0 = time.perf_counter()
    values = spectrum_values(args.base, args.model, rank=rank, method=args.one, layers=args.layers,
                             progress=False)
    seconds = time.perf_counter() - t0
    if args.embedding and args.layers is not None:  # the layers, plus the embedding
        t1 = time.perf_counter()
        emb = spectrum_values(args.base, args.model, rank=rank, method=args.one,
                              modules=["embedding"], progress=False)
        seconds += time.perf_counter() - t1
        import pandas as pd

        values = pd.concat([values, emb], ignore_index=True)
    save_table(values, args.save, overwrite=True)
    print(RESULT_TAG + json.dumps({
        "method": args.one, "seconds": seconds, "matrices": int(values["name"].nunique()),
        "values": len(values), "peak_rss_mb": _status_mb("VmHWM"), "rss_imports_mb": rss_imports,
        "params": int(values.groupby("name")[["rows", "cols"]].first().prod(axis=1).sum()),
    }), flush=True)


def measure(method: str, base: Path, model: Path, save: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--one", method, "--base", str(base), "--model", str(model),
           "--save", str(save), "--rank", args.rank]
    if args.layers is not None:
        cmd += ["--layers", *map(str, args.layers)]
    if args.embedding:
        cmd.append("--embedding")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"{method} run failed:\n{proc.stderr[-3000:]}")


def compare(exact_path: Path, rand_path: Path) -> dict:
    import numpy as np

    from l2s_kit.analysis.spectrum import load_table

    ex, rd = load_table(exact_path), load_table(rand_path)
    m = rd.merge(ex[["name", "index", "sigma"]], on=["name", "index"], suffixes=("", "_exact"))
    top = m[m["index"] <= 10]
    rel = (top["sigma_exact"] - top["sigma"]).abs() / top["sigma_exact"]
    within = bool(((m["sigma_exact"] - m["sigma"]) <= m["error_bound"] + 1e-4).all())
    below = bool((m["sigma"] <= m["sigma_exact"] * (1 + 1e-5) + 1e-6).all())
    return {"top10_max_rel_error": float(rel.max()), "top10_mean_rel_error": float(rel.mean()),
            "within_bound": within, "never_above": below,
            "max_error_bound": float(np.nanmax(rd["error_bound"]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="qwen2-1.5b", help="synthetic pair shape (l2s_kit.zoo.synthetic)")
    p.add_argument("--workdir", default=str(ROOT / "data" / "bench"), help="cached pairs")
    p.add_argument("--layers", nargs="+", type=int, default=None, help="layers to time (all)")
    p.add_argument("--embedding", action="store_true",
                   help="with --layers: add the embedding matrix")
    p.add_argument("--rank", default="0.1", help="rank budget (fraction or int), default 0.1")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        one(args)
        return
    from merge_speed import ensure_pair

    base, model, built = ensure_pair(Path(args.workdir), args.size)
    what = (f"layers {args.layers}" if args.layers is not None else "every layer") + (
        " + embedding" if args.embedding or args.layers is None else "")
    print(f"spectrum of the {args.size} synthetic task vector ({what}), rank budget {args.rank}")
    with tempfile.TemporaryDirectory() as tmp:
        res = {m: measure(m, base, model, Path(tmp) / f"{m}.parquet", args)
               for m in ("exact", "randomized")}
        cmp = compare(Path(tmp) / "exact.parquet", Path(tmp) / "randomized.parquet")
    e, r = res["exact"], res["randomized"]
    print(f"\n{'':24}{'exact':>14}{'randomized':>14}")
    print(f"{'matrices':24}{e['matrices']:>14}{r['matrices']:>14}")
    print(f"{'parameters':24}{e['params']:>14,}{r['params']:>14,}")
    print(f"{'singular values':24}{e['values']:>14,}{r['values']:>14,}")
    print(f"{'wall time (s)':24}{e['seconds']:>14.1f}{r['seconds']:>14.1f}")
    print(f"{'peak RSS (MB)':24}{e['peak_rss_mb']:>14.0f}{r['peak_rss_mb']:>14.0f}")
    print(f"{'RSS after imports (MB)':24}{e['rss_imports_mb']:>14.0f}{r['rss_imports_mb']:>14.0f}")
    print(f"\nrandomized / exact time: {r['seconds'] / e['seconds']:.2f}")
    print(f"randomized top-10 singular values: max relative error "
          f"{cmp['top10_max_rel_error']:.2e} (mean {cmp['top10_mean_rel_error']:.2e}); every value "
          f"within its stated bound: {cmp['within_bound']} (largest bound "
          f"{cmp['max_error_bound']:.3g}); never above the exact value: {cmp['never_above']}")


if __name__ == "__main__":
    main()
