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
    cp data/bench/parity/parity.csv benchmarks/results/mergekit_parity.csv
    .venv/bin/python benchmarks/mergekit_parity.py --markdown benchmarks/results/mergekit_parity.csv

Random methods (``dare_*``, ``della*``) draw their masks from different generators in the two
tools, so their tensors cannot match; the script reports, instead of a difference, the share of
each task vector's entries kept (mergekit's and ours, which should agree with the density).
This is a measurement, not a test: it prints a table, saves it to ``<workdir>/parity.csv``, and
exits 0; ``tests/test_mergekit_family.py`` checks the maths against hand-worked values.

``--examples`` compares instead mergekit's own example configs (``benchmarks/mergekit_examples``,
unchanged), merged by both tools from one hub cache holding tiny stand-ins under the ids they
name (``models.yaml`` there), the network off; its table goes to ``<workdir>/examples.csv``.
``l2s merge`` reads each file unchanged. mergekit 0.1.5 lists a hub repository's files online
even when it is cached (``ModelReference.local_path``), so it cannot merge hub ids offline: it
reads a copy of the file with each id replaced by the id's folder in the same cache, and writes
no model card (its card looks the ids up online too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "benchmarks" / "mergekit_examples"

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
    "ties (normalize false, two models)": ({"normalize": False}, [
        {"weight": 1.0, "density": 0.5}, {"weight": 0.7, "density": 0.5}]),
    "model_stock (two models)": ({}, [{}, {}]),
    "dare_linear": ({}, {"weight": 1.0, "density": 0.6}),
    "passthrough (layer stack: System 1's layers 0-1, System 2's layer 1)": ({}, {}),
    "task_arithmetic (tokenizer union, chat_template chatml; System 2 adds <think>)": (
        {"lambda": 0.5}, {"weight": 1.0}),
    "nearswap": ({"t": 0.01}, {}),
    "multislerp": ({}, {"weight": 0.6}),
    "karcher": ({}, {}),
    "arcee_fusion": ({}, {}),
    "ram": ({"epsilon": 1e-3}, {}),
    "ramplus_tl": ({"r": 0.2, "alpha": 0.3, "epsilon": 1e-3}, {}),
}
# each config as docs/methods.md names it (the table there is made by `--markdown` from the
# committed results/mergekit_parity.csv; a test checks they agree)
LABELS = {
    "task_arithmetic": "task_arithmetic (lambda 0.7)",
    "ties": "ties (density 0.2)",
    "breadcrumbs": "breadcrumbs (density 0.8, gamma 0.02)",
    "breadcrumbs_ties": "breadcrumbs_ties (density 0.7, gamma 0.05, weight 0.9)",
    "sce": "sce (select_topk 1)",
    "slerp": "slerp (t 0.4; base listed among models)",
    "slerp (layer schedule)": "slerp (t by filter: self_attn, mlp gradients, default)",
    "nuslerp": "nuslerp (two models, weights 0.4 / 0.6, no base)",
    "task_arithmetic (per-model weight gradient)":
        "task_arithmetic, per-model weight gradient [0.2, 0.9]",
    "ties (per-model weight gradient)":
        "ties (density 0.5, lambda 0.8), per-model weight gradient [1.0, 0.3]",
    "linear (per-model weight gradient)":
        "linear (no base; weights [0.8, 0.1] and [0.2, 0.9] over the layers)",
    "nearswap": "nearswap (t 0.01; base listed among models)",
    "multislerp": "multislerp (no base; weights 0.4 / 0.6)",
    "karcher": "karcher (no base)",
    "arcee_fusion": "arcee_fusion",
    "ram": "ram (epsilon 1e-3)",
    "ramplus_tl": "ramplus_tl (r 0.2, alpha 0.3, epsilon 1e-3)",
    "ties (per-model density, two models)": "ties, two models, per-model density 0.3 / 0.6",
    "breadcrumbs (per-model density and gamma, two models)":
        "breadcrumbs, two models, per-model density 0.8 / 0.6 and gamma 0.02 / 0.01",
    "ties (normalize false, two models)": "ties, two models, normalize false",
    "model_stock (two models)": "model_stock (two models)",
    "passthrough (layer stack: System 1's layers 0-1, System 2's layer 1)":
        "passthrough (System 1's layers 0–1, then System 2's layer 1)¹",
    "task_arithmetic (tokenizer union, chat_template chatml; System 2 adds <think>)":
        "task_arithmetic, tokenizer source union, chat_template chatml (System 2 adds "
        "`<think>`, `</think>`)²",
    "della": "della (density 0.5, epsilon 0.1)",
    "della_linear": "della_linear (density 0.4, epsilon 0.2)",
    "dare_ties": "dare_ties (density 0.7)",
    "dare_linear": "dare_linear (density 0.6)",
}


