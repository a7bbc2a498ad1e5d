"""Write sharded safetensors checkpoints as a stream, atomically.

The shard layout is planned from the output tensors' names, dtypes and shapes before any data
exists, each shard's safetensors header is written first, and tensor bytes are appended as the
merge produces them (in blocks of rows for large tensors). The safetensors library only serializes
whole dictionaries, which would hold a whole shard in memory, so the writer emits the documented
format itself (8-byte little-endian header length, JSON header, raw little-endian data); tests read
every written file back with ``safe_open`` and ``transformers``.

Everything is written into a temporary sibling folder that is renamed into place at the end: the
output folder appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

import torch

from l2s_kit.io.atomic import check_room, publish, temp_sibling
from l2s_kit.io.checkpoint import (
    GENERATION_CONFIG,
    INDEX_FILE,
    SINGLE_FILE,
    TOKENIZER_FILES,
    TensorInfo,
    WeightHasher,
    tensor_bytes,
)
from l2s_kit.io.dtypes import DTYPE_NAMES


def plan_shards(infos: list[TensorInfo], shard_size: int) -> list[list[TensorInfo]]:
    """Greedy, in order: a new shard starts when the next tensor would pass ``shard_size`` bytes."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for info in infos:
        if shards[-1] and size + info.nbytes > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += info.nbytes
    return shards


