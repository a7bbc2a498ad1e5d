"""The GPU paths, measured in one short run: merges, evaluation and the spectrum on CUDA against CPU.

Meant for a machine with one CUDA GPU (run by ``benchmarks/gpu_check.sh``); every step is timed
on ``cuda`` and on ``cpu`` where that fits the time, and a table is printed (and saved to
``<workdir>/gpu_check.csv``):

1. task arithmetic and per-tensor TIES of a synthetic pair of ``--size`` (default the
   Qwen2.5-Math-7B shape, bf16, built once), ``device: cuda`` against ``cpu`` (the CPU TIES of a
   7B takes minutes: ``--cpu-ties`` to include it), with the weights hashes compared: TA's must
   be equal, TIES's may differ at the trim boundary only if the threshold search differs;
2. the built-in family's System 2 evaluated on its test split (``--n-per-level``) with the
   transformers backend on cuda against cpu, accuracy compared;
3. the randomized spectrum of one decoder layer of the pair's task vector on cuda against cpu,
   the top singular values compared;
4. AIM's layer-by-layer activation statistics of the pair's System 1 (``--aim-samples`` family
   calibration texts) on cuda against cpu, the largest relative difference reported.

    bash benchmarks/gpu_check.sh                     # on the GPU machine: everything, ~6 min
    .venv/bin/python benchmarks/gpu_check.py --size tiny --device cpu   # a dry run here

This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="qwen2.5-math-7b", help="synthetic pair shape")
    ap.add_argument("--device", default="cuda", help="the accelerator (cuda, cuda:0)")
    ap.add_argument("--workdir", default="/tmp/l2s_gpu_check")
    ap.add_argument("--cpu-ties", action="store_true", help="also TIES on CPU (slow for a 7B)")
    ap.add_argument("--n-per-level", type=int, default=40)
    ap.add_argument("--aim-samples", type=int, default=16)
    args = ap.parse_args()
    import pandas as pd
    import torch

    import l2s_kit
    from l2s_kit.analysis.spectrum import spectrum_values
    from l2s_kit.zoo.synthetic import make_pair

    dev = args.device
    rows = []

    def row(step, where, seconds, **kw):
        rows.append({"step": step, "device": where, "seconds": round(seconds, 2), **kw})
        print(rows[-1], flush=True)

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""), flush=True)
    work = Path(args.workdir)
    pair = work / f"pair-{args.size}"
    if not (pair / "model").exists():
        _, s = timed(lambda: make_pair(pair, args.size, seed=0, dtype=torch.bfloat16,
                                       delta_std=0.005))
        row("build the pair", "cpu", s, size=args.size)
    base, model = pair / "base", pair / "model"

    def merge(method, params, where):
        r = {"merge_method": method, "base_model": str(base), "models": [{"model": str(model)}],
             "parameters": params}
        out = work / f"out-{method}-{where.replace(':', '')}"
        res, s = timed(lambda: l2s_kit.merge(r, out, overwrite=True, device=where,
                                             progress=False))
        row(f"{method} merge", where, s, weights_hash=res.weights_hash[:12])
        return res.weights_hash

    ta = {"alpha": 0.7}
    ties = {"k": 0.8, "alpha": 1.0}
    h_gpu = merge("task_arithmetic", ta, dev)
    h_cpu = merge("task_arithmetic", ta, "cpu")
    rows[-1]["same_as_gpu"] = h_gpu == h_cpu
    merge("ties", ties, dev)
    if args.cpu_ties:
        merge("ties", ties, "cpu")

    from l2s_kit.study.explorer import Explorer
    from l2s_kit.study.setup import family_setup

    setup = family_setup(n_per_level=args.n_per_level, progress=False)
    for where in (dev, "cpu"):
        ex = Explorer(setup, split="test", workdir=work / f"eval-{where.replace(':', '')}",
                      device=where)
        df, s = timed(lambda ex=ex: ex.responses("system2"))
        row("family System 2 on test", where, s, problems=len(df),
            accuracy=round(100 * float(df["correct"].mean()), 1))

    for where in (dev, "cpu"):
        v, s = timed(lambda where=where: spectrum_values(base, model, layers=[0],
                                                          method="randomized", device=where,
                                                          progress=False))
        top = v.sort_values("sigma", ascending=False)["sigma"].head(3).round(5).tolist()
        row("randomized spectrum, layer 0", where, s, matrices=v["name"].nunique(), top=top)

    from l2s_kit.merging.calibration.activations import activation_stats
    from l2s_kit.merging.calibration.sets import CalibrationSpec

    spec = CalibrationSpec("family", "question+both", samples=args.aim_samples, max_tokens=256)
    stats = {}
    for where in (dev, "cpu"):
        stats[where], s = timed(lambda where=where: activation_stats(
            base, spec, cache=False, device=where))
        row("AIM statistics (layer by layer)", where, s, modules=len(stats[where]))
    rows[-1]["max_rel_diff"] = float(max(
        ((stats[dev][k] - stats["cpu"][k]).abs().max() / stats["cpu"][k].abs().max()).item()
        for k in stats["cpu"]))

    df = pd.DataFrame(rows)
    df.to_csv(work / "gpu_check.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
