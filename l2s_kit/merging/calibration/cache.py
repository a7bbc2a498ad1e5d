"""A cache of calibration statistics next to the checkpoints they describe.

Statistics (activation means for AIM, layer sensitivities and logit distances for Sens-Merging)
take minutes to hours on a real model, and a sweep over ω or T reuses them. They are stored in
``<checkpoint>/.l2s_cache/<kind>-<key>.safetensors`` (in ``~/.cache/l2s_kit/stats/`` when the
checkpoint folder is read-only, and in ``$L2S_CACHE`` whenever that is set), written atomically. The key hashes:

- each checkpoint's *fingerprint*: its config.json, and per safetensors file its name, size and
  header (tensor names, dtypes, shapes and offsets). Changing any weight rewrites a file whose
  header or size usually stays the same, so the fingerprint also hashes a sample of the data bytes
  (up to 64 spread chunks of 4 KiB per file): cheap on a 15 GB model, and a retrained checkpoint
  saved over the old one does not hit a stale entry;
- the calibration settings (``CalibrationSpec.key()``: source, parts, samples, seed, fields,
  token limit, and the content hash of a file source);
- the kind of statistic and the cache format version.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from l2s_kit.io import atomic_file

FORMAT = 1
CACHE_DIR = ".l2s_cache"
SAMPLES, CHUNK = 64, 4096


def fingerprint(path: str | os.PathLike) -> str:
    """A cheap, content-based hash of a checkpoint folder (see the module docstring)."""
    path = Path(path)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f"{f.name}|{size}|".encode())
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            h.update(fh.read(n))
            data0 = 8 + n
            span = size - data0
            if span <= SAMPLES * CHUNK:
                h.update(fh.read(span))
                continue
            for k in range(SAMPLES):
                fh.seek(data0 + span * k // SAMPLES)
                h.update(fh.read(CHUNK))
    return h.hexdigest()


def cache_dir(path: str | os.PathLike) -> Path:
    """``$L2S_CACHE/<hash of path>`` when ``L2S_CACHE`` is set; else ``<path>/.l2s_cache`` when it
    can be written; else ``~/.cache/l2s_kit/stats/<hash of path>``."""
    path = Path(path).resolve()
    sub = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if os.environ.get("L2S_CACHE"):
        return Path(os.environ["L2S_CACHE"]) / sub
    own = path / CACHE_DIR
    if (own.is_dir() and os.access(own, os.W_OK)) or (not own.exists() and os.access(path, os.W_OK)):
        return own
    return Path.home() / ".cache" / "l2s_kit" / "stats" / sub


def cache_key(kind: str, paths: Sequence, settings: dict) -> str:
    blob = json.dumps({"kind": kind, "format": FORMAT, "checkpoints": [fingerprint(p) for p in paths],
                       "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_file(kind: str, paths: Sequence, settings: dict) -> Path:
    """Where the statistic of ``kind`` over ``paths`` (the first one holds it) with ``settings``
    is stored."""
    return cache_dir(paths[0]) / f"{kind}-{cache_key(kind, paths, settings)}.safetensors"


def cached_tensors(kind: str, paths: Sequence, settings: dict,
                   compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``compute()`` once per (checkpoints, settings); later calls read the stored tensors."""
    file = cache_file(kind, paths, settings)
    if file.exists():
        return load_file(file)
    out = compute()
    with atomic_file(file) as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, tmp,
                  metadata={"kind": kind, "settings": json.dumps(settings, sort_keys=True),
                            "checkpoints": json.dumps([str(p) for p in paths])})
    return out
