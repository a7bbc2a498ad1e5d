"""A cache of calibration statistics next to the checkpoints they describe.

Statistics (activation means for AIM, layer sensitivities and logit distances for Sens-Merging)
take minutes to hours on a real model, and a sweep over ω or T reuses them. They are stored in
the kit's cache folder (:func:`l2s_kit.io.identity.cache_dir`: ``$L2S_CACHE``, else the
platform's user cache folder; never inside a checkpoint), as ``<kind>-<key>.safetensors``,
written atomically. The key hashes:

- each checkpoint's :func:`l2s_kit.io.checkpoint_key` (its config and tokenizer files and its
  weights hash, the hash every response row carries), so any change of tensor data gives another
  key. The weights are
  hashed once (about a minute for a 15 GB model read from the page cache); the hash is remembered
  beside the entries, keyed by each file's size, modification time and inode, and computed again
  whenever one of them changes;
- the calibration settings (``CalibrationSpec.key()``: source, parts, samples, seed, fields,
  token limit, and the content hash of a file source);
- the kind of statistic and the cache format version.

Every entry carries a checksum of its tensors, verified when it is read: a damaged entry is
computed again (with a warning naming the file) instead of giving another merge.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from l2s_kit.io import atomic_file
from l2s_kit.io.identity import cache_dir, checkpoint_key

FORMAT = 4  # 4: checkpoints by io.checkpoint_key (config, tokenizer and weights); checksummed


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(kind: str, paths: Sequence, settings: dict) -> str:
    blob = json.dumps({"kind": kind, "format": FORMAT, "checkpoints": [checkpoint_key(p) for p in paths],
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
