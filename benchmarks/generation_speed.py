"""Tokens per second of each way of generating, on the same prompts, with identical outputs checked.

Two workloads, each at one batch size for every way (``--batch``):

- ``family``: the built-in family's System 2 on its test split, greedy, as a study runs it. Its
  response lengths (34 to 68 tokens) grow with the level and so do its prompts, so static batches
  of prompts sorted by length are already grouped by length: little is lost to waiting there.
- ``long-tail``: a small Qwen2-shaped model (random weights, ``small`` shape, 2k context) whose
  rows are stopped at lengths drawn from a log-normal fitted to R1-style responses (median 60
  tokens, σ = 1, capped at 10×: 600), as reasoning responses are: a static batch runs until its
  longest row ends, so most of its steps decode rows that have ended.

Ways (the same batch size each):

- ``generate``: plain ``model.generate`` on static batches, prompts in the order given;
- ``static``: the kit's static batches (``TransformersBackend(scheduler="static")``: prompts sorted
  by length, ``generate`` per batch) — the kit before continuous batching;
- ``refill``: the kit's default, continuous batching (:mod:`l2s_kit.evaluate.refill`);
- ``vllm``: when vLLM imports (GPU machines), the same prompts through ``vllm.LLM.generate``.

Every way is warmed up once, then the ways run ``--repeat`` times in alternating order (the first
batch of a new size is several times slower than the next); the median time is kept. The greedy
outputs of every way are compared with ``generate``'s (token ids, row by row). Rows go to
``--out`` (CSV) as they come; the table prints at the end. It is a measurement, not a test: the
script exits 0 whatever it finds (the tests check identical outputs and the out-of-memory
back-off).

Run (from the repository root)::

    .venv/bin/python benchmarks/generation_speed.py                      # both workloads, CPU
    .venv/bin/python benchmarks/generation_speed.py --quick              # the suite's smoke run
    python benchmarks/generation_speed.py --device cuda --shape qwen2.5-math-7b --batch 64 \\
        --workloads long-tail --rows 256                                  # the GPU rows
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

FIELDS = ["workload", "device", "shape", "way", "batch", "rows", "tokens", "seconds",
          "tokens_per_s", "ratio_to_generate", "ratio_to_static", "steps", "identical", "runs_s"]


def draw_lengths(n: int, seed: int = 0, median: float = 60, sigma: float = 1.0,
                 cap: int = 600) -> list[int]:
    """Lengths of R1-style responses: log-normal (median 60, σ 1), at least 2, at most 10×."""
    rng = random.Random(seed)
    return [max(2, min(cap, round(rng.lognormvariate(math.log(median), sigma))))
            for _ in range(n)]


class _Lengths:
    """Stops row r of a static ``generate`` batch at its drawn length (a StoppingCriteria)."""

    def __init__(self, lengths: list[int], prompt_len: int):
        self.lengths, self.prompt_len = torch.tensor(lengths), prompt_len

    def __call__(self, input_ids, scores, **kw):
        return (input_ids.shape[1] - self.prompt_len) >= self.lengths.to(input_ids.device)


def plain_generate(model, tok, prompts, batch, max_new, lengths=None):
    """``model.generate`` on static batches in the order given; each row's generated ids (cut at
    the first EOS, or at its drawn length)."""
    from transformers import GenerationConfig, StoppingCriteriaList

    eos = None if lengths else model.generation_config.eos_token_id
    cfg = GenerationConfig(max_new_tokens=max_new, do_sample=False, num_beams=1,
                           eos_token_id=eos, pad_token_id=tok.pad_token_id)
    out = []
    for k in range(0, len(prompts), batch):
        enc = tok(prompts[k:k + batch], return_tensors="pt", padding=True).to(model.device)
        p = enc["input_ids"].shape[1]
        stop = StoppingCriteriaList([_Lengths(lengths[k:k + batch], p)]) if lengths else None
        with torch.inference_mode():
            ids = model.generate(**enc, generation_config=cfg, stopping_criteria=stop)
        for r, row in enumerate(ids[:, p:].tolist()):
            n = lengths[k + r] if lengths else next(
                (i + 1 for i, t in enumerate(row) if t == eos), len(row))
            out.append(row[:n])
    return out


def refill_lengths(model, tok, prompts, batch, lengths):
    from l2s_kit.evaluate.refill import RefillDecoder

    d = RefillDecoder(model, tok, batch, choose=lambda logits, rows: logits.argmax(-1),
                      done=lambda r, ids: len(ids) >= lengths[r])
    return d.run(prompts, list(range(len(prompts)))), d.steps


def static_lengths(model, tok, prompts, batch, lengths):
    """The kit's static scheduler on the drawn lengths: prompts sorted by length, then plain
    ``generate`` per batch (what ``TransformersBackend(scheduler="static")`` does)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    ids = plain_generate(model, tok, [prompts[i] for i in order], batch, max(lengths),
                         [lengths[i] for i in order])
    out = [None] * len(prompts)
    for i, row in zip(order, ids):
        out[i] = row
    return out


