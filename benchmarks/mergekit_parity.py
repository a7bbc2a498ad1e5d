"""Do mergekit's own YAML configs give the same tensors through ``l2s merge`` as through mergekit?

For each method mergekit and l2s_kit share, this script writes one mergekit config, merges a
synthetic Qwen2-shaped pair (``l2s_kit.zoo.synthetic.make_pair``, float32, so that both compute
on the same numbers) with mergekit's ``mergekit-yaml`` and with ``l2s merge`` on the *same YAML
file*, and compares every tensor: the largest absolute difference, relative to the largest
magnitude of the merged tensor, and the share of entries that are bitwise equal.

mergekit's pins (transformers, pydantic, ...) may clash with this environment's, so it runs from
its own virtual environment, named by ``--mergekit-python``::

    python3 -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install mergekit     # once
    .venv/bin/python benchmarks/mergekit_parity.py --mergekit-python /tmp/mkvenv/bin/python

Random methods (``dare_*``, ``della*``) draw their masks from different generators in the two
tools, so their tensors cannot match; the script reports, instead of a difference, the share of
each task vector's entries kept (mergekit's and ours, which should agree with the density).
This is a measurement, not a test: it prints a table, saves it to ``<workdir>/parity.csv``, and
exits 0; ``tests/test_mergekit_family.py`` checks the maths against hand-worked values.
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

# method -> (method parameters, per-model parameters of System 2 (or, for rows "two models", of
# System 2 and of a second model: System 2 with other noise)), mergekit's names
CONFIGS: dict[str, tuple[dict, dict]] = {
    "task_arithmetic": ({"lambda": 0.7}, {"weight": 1.0}),
    "ties": ({"normalize": True}, {"weight": 1.0, "density": 0.2}),
    "breadcrumbs": ({}, {"weight": 1.0, "density": 0.8, "gamma": 0.02}),
    "breadcrumbs_ties": ({}, {"weight": 0.9, "density": 0.7, "gamma": 0.05}),
    "sce": ({"select_topk": 1.0}, {"weight": 1.0}),
    "slerp": ({"t": 0.4}, {}),
    "slerp (layer schedule)": ({"t": [{"filter": "self_attn", "value": [0.0, 0.5, 1.0]},
                                      {"filter": "mlp", "value": [1.0, 0.3]}, {"value": 0.6}]}, {}),
    "nuslerp": ({}, {"weight": 0.6}),
    "della": ({"lambda": 1.0}, {"weight": 1.0, "density": 0.5, "epsilon": 0.1}),
    "della_linear": ({}, {"weight": 1.0, "density": 0.4, "epsilon": 0.2}),
    "dare_ties": ({}, {"weight": 1.0, "density": 0.7}),
    # per-model weight gradients over the layers (mergekit's per-model tensor parameters)
    "task_arithmetic (per-model weight gradient)": ({}, {"weight": [0.2, 0.9]}),
    "ties (per-model weight gradient)": ({"lambda": 0.8}, {"weight": [1.0, 0.3], "density": 0.5}),
    "linear (per-model weight gradient)": ({}, {"weight": [0.2, 0.9]}),
    # per-model values that differ between two models (mergekit's per-model tensor parameters)
    "ties (per-model density, two models)": ({"normalize": True}, [
        {"weight": 1.0, "density": 0.3}, {"weight": 0.5, "density": 0.6}]),
    "breadcrumbs (per-model density and gamma, two models)": ({}, [
        {"weight": 1.0, "density": 0.8, "gamma": 0.02}, {"weight": 0.7, "density": 0.6}]),
    "nearswap": ({"t": 0.01}, {}),
    "multislerp": ({}, {"weight": 0.6}),
    "karcher": ({}, {}),
    "arcee_fusion": ({}, {}),
    "ram": ({"epsilon": 1e-3}, {}),
    "ramplus_tl": ({"r": 0.2, "alpha": 0.3, "epsilon": 1e-3}, {}),
}
# mergekit configs that list System 1 as a model and name no base
NO_BASE = {"multislerp": 0.4, "karcher": None}
RANDOM = {"della", "della_linear", "dare_ties"}


def config(name: str, base: Path, model: Path, model2: Path) -> dict:
    method = name.split(" ")[0]
    params, model_params = CONFIGS[name]
    if isinstance(model_params, list):
        return {"merge_method": method, "base_model": str(base), "dtype": "float32",
                "models": [{"model": str(m), "parameters": p}
                           for m, p in zip((model, model2), model_params)],
                **({"parameters": params} if params else {})}
    if method == "nuslerp":  # mergekit's nuslerp of two models, no base: weights give t
        return {"merge_method": "nuslerp", "dtype": "float32",
                "models": [{"model": str(base), "parameters": {"weight": 0.4}},
                           {"model": str(model), "parameters": model_params}]}
    if method in NO_BASE:
        first = {"model": str(base)}
        if NO_BASE[method] is not None:
            first["parameters"] = {"weight": NO_BASE[method]}
        second = {"model": str(model), **({"parameters": model_params} if model_params else {})}
        return {"merge_method": method, "dtype": "float32", "models": [first, second],
                **({"parameters": params} if params else {})}
    if method == "nearswap":  # mergekit's example: both listed, the base named
        return {"merge_method": method, "base_model": str(base), "dtype": "float32",
                "models": [{"model": str(base)}, {"model": str(model)}], "parameters": params}
    if method == "linear":  # no base: both models weighted, System 1 by the complement
        return {"merge_method": "linear", "dtype": "float32",
                "models": [{"model": str(base), "parameters": {"weight": [0.8, 0.1]}},
                           {"model": str(model), "parameters": model_params}]}
    if method == "slerp":  # mergekit's usual slerp config: both models listed, base named
        return {"merge_method": "slerp", "base_model": str(base), "dtype": "float32",
                "models": [{"model": str(base)}, {"model": str(model)}], "parameters": params}
    return {"merge_method": method, "base_model": str(base), "dtype": "float32",
            "models": [{"model": str(model), "parameters": model_params}],
            **({"parameters": params} if params else {})}


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def compare(ours: dict, theirs: dict, base: dict, model: dict, random: bool) -> dict:

    names = sorted(set(ours) & set(theirs))
    if random:  # masks differ: compare how much of each task vector survives
        def kept(merged):
            n = k = 0
            for name in names:
                d = (model[name] - base[name]).float()
                m = (merged[name] - base[name]).float()
                n += int((d != 0).sum())
                k += int(((m != 0) & (d != 0)).sum())
            return k / max(n, 1)
        return {"tensors": len(names), "kept_l2s": round(kept(ours), 4),
                "kept_mergekit": round(kept(theirs), 4)}
    worst, equal, total = 0.0, 0, 0
    for name in names:
        a, b = ours[name].float(), theirs[name].float()
        scale = max(float(b.abs().max()), 1e-12)
        worst = max(worst, float((a - b).abs().max()) / scale)
        equal += int((a == b).sum())
        total += a.numel()
    return {"tensors": len(names), "missing": len(set(theirs) ^ set(ours)),
            "max_rel_diff": f"{worst:.2e}", "bitwise_equal": f"{equal / total:.4%}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit-python", required=True,
                    help="the python of a virtual environment with mergekit installed")
    ap.add_argument("--workdir", default="data/bench/parity")
    ap.add_argument("--shape", default="tiny", help="synthetic pair shape (tiny, small, ...)")
    ap.add_argument("--methods", nargs="*", default=list(CONFIGS))
    args = ap.parse_args()
    import pandas as pd
    import yaml

    from l2s_kit.cli import main as l2s
    from l2s_kit.zoo.synthetic import make_pair

    work = Path(args.workdir)
    pair = work / f"pair-{args.shape}"
    if not (pair / "model").exists():
        make_pair(pair, args.shape, seed=1, delta_std=0.02)
    base, model = (pair / "base").resolve(), (pair / "model").resolve()
    model2 = (pair / "model2").resolve()
    if not model2.exists():
        make_pair(work / f"pair2-{args.shape}", args.shape, seed=1, delta_std=0.02,
                  delta_seed=2)
        (work / f"pair2-{args.shape}" / "model").rename(model2)
    tb, tm = tensors(base), tensors(model)
    rows = []
    for name in args.methods:
        slug = name.replace(" ", "-").replace("(", "").replace(")", "")
        cfg_path = work / f"{slug}.yaml"
        cfg_path.write_text(yaml.safe_dump(config(name, base, model, model2), sort_keys=False))
        mk_out, ours_out = work / f"mergekit-{slug}", work / f"l2s-{slug}"
        t0 = time.perf_counter()
        proc = subprocess.run([args.mergekit_python, "-m", "mergekit.scripts.run_yaml",
                               str(cfg_path), str(mk_out), "--allow-crimes", "--quiet"],
                              capture_output=True, text=True)
        mk_s = time.perf_counter() - t0
        if proc.returncode != 0:
            rows.append({"method": name, "error": "mergekit: " + proc.stderr.strip()[-300:]})
            continue
        t0 = time.perf_counter()
        rc = l2s(["merge", str(cfg_path), "--out", str(ours_out), "--overwrite", "--quiet"])
        ours_s = time.perf_counter() - t0
        if rc != 0:
            rows.append({"method": name, "error": f"l2s merge exited {rc}"})
            continue
        row = {"method": name, **compare(tensors(ours_out), tensors(mk_out), tb, tm,
                                         name.split(" ")[0] in RANDOM),
               "l2s_s": round(ours_s, 2), "mergekit_s": round(mk_s, 2)}
        notes = json.loads((ours_out / "l2s_merge.json").read_text()).get("notes", [])
        row["notes"] = len(notes)
        rows.append(row)
        print(row, flush=True)
    df = pd.DataFrame(rows)
    work.mkdir(parents=True, exist_ok=True)
    df.to_csv(work / "parity.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
