"""Does `l2s tune` find a merge at least as short as the study grid's best, and with how many
evaluations? (Started from the grid's settings, the default, and from scratch.)

On the built-in family's validation split (``--n-per-level`` problems per level, as ``l2s study``
uses), for each method: every merge of the study's grid (``l2s_kit.study.run.GRID``) of that
method, and ``l2s tune`` with ``--trials`` trials (objective ``shortest``, the same tolerance);
each chooses its shortest merge within ``--tolerance`` points of System 2. Evaluations are
problems generated: the grid's merges × the validation problems; the tuner's subset rungs plus
its promoted candidates. Both then report their choice on the test split.

    .venv/bin/python benchmarks/tune_vs_grid.py                  # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/tune_vs_grid.py --methods ties --trials 20

This is a measurement, not a test: it prints a table (and saves it to ``<workdir>/tune_vs_grid.csv``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="*", default=["task_arithmetic", "ties", "dare"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--n-per-level", type=int, default=100)
    ap.add_argument("--tolerance", type=float, default=3.0)
    ap.add_argument("--workdir", default="data/bench/tune")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import pandas as pd
    import transformers

    from l2s_kit.merging.methods.settings import GRID
    from l2s_kit.study.explorer import Explorer
    from l2s_kit.study.setup import family_setup
    from l2s_kit.study.tune import tune

    transformers.logging.disable_progress_bar()
    setup = family_setup(n_per_level=args.n_per_level, progress=False)
    val = Explorer(setup, split="validation", workdir=args.workdir)
    test = Explorer(setup, split="test", workdir=args.workdir)
    rows = []
    for method in args.methods:
        grid = [(m, p) for m, p in GRID if m == method]
        s = val.sweep(grid)
        ref = s[s["model"] == "system2"].iloc[0]
        ok = s[(s["method"] == method) & (s["accuracy"] >= ref["accuracy"] - args.tolerance)]
        best = ok.sort_values(["mean_tokens", "accuracy"], ascending=[True, False]).head(1)
        g_test = test.sweep([grid[i] for i in best.index - 2]) if len(best) else None
        row = {"method": method, "search": f"grid ({len(grid)} merges)",
               "evaluations": len(grid) * len(val.rows)}
        if len(best):
            b, t = best.iloc[0], g_test.iloc[-1]
            row.update(chosen=b["model"], val_accuracy=round(b["accuracy"], 1),
                       val_tokens=round(b["mean_tokens"], 1),
                       test=f"{t['accuracy']:.1f}% / {t['mean_tokens']:.1f}")
        rows.append(row)
        print(row, flush=True)
        for warm in (True, False):
            r = tune(method, setup=setup, trials=args.trials, tolerance=args.tolerance,
                     seed=args.seed, workdir=args.workdir, progress=False, warm_start=warm)
            row = {"method": method, "search": f"tune {'from the grid' if warm else 'from scratch'}"
                   f" ({len(r.trials)} trials, {int((r.trials['rung'] == 'validation').sum())} "
                   "promoted)", "evaluations": r.evaluations}
            if len(r.chosen):
                c, t = r.chosen.iloc[0], r.test.iloc[-1]
                row.update(chosen=c["model"], val_accuracy=round(c["accuracy"], 1),
                           val_tokens=round(c["mean_tokens"], 1),
                           test=f"{t['accuracy']:.1f}% / {t['mean_tokens']:.1f}")
            rows.append(row)
            print(row, flush=True)
    df = pd.DataFrame(rows)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    df.to_csv(Path(args.workdir) / "tune_vs_grid.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(df.to_string(index=False))
    val.close()
    test.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