def _header(infos: list[TensorInfo], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for info in infos:
        header[info.name] = {
            "dtype": DTYPE_NAMES[info.dtype],
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class CheckpointWriter:
    """Writes a checkpoint folder tensor by tensor, atomically.

    Use as a context manager; tensors must be written in the order of ``infos``, each either whole
    or as consecutive blocks of rows::

        with CheckpointWriter(out, infos, shard_size=2**30) as w:
            for info in infos:
                w.write(info.name, tensor)
            w.write_json("config.json", config)
        # out now exists, complete; on an exception nothing is left behind
    """

    def __init__(self, out_dir: str | os.PathLike, infos: Iterable[TensorInfo],
                 shard_size: int = 2 * 2**30, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.infos = list(infos)
        if shard_size <= 0:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.shards = plan_shards(self.infos, shard_size)
        self.overwrite = overwrite
        self.hasher = WeightHasher()
        self.file_hashes: dict = {}  # shard file name -> sha256 of its bytes, for the record
        self.tmp: Path | None = None
        self._order = [(si, info) for si, shard in enumerate(self.shards) for info in shard]
        self._pos = 0  # index into _order of the tensor being written
        self._written = 0  # bytes written of the current tensor
        self._fh = None
        self._shard_open = -1
        self.weight_map: dict[str, str] = {}
        # File writes and hashing run on one background thread (in order), overlapping the merge's
        # compute; at most a few blocks wait in the queue.
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- background I/O --------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            task = self._queue.get()
            try:
                if task is None:
                    return
                if self._error is None:
                    task()
            except BaseException as e:  # re-raised in the caller's thread by flush()
                self._error = e
            finally:
                self._queue.task_done()

    def _submit(self, task) -> None:
        if self._error is not None:
            self.flush()
        self._queue.put(task)

    def flush(self) -> None:
        """Wait until every tensor handed to ``write`` is on disk and hashed."""
        self._queue.join()
        if self._error is not None:
            raise OSError(f"writing {self.out_dir} failed: {self._error}") from self._error

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- context management -------------------------------------------------------------------
    def __enter__(self) -> CheckpointWriter:
        check_room(self.out_dir, sum(i.nbytes for i in self.infos))
        self.tmp = temp_sibling(self.out_dir, self.overwrite)
        self._thread = threading.Thread(target=self._worker, name="l2s-writer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = False
        try:
            if exc_type is None:
                self.flush()
                self._stop()
                self._finish()
                ok = True
        finally:
            self._stop()
            if not ok:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._close_file()

    # -- tensors ---------------------------------------------------------------------------------
    def shard_file(self, si: int) -> str:
        n = len(self.shards)
        return SINGLE_FILE if n == 1 else f"model-{si + 1:05d}-of-{n:05d}.safetensors"

    def write(self, name: str, data: torch.Tensor) -> None:
        """Append ``data`` (the whole tensor, or its next block of rows) to tensor ``name``."""
        if self._pos >= len(self._order):
            raise RuntimeError(f"tensor {name} written after all planned tensors")
        si, info = self._order[self._pos]
        if name != info.name:
            raise RuntimeError(f"tensor {name} written out of order; expected {info.name}")
        if data.dtype != info.dtype:
            raise RuntimeError(f"tensor {name}: got dtype {data.dtype}, planned {info.dtype}")
        if si != self._shard_open:
            self._submit(lambda si=si: self._open_shard(si))
            self._shard_open = si
        if self._written == 0:
            self._submit(lambda info=info: self.hasher.begin(info))
        buf = tensor_bytes(data)
        self._submit(lambda buf=buf: self._append(buf))
        self._written += len(buf)
        if self._written > info.nbytes:
            raise RuntimeError(f"tensor {name}: more bytes written than its shape {info.shape} holds")
        if self._written == info.nbytes:
            self.weight_map[name] = self.shard_file(si)
            self._pos += 1
            self._written = 0

    def _append(self, buf: memoryview) -> None:
        self._fh.write(buf)
        self.hasher.update(buf)
        self._file_hash.update(buf)

    def _open_shard(self, si: int) -> None:
        self._close_file()
        self._fh = open(self.tmp / self.shard_file(si), "wb")  # noqa: SIM115 (closed by _close_file)
        self._file_hash = self.file_hashes[self.shard_file(si)] = hashlib.sha256()
        header = _header(self.shards[si], {"format": "pt"})
        self._fh.write(header)
        self._file_hash.update(header)

    # -- other files -----------------------------------------------------------------------------
    def write_json(self, relpath: str, obj: object) -> None:
        (self.tmp / relpath).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_text(self, relpath: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            (self.tmp / relpath).write_bytes(text)
        else:
            (self.tmp / relpath).write_text(text)

    def copy_file(self, src: Path, relpath: str | None = None) -> None:
        shutil.copyfile(src, self.tmp / (relpath or src.name))

    def _finish(self) -> None:
        if self._pos != len(self._order):
            missing = self._order[self._pos][1].name
            raise RuntimeError(f"checkpoint incomplete: tensor {missing} was never written")
        if len(self.shards) > 1:
            total = sum(i.nbytes for i in self.infos)
            self.write_json(INDEX_FILE, {"metadata": {"total_size": total},
                                         "weight_map": self.weight_map})
        publish(self.tmp, self.out_dir, self.overwrite, "merge",
                hashes={f: h.hexdigest() for f, h in self.file_hashes.items()})

    @property
    def weights_hash(self) -> str:
        self.flush()
        return self.hasher.hexdigest()


def copy_side_files(writer: CheckpointWriter, source_dir: Path, *,
                    chat_template: str | None = None,
                    tokenizer: dict[str, bytes] | None = None) -> list[str]:
    """Copy tokenizer files and ``generation_config.json`` from ``source_dir``; return their
    names. ``tokenizer``: tokenizer files to write instead (name → bytes: a union vocabulary's);
    ``chat_template``: the chat template to write as ``chat_template.jinja`` in place of the
    tokenizer's own (dropped from ``tokenizer_config.json``, where transformers would also read
    one)."""
    copied = []
    files = dict(tokenizer) if tokenizer is not None else {
        name: Path(source_dir) / name for name in TOKENIZER_FILES
        if (Path(source_dir) / name).is_file()}
    if (Path(source_dir) / GENERATION_CONFIG).is_file():
        files[GENERATION_CONFIG] = Path(source_dir) / GENERATION_CONFIG
    if chat_template is not None:
        files.pop("chat_template.jinja", None)
        files.pop("chat_template.json", None)
    for name, src in files.items():
        if chat_template is not None and name == "tokenizer_config.json":
            data = json.loads(src if isinstance(src, bytes) else src.read_bytes())
            data.pop("chat_template", None)
            writer.write_json(name, data)
        elif isinstance(src, bytes):
            writer.write_text(name, src)
        else:
            writer.copy_file(src)
        copied.append(name)
    if chat_template is not None:
        writer.write_text("chat_template.jinja", chat_template)
        copied.append("chat_template.jinja")
    return copied
