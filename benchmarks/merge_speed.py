"""Speed and peak memory of l2s_kit's streaming merge, as ratios to an I/O floor of the same run.

What is measured, per synthetic checkpoint pair (``l2s_kit.zoo.synthetic.make_pair``, bf16, Qwen2
shapes, built once and cached under ``--workdir``) and per method (task arithmetic, alpha 0.7;
per-tensor TIES, k 0.8, alpha 1.0):

- merge: wall time of ``l2s_kit.merge(recipe, out, progress=False, overwrite=True)`` plus an
  fsync of every file it wrote, and the peak resident memory of the process that ran it;
- I/O floor: the same reads and writes without any merging: every block of rows the merge's final
  pass reads, of both checkpoints, through ``Checkpoint.read`` (the merge's reader, same tensors,
  same row blocks, each block copied out so that its pages are really read), and the bytes of the
  base tensors (as many bytes as the merged output holds) written to files of the output's shard
  sizes in a temporary folder next to the output, then fsync'd and closed.

Every measurement runs in a fresh Python process (this script, ``--one ...``), so its peak RSS
is its own: VmHWM from /proc/self/status, which counts touched pages of memory-mapped files too
(``getrusage(RUSAGE_SELF).ru_maxrss`` is recorded as ``maxrss_mb`` in the CSV, but on Linux it
carries over the parent's RSS through fork and exec, so it cannot go below the driver's own peak:
hundreds of MB, GBs once the driver has built a pair).
The table also shows the RSS right after the imports (torch alone is a few hundred MB) and,
sampled every 20 ms from /proc/self/status, the peaks of anonymous and file-backed resident
memory. Caches are never dropped; instead every input file is read once, untimed, right before
each measurement (on machines that reclaim idle page cache quickly, a warm-up only at the start
would favour whatever runs first), and each measurement is repeated (``--repeat``, default 2,
runs interleaved) and the minimum time (and the minimum peak RSS) is kept.

Targets (printed as PASS/MISS; the script always exits 0, it is a measurement, not a test):
merge/floor time ratio <= 1.5 for task arithmetic and <= 3 for per-tensor TIES, peak RSS below
1500 MB for the qwen2-1.5b pair, and peak RSS not growing with model size (largest size at most
1.25 x the smallest). If mergekit is importable, or ``--mergekit-python`` names the python of a
virtual environment holding it (``python3 -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install
mergekit``), the same two merges also run through its ``mergekit-yaml`` on the same files and
are compared with ours.

Run (from the repository root)::

    .venv/bin/python benchmarks/merge_speed.py                        # qwen2-0.5b and qwen2-1.5b
    .venv/bin/python benchmarks/merge_speed.py --sizes qwen2-1.5b
    .venv/bin/python benchmarks/merge_speed.py --sizes small --methods ta --repeat 1   # smoke run

The first run builds the pairs (~1 GB per checkpoint for qwen2-0.5b, ~3 GB for qwen2-1.5b,
~15 GB for qwen2.5-math-7b); the table is also saved to ``<workdir>/merge_speed.csv``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = ["qwen2-0.5b", "qwen2-1.5b"]
METHODS: dict[str, dict] = {
    "ta": {"merge_method": "task_arithmetic", "parameters": {"alpha": 0.7}},
    "ties": {"merge_method": "ties", "parameters": {"k": 0.8, "alpha": 1.0}},
}
# The same merges for mergekit (density = 1 - k; TA's alpha as the model's weight).
MERGEKIT: dict[str, dict] = {
    "ta": {"merge_method": "task_arithmetic", "model_parameters": {"weight": 0.7},
           "parameters": {}},
    "ties": {"merge_method": "ties", "model_parameters": {"weight": 1.0, "density": 0.2},
             "parameters": {"normalize": True}},
}
RATIO_TARGET = {"ta": 1.5, "ties": 3.0}
RSS_TARGET_MB = 1500.0
RSS_TARGET_SIZE = "qwen2-1.5b"
RSS_GROWTH_MAX = 1.25
PAIR_SHARD_SIZE = 10**9  # input shards of 1 GB, so that the larger pairs are sharded
PAIR_SPEC = {"seed": 0, "dtype": "bfloat16", "shard_size": PAIR_SHARD_SIZE}
RESULT_TAG = "MERGE_SPEED_RESULT "
MB = 2**20


# -- memory of the current process ---------------------------------------------------------------
def _status_mb() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process in MB (Linux; empty elsewhere)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(val.split()[0]) / 1024
    except OSError:
        pass
    return out


def _maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    kib = resource.getrusage(who).ru_maxrss  # KiB on Linux (bytes on macOS)
    return kib / (MB if sys.platform == "darwin" else 1024)


def _peak_rss_mb() -> float:
    """Peak RSS of this process: VmHWM where Linux gives it, else ``ru_maxrss``.

    Linux carries ``ru_maxrss`` across ``exec``: a process started by ``subprocess`` reports at
    least the RSS its parent had when it forked (this driver, with torch and pandas imported: about
    400 MB), whatever the process itself used. VmHWM is the high-water mark of the process's own
    address space.
    """
    return _status_mb().get("VmHWM", _maxrss_mb())


class _Sampler:
    """Samples RssAnon/RssFile every ``interval`` seconds in a thread and keeps their maxima."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, val in _status_mb().items():
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], val)
            self._stop.wait(self.interval)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _fsync_tree(folder: Path) -> int:
    """fsync every file under ``folder`` (and the folder); return their total size in bytes."""
    total = 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            total += p.stat().st_size
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return total