def family_ways(batch: int, rows: int, device: str):
    import dataclasses

    from l2s_kit.evaluate import FAMILY_SETTINGS, TransformersBackend
    from l2s_kit.zoo import build_family, task

    fam = build_family(progress=False)
    prompts = [r["prompt"] for r in task.rows("test", rows)]
    settings = dataclasses.replace(FAMILY_SETTINGS, batch_size=batch)
    backend = TransformersBackend(fam.system2, device=device, progress=False)
    tok = backend.tokenizer

    def kit(scheduler):
        def run():
            backend.scheduler = scheduler
            gens = backend.generate(prompts, settings)
            ids = [tok(g[0].text, add_special_tokens=False)["input_ids"] for g in gens]
            return ids, sum(g[0].n_tokens for g in gens), getattr(backend, "last_steps", None)
        return run

    def generate():
        ids = plain_generate(backend.model, tok, prompts, batch, settings.max_new_tokens)
        text = [tok(tok.decode(r, skip_special_tokens=True), add_special_tokens=False)["input_ids"]
                for r in ids]
        return text, sum(len(r) for r in ids), None

    ways = {"generate": generate, "static": kit("static"), "refill": kit("refill")}
    vllm = _vllm_way(str(fam.system2), prompts, settings.max_new_tokens, None, tok)
    if vllm:
        ways["vllm"] = vllm
    return ways, "family", len(prompts)


def long_tail_ways(batch: int, rows: int, device: str, shape: str):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from l2s_kit.zoo.synthetic import qwen2_config, save_word_tokenizer

    cfg = {**qwen2_config(shape), "max_position_embeddings": 2048}
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in cfg.items()
                                            if k != "torch_dtype"})).to(device, dtype).eval()
    folder = Path(tempfile.mkdtemp(prefix="l2s-gen-"))
    save_word_tokenizer(folder, cfg["vocab_size"])
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    words = ["Q", "A", "+", "-", "*", "=", "Wait", "let", "me", "So", "the", "answer", "is"]
    rng = random.Random(1)
    prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 24)))
               for _ in range(rows)]
    lengths = draw_lengths(rows)

    def counted(ids):
        return ids, sum(len(r) for r in ids), None

    ways = {
        "generate": lambda: counted(plain_generate(model, tok, prompts, batch, max(lengths),
                                                   lengths)),
        "static": lambda: counted(static_lengths(model, tok, prompts, batch, lengths)),
        "refill": lambda: (lambda ids_steps: (ids_steps[0], sum(lengths), ids_steps[1]))(
            refill_lengths(model, tok, prompts, batch, lengths)),
    }
    return ways, "long-tail", len(prompts)


def _vllm_way(path, prompts, max_new, lengths, tok):
    try:
        import vllm  # noqa: F401
    except ImportError:
        return None

    def run():
        from vllm import LLM, SamplingParams

        llm = getattr(_vllm_way, "llm", None) or LLM(path, dtype="auto")
        _vllm_way.llm = llm
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=max_new))
        ids = [tok(o.outputs[0].text, add_special_tokens=False)["input_ids"] for o in outs]
        return ids, sum(len(o.outputs[0].token_ids) for o in outs), None

    return run


def measure(ways: dict, repeat: int) -> dict:
    """Warm each way up once, then run them ``repeat`` times in alternating order."""
    results = {name: run() for name, run in ways.items()}  # warm-up: also the outputs compared
    times = {name: [] for name in ways}
    names = list(ways)
    for k in range(repeat):
        for name in (names if k % 2 == 0 else names[::-1]):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            ways[name]()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {name: (results[name], statistics.median(times[name]), times[name]) for name in ways}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", nargs="+", default=["family", "long-tail"],
                    choices=["family", "long-tail"])
    ap.add_argument("--batch", type=int, default=32, help="rows decoded at once, every way")
    ap.add_argument("--rows", type=int, default=None,
                    help="prompts (family: per level; default 100 / long-tail: 256)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="small", help="long-tail model shape (zoo.synthetic)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/generation_speed.csv")
    ap.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.quick:
        a.rows, a.repeat, a.batch = a.rows or 8, 1, min(a.batch, 8)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = []
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for workload in a.workloads:
            if workload == "family":
                ways, name, n = family_ways(a.batch, a.rows or 100, a.device)
                shape = "family"
            else:
                ways, name, n = long_tail_ways(a.batch, a.rows or 256, a.device, a.shape)
                shape = a.shape
            got = measure(ways, a.repeat)
            ref_ids = got["generate"][0][0]
            base = {k: got[k][0][1] / got[k][1] for k in got}
            for way, ((ids, tokens, steps), seconds, runs) in got.items():
                row = {"workload": name, "device": a.device, "shape": shape, "way": way,
                       "batch": a.batch, "rows": n, "tokens": tokens,
                       "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
                       "ratio_to_generate": round(base[way] / base["generate"], 3),
                       "ratio_to_static": round(base[way] / base["static"], 3),
                       "steps": steps, "identical": ids == ref_ids,
                       "runs_s": " ".join(f"{t:.3f}" for t in runs)}
                w.writerow(row)
                f.flush()
                table.append(row)
    cols = ["workload", "way", "batch", "rows", "tokens", "seconds", "tokens_per_s",
            "ratio_to_generate", "ratio_to_static", "steps", "identical"]
    print(" | ".join(cols))
    for r in table:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"rows in {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
