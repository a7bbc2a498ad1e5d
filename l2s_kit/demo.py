"""The end-to-end demo: generate a System 1 / System 2 pair, merge it with every method, check it.

Until the built-in model family lands, the pair is synthetic (random Qwen2 weights, System 2 =
System 1 + a task vector). The demo exercises the real path a user takes with real checkpoints:
recipe → streamed merge → checkpoint folder → ``transformers`` loads it and generates.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from l2s_kit.checkpoint import Checkpoint
from l2s_kit.merging import PRESETS, load_recipe, merge, read_merge_info

# The recipes the demo runs: the paper's 7B settings, then a small sweep of the scale α.
DEMO_RUNS: list[tuple[str, dict]] = [
    ("average", {}),
    *[("task_arithmetic", {"alpha": a}) for a in (0.3, 0.5, 0.7, 1.0)],
    ("ties", PRESETS["ties-7b"]["parameters"]),
    ("ties", {"k": 0.8, "alpha": 1.0, "trim": "topk"}),
    ("ties", {"k": 0.8, "alpha": 1.0, "trim": "global"}),
    ("dare", PRESETS["dare-7b"]["parameters"]),
    ("dare_ties", {"p": 0.3, "alpha": 1.0}),
]


def _distance(a: Checkpoint, b: Checkpoint) -> float:
    """Relative L2 distance ‖a − b‖ / ‖b‖ over the tensors both hold."""
    num = den = 0.0
    for n in b.names:
        if n in a:
            x, y = a.read(n).double(), b.read(n).double()
            if x.shape == y.shape:
                num += float(((x - y) ** 2).sum())
                den += float((y**2).sum())
    return (num / den) ** 0.5 if den else float("nan")


def run_demo(workdir: Path, size: str = "small", out_dir: Path = Path("figures/demo")) -> pd.DataFrame:
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.disable_progress_bar()

    from l2s_kit.synthetic import make_pair

    workdir = Path(workdir)
    pair = workdir / f"pair-{size}"
    if not (pair / "model").exists():
        print(f"building a synthetic {size} System 1 / System 2 pair in {pair}")
        make_pair(pair, size, seed=0, delta_std=0.01, progress=True)
    s1, s2 = Checkpoint(pair / "base"), Checkpoint(pair / "model")
    rows = []
    for method, params in DEMO_RUNS:
        recipe = load_recipe({"merge_method": method, "base_model": str(s1.path),
                              "models": [{"model": str(s2.path)}], "parameters": params})
        out = workdir / "merges" / f"{method}-{recipe.hash}"
        t0 = time.perf_counter()
        cached = out.exists()  # merges are reused: the folder only exists once complete
        if not cached:
            merge(recipe, out, progress=False)
        seconds = float("nan") if cached else time.perf_counter() - t0
        merged = Checkpoint(out)
        model = AutoModelForCausalLM.from_pretrained(out)
        prompt = torch.tensor([[3, 21, 5, 24, 8]])  # "Q 3 + 6 =" in the pair's tokenizer
        with torch.no_grad():
            gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                 do_sample=False, pad_token_id=0)
        rows.append({
            "method": method,
            "parameters": ", ".join(f"{k}={v}" for k, v in recipe.parameters.items()),
            "recipe_hash": recipe.hash,
            "weights_hash": read_merge_info(out)["weights_hash"][:16],
            "dist_to_system1": _distance(merged, s1),
            "dist_to_system2": _distance(merged, s2),
            "merge_seconds": round(seconds, 3),
            "cached": cached,
            "generated_ids": " ".join(map(str, gen[0, prompt.shape[1]:].tolist())),
            "path": str(out),
        })
    df = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "merge_summary.csv", index=False)
    with pd.option_context("display.width", 160, "display.max_colwidth", 40):
        print(df.drop(columns=["path"]).to_string(index=False))
    print(f"\nmerged checkpoints: {workdir / 'merges'}\nsummary: {out_dir / 'merge_summary.csv'}")
    return df