# -- synthetic pairs -----------------------------------------------------------------------------
def pair_dir(workdir: Path, size: str) -> Path:
    return workdir / size


def ensure_pair(workdir: Path, size: str) -> tuple[Path, Path, float | None]:
    """(base, model, build seconds or None if reused) of the cached pair, built if missing."""
    import torch

    from l2s_kit.zoo.synthetic import make_pair

    d = pair_dir(workdir, size)
    marker = d / "READY.json"
    want = {"shape": size, **PAIR_SPEC}
    if marker.exists():
        have = json.loads(marker.read_text())
        if {k: have.get(k) for k in want} == want:
            return d / "base", d / "model", None
    print(f"building synthetic pair {size} in {d} ...", flush=True)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    base, model = make_pair(d, size, seed=PAIR_SPEC["seed"], dtype=torch.bfloat16,
                            shard_size=PAIR_SHARD_SIZE, progress=True)
    seconds = time.perf_counter() - t0
    marker.write_text(json.dumps({**want, "build_seconds": round(seconds, 1)}) + "\n")
    print(f"built {size} in {seconds:.1f} s", flush=True)
    return base, model, seconds


def warm_up(paths: list[Path]) -> float:
    """Read every file of the given checkpoint folders once (untimed page-cache warm-up)."""
    t0 = time.perf_counter()
    buf = bytearray(16 * MB)
    for folder in paths:
        for p in sorted(folder.glob("*.safetensors")):
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
    return time.perf_counter() - t0


# -- the measured processes (``--one``) ------------------------------------------------------------
def recipe(method: str, base: Path, model: Path) -> dict:
    return {**METHODS[method], "base_model": str(base), "models": [{"model": str(model)}]}


def one_merge(method: str, base: Path, model: Path, out: Path) -> dict:
    import l2s_kit

    r = recipe(method, base, model)
    rss0 = _status_mb().get("VmRSS", float("nan"))
    with _Sampler() as sampler:
        t0 = time.perf_counter()
        l2s_kit.merge(r, out, progress=False, overwrite=True)
        t1 = time.perf_counter()
        nbytes = _fsync_tree(out)
        t2 = time.perf_counter()
    return {"seconds": t2 - t0, "merge_seconds": t1 - t0, "sync_seconds": t2 - t1,
            "out_bytes": nbytes, "import_rss_mb": rss0, "peak_rss_mb": _peak_rss_mb(),
            "maxrss_mb": _maxrss_mb(),
            "peak_anon_mb": sampler.peak["RssAnon"], "peak_file_mb": sampler.peak["RssFile"]}


