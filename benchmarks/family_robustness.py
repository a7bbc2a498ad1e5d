"""Does the built-in family's long-to-short effect survive retraining? Builds the family with
several seeds and thread counts (standing in for other machines: training repeats bit for bit only
for one machine and thread count), runs the study's choice on each (task arithmetic over a grid of
α, chosen on validation: the shortest within ``--tolerance`` points of System 2) and the paper's
TIES setting (k = 0.8, α = 1), and prints one row per build: System 1 / System 2 accuracy and
length on test, the chosen merge with its accuracy and length change, TIES's, and whether each
meets the family's promise (a chosen TA merge within 3 points and at least 30% shorter; TIES
shorter than System 2 within 5 points).

    python benchmarks/family_robustness.py                       # 5 seeds × 1, 2, 4 threads
    python benchmarks/family_robustness.py --seeds 0 1 --threads 2 --n-per-level 40
    python benchmarks/family_robustness.py --shipped --n-per-level 4   # the quick check (tests)

Builds run one at a time unless ``--jobs`` says otherwise (two builds of two threads on two cores
slow each other down many times over); each row is appended to ``--csv`` as it comes, and a build
or study already done under ``--root`` is reused.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

ALPHAS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7)
TIES = ("ties", {"k": 0.8, "alpha": 1.0})


def one(seed: int, threads: int, root: Path, n_per_level: int, tolerance: float,
        shipped: bool = False) -> dict:
    import torch

    from l2s_kit.study import run_study
    from l2s_kit.zoo import FamilySpec

    torch.set_num_threads(threads)
    family = {} if shipped else {"family_root": root / "zoo",
                                 "family_spec": FamilySpec(seed=seed, threads=threads)}
    grid = [("task_arithmetic", {"alpha": a}) for a in ALPHAS] + [TIES]
    where = root / ("shipped" if shipped else f"seed{seed}-threads{threads}")
    r = run_study(where / "runs", where / "figures", n_per_level=n_per_level, grid=grid,
                  tolerance=tolerance, progress=False, overwrite=True, **family)
    t = r.summary[r.summary["split"] == "test"].set_index("model")
    s1, s2 = t.loc["system1"], t.loc["system2"]
    ta = t[(t["method"] == "task_arithmetic") & t["selected"]]
    ties = t[t["method"] == "ties"].iloc[0]
    row = {"seed": seed, "threads": threads, "base_steps": r.family.manifest.get("base_steps"),
           "s1_acc": s1["accuracy"], "s1_tokens": s1["mean_tokens"],
           "s2_acc": s2["accuracy"], "s2_tokens": s2["mean_tokens"]}
    if len(ta):
        m = ta.iloc[0]
        row.update(ta_chosen=m["parameters"], ta_acc_change=m["accuracy_change"],
                   ta_length_change=m["length_change"])
    else:
        row.update(ta_chosen=None, ta_acc_change=float("nan"), ta_length_change=float("nan"))
    row.update(ties_acc_change=ties["accuracy_change"], ties_length_change=ties["length_change"])
    row["ta_ok"] = bool(len(ta) and row["ta_acc_change"] >= -3 and row["ta_length_change"] <= -30)
    row["ties_ok"] = bool(row["ties_acc_change"] >= -5 and row["ties_length_change"] < 0)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--n-per-level", type=int, default=60, help="problems per level and split")
    ap.add_argument("--tolerance", type=float, default=3.0, help="accuracy points of System 2")
    ap.add_argument("--root", default="data/bench/family_robustness", help="builds and studies")
    ap.add_argument("--csv", default=None, help="rows as they come (default: ROOT/rows.csv)")
    ap.add_argument("--jobs", type=int, default=1, help="builds at once (mind the cores)")
    ap.add_argument("--shipped", action="store_true",
                    help="only the family shipped with the package (no training: the quick check)")
    a = ap.parse_args(argv)
    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    csv = Path(a.csv) if a.csv else root / "rows.csv"
    todo = [(0, 2)] if a.shipped else [(s, t) for s in a.seeds for t in a.threads]
    what = ("the shipped family" if a.shipped
            else f"{len(todo)} builds (seeds {a.seeds} × threads {a.threads})")
    print(f"{what}, {a.jobs} at a time, {os.cpu_count()} cores; rows to {csv}", flush=True)
    rows = []
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        futures = [pool.submit(one, s, t, root, a.n_per_level, a.tolerance, a.shipped)
                   for s, t in todo]
        for f in futures:
            rows.append(f.result())
            pd.DataFrame([rows[-1]]).to_csv(csv, mode="a", header=not csv.exists(), index=False)
            print(pd.DataFrame([rows[-1]]).to_string(index=False, float_format="%.1f"), flush=True)
    table = pd.DataFrame(rows)
    print("\n" + table.to_markdown(index=False, floatfmt=".1f"))
    print(f"\nTA chosen within 3 points and ≥30% shorter: {table['ta_ok'].sum()}/{len(table)}; "
          f"TIES shorter within 5 points: {table['ties_ok'].sum()}/{len(table)}")
    return 0 if table["ta_ok"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
