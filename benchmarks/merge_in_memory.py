"""Per merge evaluated: swapping the merged weights into a loaded System 1 (in memory) against
merging to disk and loading the merged folder, as a ratio measured in the same run.

What is measured, on a synthetic Qwen2-1.5B-shaped bf16 pair (``l2s_kit.zoo.synthetic.make_pair``,
built once under ``--workdir``), task arithmetic α = 0.7, merge + load time only (no generation):

- in memory: ``l2s_kit.study.runner.merge_into_base`` with System 1 already loaded (as every merge
  after the first of a study or explorer session finds it): the merge in memory, the merged
  state's weights hash, ``load_state_dict`` into the loaded model;
- on disk: ``l2s_kit.merge`` into a fresh folder (streamed, sharded, hashed, fsync'd), then
  ``AutoModelForCausalLM.from_pretrained`` of that folder (what evaluating a merge on disk costs
  before the first token).

Each is repeated (``--repeat``, default 3, interleaved) and the minimum kept. Also measured: the
explorer's seconds per merge on the built-in family (merge into the loaded System 1 only).
Prints a table and saves it to ``<workdir>/merge_in_memory.csv``; it is a measurement, not a test.

Run (from the repository root)::

    .venv/bin/python benchmarks/merge_in_memory.py                    # qwen2-1.5b (~6 GB of pair)
    .venv/bin/python benchmarks/merge_in_memory.py --size small --repeat 1   # smoke run
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="qwen2-1.5b", help="synthetic shape (l2s_kit.zoo.synthetic)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="data/bench/merge_in_memory")
    args = ap.parse_args()

    import pandas as pd
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    import l2s_kit
    from l2s_kit.merging import load_recipe
    from l2s_kit.study.runner import _LOADED, merge_into_base
    from l2s_kit.zoo.synthetic import make_pair

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    work = Path(args.workdir)
    pair = work / args.size
    if not (pair / "model" / "config.json").is_file():
        shutil.rmtree(pair, ignore_errors=True)
        print(f"building the {args.size} pair in {pair} (once)")
        make_pair(pair, args.size, seed=0, dtype=torch.bfloat16, progress=True)
    recipe = load_recipe({"merge_method": "task_arithmetic", "base_model": str(pair / "base"),
                          "models": [{"model": str(pair / "model")}], "parameters": {"alpha": 0.7}})

    t0 = time.perf_counter()
    merge_into_base(recipe)  # the first merge also loads System 1
    first = time.perf_counter() - t0
    memory, disk = [], []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        merge_into_base(recipe)
        memory.append(time.perf_counter() - t0)
        out = work / "out" / f"ta-{i}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        l2s_kit.merge(recipe, out, progress=False)
        model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
        disk.append(time.perf_counter() - t0)
        del model
        shutil.rmtree(out, ignore_errors=True)
    _LOADED.clear()

    from l2s_kit.zoo import build_family

    fam = build_family(progress=False)
    fam_recipe = {"merge_method": "task_arithmetic", "base_model": str(fam.system1),
                  "models": [{"model": str(fam.system2)}], "parameters": {"alpha": 0.2}}
    merge_into_base(load_recipe(fam_recipe))
    per_merge = []
    for a in (0.1, 0.2, 0.3, 0.5, 0.7):
        t0 = time.perf_counter()
        merge_into_base(load_recipe({**fam_recipe, "parameters": {"alpha": a}}))
        per_merge.append(time.perf_counter() - t0)

    rows = [
        {"what": f"{args.size}: in memory (System 1 loaded)", "seconds": min(memory)},
        {"what": f"{args.size}: merge to disk + load", "seconds": min(disk)},
        {"what": f"{args.size}: first in-memory merge (loads System 1)", "seconds": first},
        {"what": "family: explorer merge (System 1 loaded)", "seconds": min(per_merge)},
    ]
    table = pd.DataFrame(rows)
    work.mkdir(parents=True, exist_ok=True)
    table.to_csv(work / "merge_in_memory.csv", index=False)
    print(table.to_string(index=False, float_format="%.2f"))
    print(f"\ndisk / memory per merge: {min(disk) / min(memory):.1f}x "
          f"(min of {args.repeat}, interleaved, same process)")


if __name__ == "__main__":
    main()
