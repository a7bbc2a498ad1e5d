"""A cache of calibration statistics next to the checkpoints they describe.

Statistics (activation means for AIM, layer sensitivities and logit distances for Sens-Merging)
take minutes to hours on a real model, and a sweep over ω or T reuses them. They are stored in
``<checkpoint>/.l2s_cache/<kind>-<key>.safetensors`` (in ``~/.cache/l2s_kit/stats/`` when the
checkpoint folder is read-only, and in ``$L2S_CACHE`` whenever that is set), written atomically. The key hashes:

- each checkpoint's *fingerprint*: its config.json and the SHA-256 of every safetensors file's
  whole content, so any change of tensor data gives another key. A file is hashed once (about a
  minute for a 15 GB model read from the page cache); the digest is remembered in
  ``fingerprints.json`` beside the entries, keyed by the file's size, modification time and inode,
  and computed again whenever one of them changes;
- the calibration settings (``CalibrationSpec.key()``: source, parts, samples, seed, fields,
  token limit, and the content hash of a file source);
- the kind of statistic and the cache format version.

Every entry carries a checksum of its tensors, verified when it is read: a damaged entry is
computed again (with a warning naming the file) instead of giving another merge.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from l2s_kit.io import atomic_file
from l2s_kit.io.identity import CACHE_DIR, cache_dir  # noqa: F401  (cache_dir: part of this API)

FORMAT = 2  # 2: whole-file fingerprints and checksummed entries
BLOCK = 1 << 22  # bytes read at a time while hashing


def _file_digest(f: Path, memo: dict) -> str:
    st = f.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    known = memo.get(f.name)
    if known and known["stamp"] == stamp:
        return known["sha256"]
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    memo[f.name] = {"stamp": stamp, "sha256": h.hexdigest()}
    return memo[f.name]["sha256"]


def fingerprint(path: str | os.PathLike) -> str:
    """A hash of a checkpoint folder's config.json and weights (see the module docstring)."""
    path = Path(path)
    memo_file = cache_dir(path) / "fingerprints.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    before = json.dumps(memo, sort_keys=True)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        h.update(f"{f.name}|{_file_digest(f, memo)}|".encode())
    if json.dumps(memo, sort_keys=True) != before:
        try:
            with atomic_file(memo_file) as tmp:
                tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only cache only costs hashing again next time
    return h.hexdigest()


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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
        try:
            with safe_open(file, framework="pt") as f:
                stored = (f.metadata() or {}).get("checksum")
            tensors = load_file(file)
            if stored is not None and stored == _checksum(tensors):
                return tensors
            why = "its checksum does not match its tensors"
        except Exception as e:  # a truncated or corrupt file: safetensors' own error types
            why = f"it cannot be read ({e})"
        warnings.warn(f"calibration statistics cache {file} is damaged ({why}); computing them "
                      "again", stacklevel=2)
    out = {k: v.contiguous() for k, v in compute().items()}
    with atomic_file(file) as tmp:
        save_file(out, tmp, metadata={"kind": kind, "settings": json.dumps(settings, sort_keys=True),
                                      "checkpoints": json.dumps([str(p) for p in paths]),
                                      "checksum": _checksum(out)})
    return out