def _relative(value: str) -> str:
    v = float(value)
    return "0" if v == 0 else f"{v:.1e}"


def _bitwise(value: str) -> str:
    v = float(str(value).rstrip("%"))
    return "100%" if v == 100 else f"{v:.1f}%"


def markdown(df) -> str:
    """docs/methods.md's two parity tables from a parity.csv: the exact methods (largest
    difference over largest magnitude, share bitwise equal) and the random ones (share of the
    task vector kept by each tool)."""
    import pandas as pd

    exact = df[df["max_rel_diff"].notna()] if "max_rel_diff" in df else df.iloc[:0]
    random = df[df["kept_l2s"].notna()] if "kept_l2s" in df else df.iloc[:0]
    lines = ["| method (mergekit YAML) | tensors | largest difference / largest magnitude "
             "| bitwise equal |", "|---|---:|---:|---:|"]
    for r in exact.itertuples():
        lines.append(f"| {LABELS[r.method]} | {int(r.tensors)} | {_relative(r.max_rel_diff)} | "
                     f"{_bitwise(r.bitwise_equal)} |")
    lines += ["", "| random method (mergekit draws from torch's global generator: its share "
              "varies by ±0.5% between runs) | share of the task vector kept: l2s_kit | "
              "mergekit |", "|---|---:|---:|"]
    for r in random.itertuples():
        if pd.notna(r.kept_l2s):
            lines.append(f"| {LABELS[r.method]} | {100 * r.kept_l2s:.1f}% | "
                         f"{100 * r.kept_mergekit:.1f}% |")
    return "\n".join(lines) + "\n"


# mergekit configs that list System 1 as a model and name no base
NO_BASE = {"multislerp": 0.4, "karcher": None}
RANDOM = {"della", "della_linear", "dare_ties", "dare_linear"}


def config(name: str, base: Path, model: Path, model2: Path, think: tuple[Path, Path]) -> dict:
    method = name.split(" ")[0]
    params, model_params = CONFIGS[name]
    if method == "passthrough":
        return {"merge_method": "passthrough", "dtype": "float32", "slices": [
            {"sources": [{"model": str(base), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(model), "layer_range": [1, 2]}]}]}
    if "tokenizer union" in name:
        return {"merge_method": method, "base_model": str(think[0]), "dtype": "float32",
                "models": [{"model": str(think[1]), "parameters": model_params}],
                "parameters": params, "tokenizer": {"source": "union"},
                "chat_template": "chatml"}
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


def _example(yml: Path, variant: str, spec: dict, root: Path, env: dict, l2s: list,
             mergekit_python: str) -> dict:
    """One example through both tools: ``as written`` (l2s_kit computes in float32 and stores
    the file's dtype, mergekit computes in it), or with ``dtype: float32`` in both copies (the
    same numbers on both sides)."""
    import re

    text = yml.read_text()
    slug = yml.stem + ("-f32" if variant == "float32" else "")
    if variant == "float32":
        text = re.sub(r"(?m)^dtype: \w+", "dtype: float32", text)
    cfg = root / "work" / f"{slug}.yml"
    cfg.write_text(text)
    for repo in (r for fam in spec["families"].values() for r in fam["ids"]):
        snapshot = root / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots"
        text = text.replace(repo, str(next(snapshot.iterdir()).resolve()))
    mk_cfg = root / "work" / f"mergekit-{slug}.yml"
    mk_cfg.write_text(text)
    row = {"example": yml.name, "dtype": variant}
    outs = {}
    for tool, cmd in (("mergekit", [mergekit_python, "-m", "mergekit.scripts.run_yaml",
                                    mk_cfg.name, f"mergekit-{slug}", "--allow-crimes",
                                    "--no-write-model-card", "--quiet"]),
                      ("l2s", [*l2s, "merge", cfg.name, "--out", f"l2s-{slug}", "--overwrite",
                               "--quiet"])):
        out = root / "work" / f"{tool}-{slug}"
        if tool == "mergekit":
            shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root / "work", env=env, capture_output=True, text=True)
        row[f"{tool}_s"] = round(time.perf_counter() - t0, 2)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
            row[f"{tool}_error"] = " ".join(last)[-200:]
        if out.is_dir() and any(out.glob("*.safetensors")):  # mergekit may fail after them
            outs[tool] = tensors(out)
    if len(outs) == 2:
        row.update(compare(outs["l2s"], outs["mergekit"], {}, {}, False))
    return row


