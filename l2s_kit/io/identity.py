"""Which weights a checkpoint folder holds: its weights hash, remembered across runs.

``checkpoint_hash(folder)`` is :func:`l2s_kit.io.weights_hash` of the folder (SHA-256 over tensor
names, dtypes, shapes and bytes; the hash a merge records in its card and ``l2s_merge.json``).
Computing it reads every weight byte once; the result is remembered in the folder's cache
(``weights_hash.json`` in the kit's cache, see :func:`cache_dir`) keyed by each weight file's size, modification time
and inode, so a folder whose files change in any way is hashed again. Evaluations record it on
every response row, so that two checkpoints in folders of one name never mix.

``files_hash(folder)`` covers what a checkpoint is besides its weights: ``config.json``,
``generation_config.json`` and the tokenizer files (a changed ``eos_token_id`` or chat template
changes what the model generates); ``checkpoint_key(folder)`` is both, the identity a cached
result (a merge, responses, a calibration statistic) is reused by.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from l2s_kit.io.atomic import atomic_file, user_cache

MEMO = "weights_hash.json"


def cache_dir(path: str | os.PathLike) -> Path:
    """Where what the kit remembers of the checkpoint folder ``path`` is kept:
    ``<the kit's cache>/checkpoints/<hash of the resolved path>`` (:func:`user_cache`:
    ``$L2S_CACHE``, else the platform's user cache folder). Never inside the checkpoint: the kit
    writes nothing into an input. What is kept there is keyed by content (each entry checks the
    files it describes), so a path reused for other weights gets no stale result."""
    path = Path(path).resolve()
    sub = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return user_cache() / "checkpoints" / sub


def _stamps(path: Path) -> list:
    out = []
    for f in sorted(path.glob("*.safetensors")):
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def checkpoint_hash(path: str | os.PathLike) -> str:
    """The weights hash of the checkpoint folder ``path`` (see the module docstring)."""
    from l2s_kit.io.checkpoint import Checkpoint, weights_hash

    path = Path(path)
    stamps = _stamps(path)
    memo_file = cache_dir(path) / MEMO
    try:
        memo = json.loads(memo_file.read_text())
        if memo.get("stamps") == stamps and isinstance(memo.get("weights_hash"), str):
            return memo["weights_hash"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = weights_hash(Checkpoint(path))
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(memo_file) as tmp:
            tmp.write_text(json.dumps({"stamps": stamps, "weights_hash": digest}, indent=1))
    except OSError:
        pass  # a read-only cache only costs hashing again next time
    return digest


def files_hash(path: str | os.PathLike) -> str:
    """SHA-256 (16 hex digits) of the checkpoint folder's config, generation config and
    tokenizer files (those present, by name and bytes)."""
    from l2s_kit.io.files import GENERATION_CONFIG, TOKENIZER_FILES

    path, h = Path(path), hashlib.sha256()
    for name in ("config.json", GENERATION_CONFIG, *TOKENIZER_FILES, "chat_template.json"):
        if (path / name).is_file():
            h.update(f"{name}|{(path / name).stat().st_size}|".encode())
            h.update((path / name).read_bytes())
    return h.hexdigest()[:16]


def checkpoint_key(path: str | os.PathLike) -> str:
    """A checkpoint folder's whole identity: :func:`files_hash` and :func:`checkpoint_hash`
    (remembered across runs), as ``files:<16 hex>|weights:<64 hex>``."""
    return f"files:{files_hash(path)}|weights:{checkpoint_hash(path)}"
