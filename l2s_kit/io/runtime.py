"""How a process behaves on the machine it shares: thread counts that follow the cores it may
use, and progress written as lines when it does not go to a terminal.

- :func:`usable_cores`: the CPUs this process may run on (its affinity), capped by a cgroup CPU
  quota (containers, CI runners), at least 1.
- :func:`thread_count`: ``$L2S_THREADS`` when set (never above the usable cores), else the usable
  cores. :func:`limit_threads` caps torch's intra-op threads at it: two threads per process on an
  oversubscribed 2-core machine make each process far slower than its share. Before torch
  loads it also sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set): OpenMP threads that spin while
  they wait for work steal the cores of every other process on a shared machine. Two
  evaluations side by side on 2 cores took 17.6 s and 51 s with spinning threads and 10.7 s and
  9.9 s with passive ones; one alone took the same either way (8.3–9.0 s).
- :func:`line_progress`: progress bars (tqdm) written to a file or a pipe become lines, at most
  one every ``PIPE_INTERVAL`` seconds and each bar's final state, instead of carriage-return
  updates that pile up into one long line.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from l2s_kit.errors import L2SError

THREADS_ENV = "L2S_THREADS"
PIPE_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup, in cores (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None without one."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        q, p = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if q.is_file() and p.is_file():
            quota = int(q.read_text())
            return None if quota <= 0 else quota / int(p.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota
    (rounded up: a quota of 1.5 cores gives 2), at least 1."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(root)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def thread_count(root: Path = CGROUP_ROOT) -> int:
    """``$L2S_THREADS`` (a positive whole number, capped at the usable cores) or the usable
    cores; a bad value is an error naming the variable."""
    cores = usable_cores(root)
    given = os.environ.get(THREADS_ENV, "").strip()
    if not given:
        return cores
    try:
        n = int(given)
    except ValueError:
        n = 0
    if n < 1:
        raise L2SError(f"{THREADS_ENV}={given!r}: give a positive whole number of threads "
                       f"(this process may use {cores} core(s)), or unset it")
    return min(n, cores)


def limit_threads() -> int:
    """Cap torch's intra-op threads at :func:`thread_count` (never raising them); returns the
    count in use. Imports torch only when something has imported it already or will need it."""
    n = thread_count()
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() > n:
            torch.set_num_threads(n)
        return min(n, torch.get_num_threads())
    os.environ.setdefault("OMP_NUM_THREADS", str(n))  # read by torch when it loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep, not spin
    return n


class _Lines:
    """A text stream that writes progress updates (text with a carriage return) as whole lines,
    at most one every ``interval`` seconds plus each bar's last one; other text passes through."""

    def __init__(self, stream, interval: float):
        self._stream, self._interval = stream, interval
        self._last, self._pending, self._in_bar = -math.inf, None, False

    def write(self, text: str) -> int:
        import time

        if "\r" in text:
            self._in_bar = True
            segs = [p.rstrip() for p in text.replace("\r", "\n").split("\n") if p.strip()]
            if segs:
                now = time.monotonic()
                if now - self._last >= self._interval:
                    self._stream.write(segs[-1] + "\n")
                    self._last, self._pending = now, None
                else:
                    self._pending = segs[-1]
        elif text == "\n" and self._in_bar:  # a bar closing: its last state, if held back
            if self._pending is not None:
                self._stream.write(self._pending + "\n")
            self._pending, self._in_bar = None, False
        elif text:
            self._in_bar = False
            self._stream.write(text)
        return len(text)

    def close(self) -> None:
        """Write a held update (a bar left open) and stop."""
        if self._pending is not None:
            self._stream.write(self._pending + "\n")
            self._pending = None
        self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def line_progress(stream=None, interval: float | None = None):
    """``stream`` (default ``sys.stderr``) as progress bars should write to it: itself on a
    terminal; otherwise a stream that writes each update as a line, at most one every
    ``interval`` seconds (default ``PIPE_INTERVAL``) and each bar's final state."""
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        return stream
    return _Lines(stream, PIPE_INTERVAL if interval is None else interval)
