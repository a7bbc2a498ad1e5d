"""A process on a shared machine: torch threads follow the cores it may use (and L2S_THREADS),
and progress bars written to a file are lines, not one line of carriage returns."""

from __future__ import annotations

import io
import os

import pytest

from l2s_kit.io import runtime


def _cgroup(tmp_path, v2=None, v1=None):
    tmp_path.mkdir()
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


def test_cores_follow_the_affinity_and_the_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert runtime.usable_cores(tmp_path) == 4                                  # no quota
    assert runtime.usable_cores(_cgroup(tmp_path / "a", v2="150000 100000\n")) == 2
    assert runtime.usable_cores(_cgroup(tmp_path / "b", v2="max 100000\n")) == 4
    assert runtime.usable_cores(_cgroup(tmp_path / "c", v1=("100000", "100000"))) == 1
    assert runtime.usable_cores(_cgroup(tmp_path / "d", v1=("-1", "100000"))) == 4
    assert runtime.usable_cores(_cgroup(tmp_path / "e", v2="800000 100000")) == 4  # affinity


def test_threads_from_the_environment_never_exceed_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    assert runtime.thread_count(tmp_path) == 2
    monkeypatch.setenv(runtime.THREADS_ENV, "1")
    assert runtime.thread_count(tmp_path) == 1
    monkeypatch.setenv(runtime.THREADS_ENV, "16")
    assert runtime.thread_count(tmp_path) == 2
    monkeypatch.setenv(runtime.THREADS_ENV, "two")
    with pytest.raises(runtime.L2SError, match="L2S_THREADS='two': give a positive whole number"):
        runtime.thread_count(tmp_path)


def test_torch_threads_are_capped_and_a_bad_setting_exits_2(monkeypatch, capsys):
    import torch

    from l2s_kit.cli import main

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        monkeypatch.setenv(runtime.THREADS_ENV, "1")
        assert runtime.limit_threads() == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(1)
        monkeypatch.delenv(runtime.THREADS_ENV)
        runtime.limit_threads()
        assert torch.get_num_threads() == 1  # capped, never raised
        monkeypatch.setenv(runtime.THREADS_ENV, "0")
        assert main(["methods"]) == 2
        err = capsys.readouterr().err
        assert "L2S_THREADS='0'" in err and "Traceback" not in err
    finally:
        torch.set_num_threads(before)


def test_progress_bars_written_to_a_file_are_lines(monkeypatch):
    from tqdm.auto import tqdm

    sink = io.StringIO()
    out = runtime.line_progress(sink, interval=3600)
    for _ in tqdm(range(5), file=out, mininterval=0, desc="work"):
        pass
    print("error: a message passes at once", file=out)
    text = sink.getvalue()
    assert "\r" not in text
    # the first update, then nothing for an hour but the bar's final state, then the message
    assert [ln.split("|")[0] for ln in text.splitlines()] == [
        "work:   0%", "work: 100%", "error: a message passes at once"]
    every = io.StringIO()
    for _ in tqdm(range(3), file=runtime.line_progress(every, interval=0), mininterval=0, desc="w"):
        pass
    assert [ln.split("|")[0] for ln in every.getvalue().splitlines()] == [
        "w:   0%", "w:  33%", "w:  67%", "w: 100%", "w: 100%"]
    tty = io.StringIO()
    tty.isatty = lambda: True
    assert runtime.line_progress(tty) is tty


def test_the_cli_sets_threads_and_passive_waiting_before_torch_loads():
    """``l2s`` starts without torch, so the OpenMP settings it makes are the ones torch reads:
    threads that follow the usable cores, and idle threads that sleep instead of spinning."""
    import subprocess
    import sys

    code = ("import os, sys\n"
            "import l2s_kit.cli\n"
            "assert 'torch' not in sys.modules, 'l2s_kit.cli loaded torch'\n"
            "from l2s_kit.io.runtime import limit_threads\n"
            "n = limit_threads()\n"
            "print(n, os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env[runtime.THREADS_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "PASSIVE"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's own setting is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "1", "ACTIVE"], out.stderr