def one_floor(base: Path, model: Path, out: Path) -> dict:
    """Read what the merge reads, write as many bytes as it writes; no arithmetic."""
    from l2s_kit.io import Checkpoint, plan_shards, tensor_bytes
    from l2s_kit.merging import load_recipe, plan_merge

    inputs = [Checkpoint(base), Checkpoint(model)]
    jobs, _, _ = plan_merge(inputs, None)  # the merge's own plan: same tensors, same row blocks
    shard_size = load_recipe(recipe("ta", base, model)).shard_size
    shards = plan_shards([j.out for j in jobs], shard_size)
    by_name = {j.name: j for j in jobs}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.floor-", dir=out.parent))
    rss0 = _status_mb().get("VmRSS", float("nan"))
    try:
        with _Sampler() as sampler:
            t0 = time.perf_counter()
            nbytes = 0
            for si, shard in enumerate(shards):
                with open(tmp / f"shard-{si:05d}.bin", "wb") as f:
                    for info in shard:
                        job = by_name[info.name]
                        if not job.floating:
                            nbytes += f.write(tensor_bytes(inputs[0].read(job.sources[0])))
                            continue
                        for rows in job.blocks():
                            blocks = [src.read(name, rows).clone()
                                      for src, name in zip(inputs, job.sources, strict=True)]
                            nbytes += f.write(tensor_bytes(blocks[0]))
                        if job.extra_from is not None:
                            for rows in job.blocks(job.out.shape[0], job.shared_rows):
                                src = inputs[job.extra_from]
                                block = src.read(job.sources[job.extra_from], rows)
                                nbytes += f.write(tensor_bytes(block))
                    f.flush()
                    os.fsync(f.fileno())
            _fsync_tree(tmp)
            t1 = time.perf_counter()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": t1 - t0, "merge_seconds": float("nan"), "sync_seconds": float("nan"),
            "out_bytes": nbytes, "import_rss_mb": rss0, "peak_rss_mb": _peak_rss_mb(),
            "maxrss_mb": _maxrss_mb(),
            "peak_anon_mb": sampler.peak["RssAnon"], "peak_file_mb": sampler.peak["RssFile"]}


def mergekit_cli() -> list[str] | None:
    """How to run mergekit: ``$L2S_MERGEKIT_PYTHON -m mergekit.scripts.run_yaml`` (mergekit in
    its own virtual environment, set by ``--mergekit-python``), else a ``mergekit-yaml`` beside
    this Python or on the PATH."""
    if os.environ.get("L2S_MERGEKIT_PYTHON"):
        return [os.environ["L2S_MERGEKIT_PYTHON"], "-m", "mergekit.scripts.run_yaml"]
    exe = Path(sys.executable).parent / "mergekit-yaml"
    found = str(exe) if exe.exists() else shutil.which("mergekit-yaml")
    return [found] if found else None