def run_examples(mergekit_python: str, work: Path) -> list[dict]:
    """mergekit's example configs through mergekit and through ``l2s merge`` (both as separate
    processes, in one folder, the hub cache of the stand-ins, offline); a row per example."""
    import yaml

    from l2s_kit.io.hub import place_in_cache
    from l2s_kit.zoo.synthetic import example_checkpoints

    spec = yaml.safe_load((EXAMPLES / "models.yaml").read_text())
    root = work / "examples"
    if not (root / "hub").exists():
        shutil.rmtree(root, ignore_errors=True)
        folders = example_checkpoints(root / "made", spec)
        (root / "work").mkdir(parents=True)
        for name in spec["local"]:
            shutil.copytree(folders[name], root / "work" / name)
        place_in_cache(root / "hub", {k: v for k, v in folders.items() if k not in spec["local"]})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str((root / "hub").resolve())}
    l2s = [sys.executable, "-c", "import sys; from l2s_kit.cli import main; sys.exit(main())"]
    rows = []
    for yml in sorted(EXAMPLES.glob("*.yml")):
        for variant in ("as written", "float32"):
            rows.append(_example(yml, variant, spec, root, env, l2s, mergekit_python))
            print(rows[-1], flush=True)
    return rows


def side_files(ours: Path, theirs: Path) -> dict:
    """Whether both folders' vocabularies and chat templates agree (where either has one)."""
    from transformers import AutoTokenizer

    from l2s_kit.merging.compat import chat_template

    out = {}
    ta, tb = chat_template(ours)[0], chat_template(theirs)[0]
    if ta or tb:
        out["template_equal"] = (ta or "").strip() == (tb or "").strip()
    if (ours / "tokenizer.json").exists() and (theirs / "tokenizer.json").exists():
        va = AutoTokenizer.from_pretrained(ours).get_vocab()
        vb = AutoTokenizer.from_pretrained(theirs).get_vocab()
        out["vocab_equal"] = va == vb
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit-python",
                    help="the python of a virtual environment with mergekit installed")
    ap.add_argument("--markdown", metavar="CSV",
                    help="print docs/methods.md's parity tables from a parity.csv, and exit")
    ap.add_argument("--workdir", default="data/bench/parity")
    ap.add_argument("--shape", default="tiny", help="synthetic pair shape (tiny, small, ...)")
    ap.add_argument("--methods", nargs="*", default=list(CONFIGS))
    ap.add_argument("--examples", action="store_true",
                    help="compare mergekit's own example configs instead (see above)")
    args = ap.parse_args()
    import pandas as pd
    import yaml

    if args.markdown:
        print(markdown(pd.read_csv(args.markdown)), end="")
        return 0
    if not args.mergekit_python:
        ap.error("--mergekit-python is required (the python of a mergekit environment)")
    if args.examples:
        work = Path(args.workdir)
        df = pd.DataFrame(run_examples(args.mergekit_python, work))
        df.to_csv(work / "examples.csv", index=False)
        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            print(df.to_string(index=False))
        return 0

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
    from l2s_kit.zoo.family import make_think_pair

    think = tuple(p.resolve() for p in (work / "think" / "base", work / "think" / "model"))
    if not think[1].exists():
        make_think_pair(work / "think")
    rows = []
    for name in args.methods:
        slug = name.replace(" ", "-").replace("(", "").replace(")", "")
        cfg_path = work / f"{slug}.yaml"
        cfg_path.write_text(yaml.safe_dump(config(name, base, model, model2, think),
                                           sort_keys=False))
        mk_out, ours_out = work / f"mergekit-{slug}", work / f"l2s-{slug}"
        shutil.rmtree(mk_out, ignore_errors=True)  # no stale tensors from an earlier run
        t0 = time.perf_counter()
        proc = subprocess.run([args.mergekit_python, "-m", "mergekit.scripts.run_yaml",
                               str(cfg_path), str(mk_out), "--allow-crimes", "--quiet"],
                              capture_output=True, text=True)
        mk_s = time.perf_counter() - t0
        mk_error = {}
        if proc.returncode != 0:
            mk_error = {"mergekit_error": " ".join(proc.stderr.strip().splitlines()[-1:])[-200:]}
            if not any(mk_out.glob("*.safetensors")):  # it may fail after writing its tensors
                rows.append({"method": name, **mk_error})
                continue
        t0 = time.perf_counter()
        rc = l2s(["merge", str(cfg_path), "--out", str(ours_out), "--overwrite", "--quiet"])
        ours_s = time.perf_counter() - t0
        if rc != 0:
            rows.append({"method": name, "error": f"l2s merge exited {rc}", **mk_error})
            continue
        row = {"method": name, **compare(tensors(ours_out), tensors(mk_out), tb, tm,
                                         name.split(" ")[0] in RANDOM),
               **side_files(ours_out, mk_out),
               "l2s_s": round(ours_s, 2), "mergekit_s": round(mk_s, 2), **mk_error}
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
