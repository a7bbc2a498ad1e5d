"""Every benchmark runs, in its quickest form: a benchmark whose dependencies or arguments broke
(a missing extra, a renamed function) fails here, not after minutes of a user's run. The numbers
they measure are not asserted as times (these machines are noisy): each run's own table or CSV
is checked for what it must hold."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

# benchmark -> its quickest arguments ({w}: a scratch folder) and a text its output must show
QUICK = {
    "merge_speed": (["--sizes", "tiny", "--methods", "ta", "--repeat", "1", "--workdir", "{w}"],
                    "ratio"),
    "merge_in_memory": (["--size", "tiny", "--repeat", "1", "--workdir", "{w}"], "memory"),
    "activation_stats": (["--size", "tiny", "--samples", "2", "--source", "family",
                          "--workdir", "{w}"], "layer"),
    "layer_adaptive_memory": (["--sizes", "tiny", "--samples", "2", "--tokens", "16",
                               "--workdir", "{w}"], "tiny"),
    "sens_memory": (["--sizes", "tiny", "--samples", "2", "--tokens", "16", "--workdir", "{w}"],
                    "tiny"),
    "spectrum_speed": (["--size", "tiny", "--layers", "0", "--workdir", "{w}"], "spectrum"),
    "tune_vs_grid": (["--methods", "task_arithmetic", "--trials", "2", "--n-per-level", "2",
                      "--workdir", "{w}"], "task_arithmetic"),
    "family_robustness": (["--shipped", "--n-per-level", "4", "--root", "{w}"],
                          "TA chosen within 3 points"),
    "gpu_check": (["--size", "tiny", "--device", "cpu", "--workdir", "{w}", "--n-per-level", "2",
                   "--aim-samples", "2"], "ties"),
}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_each_benchmark_runs_in_its_quickest_form(name, tmp_path):
    args, shows = QUICK[name]
    run = subprocess.run([sys.executable, str(BENCH / f"{name}.py"),
                          *[a.format(w=tmp_path / "work") for a in args]],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert "Traceback" not in out, out[-3000:]
    assert run.returncode in (0, 1), out[-3000:]  # 1: a target missed (a measurement, not an error)
    assert shows.lower() in out.lower(), out[-3000:]


def test_generation_speed_quick_run_checks_identical_outputs(tmp_path):
    """Both workloads, every way: the same token ids as plain ``generate``; the refilled batch
    decodes the long-tailed rows in fewer steps than their static batches take."""
    out = tmp_path / "gen.csv"
    run = subprocess.run([sys.executable, str(BENCH / "generation_speed.py"), "--quick",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader(open(out)))
    assert {(r["workload"], r["way"]) for r in rows} >= {
        (w, k) for w in ("family", "long-tail") for k in ("generate", "static", "refill")}
    assert all(r["identical"] == "True" for r in rows)
    assert len({r["tokens"] for r in rows if r["workload"] == "long-tail"}) == 1