def one_mergekit(method: str, base: Path, model: Path, out: Path) -> dict:
    """The same merge through mergekit's ``mergekit-yaml`` (peak RSS of that child process)."""
    import yaml

    spec = MERGEKIT[method]
    config = {
        "merge_method": spec["merge_method"],
        "base_model": str(base),
        "models": [{"model": str(model), "parameters": dict(spec["model_parameters"])}],
        "dtype": "float32",
        "out_dtype": "bfloat16",
    }
    if spec["parameters"]:
        config["parameters"] = dict(spec["parameters"])
    cli = mergekit_cli()
    if cli is None:
        raise RuntimeError("mergekit is importable but its mergekit-yaml command was not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=out.parent, delete=False) as f:
        yaml.safe_dump(config, f)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([*cli, f.name, str(out), "--copy-tokenizer"], capture_output=True,
                              text=True)
        t1 = time.perf_counter()
        if proc.returncode != 0:
            raise RuntimeError(f"mergekit-yaml failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        nbytes = _fsync_tree(out)
        t2 = time.perf_counter()
    finally:
        os.unlink(f.name)
    nan = float("nan")
    return {"seconds": t2 - t0, "merge_seconds": t1 - t0, "sync_seconds": t2 - t1,
            "out_bytes": nbytes, "import_rss_mb": nan,
            "peak_rss_mb": _maxrss_mb(resource.RUSAGE_CHILDREN), "maxrss_mb": nan,
            "peak_anon_mb": nan,
            "peak_file_mb": nan}


def run_one(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    d = pair_dir(workdir, args.size)
    base, model = d / "base", d / "model"
    out = workdir / "out" / f"{args.size}-{args.one}"
    if args.one == "floor":
        res = one_floor(base, model, out)
    elif args.one.startswith("mergekit-"):
        res = one_mergekit(args.one.removeprefix("mergekit-"), base, model, out)
    else:
        res = one_merge(args.one, base, model, out)
    print(RESULT_TAG + json.dumps(res), flush=True)


# -- the driver ------------------------------------------------------------------------------------
def measure(kind: str, size: str, workdir: Path) -> dict | None:
    """Run one measurement in a fresh process; None (with the error printed) if it failed."""
    out = workdir / "out" / f"{size}-{kind}"
    shutil.rmtree(out, ignore_errors=True)  # an old output would be deleted inside the timing
    d = pair_dir(workdir, size)
    warm = warm_up([d / "base", d / "model"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", kind, "--size", size,
           "--workdir", str(workdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    shutil.rmtree(out, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        print(f"  {size} {kind}: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}",
              flush=True)
        return None
    res = json.loads(lines[-1].removeprefix(RESULT_TAG))
    res["warm_up_seconds"] = warm
    print(f"  {size:<14} {kind:<14} {res['seconds']:8.2f} s   peak RSS {res['peak_rss_mb']:7.0f} MB"
          f"   (untimed warm-up read before it: {warm:.1f} s)", flush=True)
    return res


def best(runs: list[dict]) -> dict:
    """Minimum time and minimum peak RSS over the repeats (the least disturbed run)."""
    nan = float("nan")
    if not runs:
        return {"seconds": nan, "peak_rss_mb": nan, "maxrss_mb": nan, "import_rss_mb": nan,
                "peak_anon_mb": nan,
                "peak_file_mb": nan, "merge_seconds": nan, "sync_seconds": nan, "out_bytes": 0}
    fastest = min(runs, key=lambda r: r["seconds"])
    return {**fastest, "peak_rss_mb": min(r["peak_rss_mb"] for r in runs)}


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES,
                   help=f"synthetic shapes (l2s_kit.zoo.synthetic.SHAPES); default: {DEFAULT_SIZES}")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="ta: task arithmetic (alpha 0.7); ties: per-tensor TIES (k 0.8, alpha 1)")
    p.add_argument("--workdir", default="data/bench",
                   help="where pairs are cached, outputs written, the CSV saved (default: "
                        "data/bench, git-ignored)")
    p.add_argument("--repeat", type=int, default=2, help="runs per measurement; the minimum is "
                   "kept (default 2)")
    p.add_argument("--mergekit-python", default=None,
                   help="the python of a virtual environment with mergekit installed (its pins "
                   "may clash with this one's), to run mergekit side by side")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement in this process
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        run_one(args)
        return 0

    import pandas as pd

    from l2s_kit.zoo.synthetic import SHAPES

    unknown = [s for s in args.sizes if s not in SHAPES]
    if unknown:
        p.error(f"unknown size(s) {unknown}; choose from {list(SHAPES)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    workdir = Path(args.workdir)
    if not workdir.is_absolute():
        workdir = ROOT / workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.mergekit_python:
        os.environ["L2S_MERGEKIT_PYTHON"] = str(Path(args.mergekit_python).absolute())
    has_mergekit = bool(args.mergekit_python) or importlib.util.find_spec("mergekit") is not None
    kinds = ["floor", *args.methods] + [f"mergekit-{m}" for m in args.methods if has_mergekit]

    t_start = time.perf_counter()
    build: dict[str, float | None] = {}
    for size in args.sizes:
        *_, build[size] = ensure_pair(workdir, size)
    t_built = time.perf_counter()

    runs: dict[tuple[str, str], list[dict]] = {}
    for size in args.sizes:
        for _ in range(args.repeat):
            for kind in kinds:
                res = measure(kind, size, workdir)
                if res is not None:
                    runs.setdefault((size, kind), []).append(res)
    t_done = time.perf_counter()

    rows = []
    for size in args.sizes:
        floor = best(runs.get((size, "floor"), []))
        for method in args.methods:
            m = best(runs.get((size, method), []))
            ratio = m["seconds"] / floor["seconds"]
            row = {
                "size": size, "method": method,
                "merge_s": m["seconds"], "floor_s": floor["seconds"], "ratio": ratio,
                "ratio_target": RATIO_TARGET[method],
                "ratio_ok": verdict(None if ratio != ratio else ratio <= RATIO_TARGET[method]),
                "peak_rss_mb": m["peak_rss_mb"], "floor_rss_mb": floor["peak_rss_mb"],
                "import_rss_mb": m["import_rss_mb"], "peak_anon_mb": m["peak_anon_mb"],
                "peak_file_mb": m["peak_file_mb"], "maxrss_mb": m["maxrss_mb"],
                "merge_only_s": m["merge_seconds"],
                "sync_s": m["sync_seconds"], "out_gb": m["out_bytes"] / 1e9,
                "floor_out_gb": floor["out_bytes"] / 1e9,
            }
            if size == RSS_TARGET_SIZE:
                rss = m["peak_rss_mb"]
                row["rss_ok"] = verdict(None if rss != rss else rss < RSS_TARGET_MB)
            else:
                row["rss_ok"] = "n/a"
            if has_mergekit:
                mk = best(runs.get((size, f"mergekit-{method}"), []))
                row["mergekit_s"] = mk["seconds"]
                row["mergekit_rss_mb"] = mk["peak_rss_mb"]
                row["time_vs_mergekit"] = m["seconds"] / mk["seconds"]
                row["rss_vs_mergekit"] = m["peak_rss_mb"] / mk["peak_rss_mb"]
            rows.append(row)
    df = pd.DataFrame(rows)

    growth_lines = []
    sized = [s for s in args.sizes if s in SHAPES]
    if len(sized) >= 2:
        small, large = sized[0], sized[-1]
        for method in args.methods:
            a = df[(df["size"] == small) & (df["method"] == method)]["peak_rss_mb"].iloc[0]
            b = df[(df["size"] == large) & (df["method"] == method)]["peak_rss_mb"].iloc[0]
            g = b / a
            growth_lines.append(
                f"  {method}: peak RSS {large} / {small} = {b:.0f} / {a:.0f} MB = {g:.2f} "
                f"(target <= {RSS_GROWTH_MAX}): {verdict(None if g != g else g <= RSS_GROWTH_MAX)}")

    csv = workdir / "merge_speed.csv"
    df.to_csv(csv, index=False, float_format="%.4g")
    main_cols = ["size", "method", "merge_s", "floor_s", "ratio", "ratio_target", "ratio_ok",
                 "peak_rss_mb", "rss_ok", "floor_rss_mb", "import_rss_mb"]
    detail_cols = ["size", "method", "merge_only_s", "sync_s", "peak_anon_mb", "peak_file_mb",
                   "maxrss_mb", "out_gb", "floor_out_gb"]
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.2f}".format):
        print(f"\nmerge vs I/O floor (min of {args.repeat} run(s); times in s, memory in MB)")
        print(df[main_cols].to_string(index=False))
        print("\ndetails: merge() alone and its output fsync; sampled peak anonymous / file-backed"
              " RSS of the merge")
        print(df[detail_cols].to_string(index=False))
        if has_mergekit:
            print("\nmergekit (mergekit-yaml, same files; ratios are ours / mergekit's)")
            print(df[["size", "method", "merge_s", "mergekit_s", "time_vs_mergekit",
                      "peak_rss_mb", "mergekit_rss_mb", "rss_vs_mergekit"]].to_string(index=False))
    print(f"\ntargets: TA ratio <= {RATIO_TARGET['ta']}, per-tensor TIES ratio <= "
          f"{RATIO_TARGET['ties']}, peak RSS < {RSS_TARGET_MB:.0f} MB for {RSS_TARGET_SIZE}, "
          f"peak RSS not growing with size (<= {RSS_GROWTH_MAX}x):")
    for _, r in df.iterrows():
        print(f"  {r['size']} {r['method']}: ratio {r['ratio']:.2f} {r['ratio_ok']}"
              + (f", peak RSS {r['peak_rss_mb']:.0f} MB {r['rss_ok']}"
                 if r["rss_ok"] != "n/a" else ""))
    print("\n".join(growth_lines) if growth_lines
          else "  peak RSS growth: n/a (give two or more --sizes)")
    if not has_mergekit:
        print("\nmergekit is not installed, so there is no comparison with it; to compare, install "
              "it in this environment (pip install mergekit, or pip install "
              "git+https://github.com/arcee-ai/mergekit) and run this script again.")
    built = {s: f"{v:.1f} s" for s, v in build.items() if v is not None}
    print(f"\nbuild: {built or 'all pairs reused'}; build total {t_built - t_start:.1f} s, "
          f"measurements {t_done - t_built:.1f} s")
    print(f"saved {csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
