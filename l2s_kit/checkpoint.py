"""Read Hugging Face checkpoint folders lazily; write sharded safetensors atomically.

Reading goes through ``safetensors.safe_open`` one tensor (or one block of rows) at a time, and the
file is closed again after each read, so that the pages of a multi-GB checkpoint do not pile up in
the process's resident memory.

Writing streams: the shard layout is planned from the output tensors' names, dtypes and shapes
before any data exists, each shard's safetensors header is written first, and tensor bytes are
appended as the merge produces them (in blocks of rows for large tensors). The safetensors library
only serializes whole dictionaries, which would hold a whole shard in memory, so the writer emits
the documented format itself (8-byte little-endian header length, JSON header, raw little-endian
data); tests read every written file back with ``safe_open`` and ``transformers``.

Everything is written into a temporary sibling folder that is renamed into place at the end: the
output folder appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from l2s_kit.errors import CheckpointError, OutputExistsError

SAFE_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        SAFE_DTYPES[_name] = getattr(torch, _attr)
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in SAFE_DTYPES.items()}

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Files copied from the tokenizer source model when present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)
GENERATION_CONFIG = "generation_config.json"


@dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and shape of one stored tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()


def natural_key(name: str) -> tuple:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


class Checkpoint:
    """A Hugging Face checkpoint folder, read lazily.

    >>> ckpt = Checkpoint("path/to/Qwen2.5-Math-7B")
    >>> ckpt.info("model.embed_tokens.weight").shape
    (152064, 3584)
    >>> ckpt.read("model.embed_tokens.weight", rows=slice(0, 8))  # (8, 3584), only 8 rows read
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"checkpoint folder {self.path} does not exist; check the path.")
        if not self.path.is_dir():
            raise CheckpointError(
                f"{self.path} is a file, not a checkpoint folder; give the folder that holds "
                "config.json and the *.safetensors files."
            )
        config_path = self.path / "config.json"
        if not config_path.exists():
            raise CheckpointError(
                f"{self.path} has no config.json; a Hugging Face checkpoint folder needs one "
                "(copy it from the model the weights came from)."
            )
        try:
            self.config: dict = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_path} is not valid JSON: {e}") from e
        self._file_of = self._find_files()
        self._info: dict[str, TensorInfo] = {}
        for file in sorted(set(self._file_of.values())):
            with safe_open(self.path / file, framework="pt") as f:
                for name in f.keys():
                    if name not in self._file_of:
                        continue
                    sl = f.get_slice(name)
                    dtype = sl.get_dtype()
                    if dtype not in SAFE_DTYPES:
                        raise CheckpointError(
                            f"tensor {name} in {self.path / file} has dtype {dtype}, which l2s_kit "
                            "does not read; convert the checkpoint to bf16/fp16/fp32."
                        )
                    self._info[name] = TensorInfo(name, SAFE_DTYPES[dtype], tuple(sl.get_shape()))
        missing = [n for n in self._file_of if n not in self._info]
        if missing:
            raise CheckpointError(
                f"{self.path / INDEX_FILE} lists tensor {missing[0]} in "
                f"{self._file_of[missing[0]]}, but that file does not hold it "
                f"({len(missing)} such tensors); the index and the shards do not match."
            )

    def _find_files(self) -> dict[str, str]:
        index = self.path / INDEX_FILE
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index} has no valid 'weight_map': {e}") from e
            for file in sorted(set(weight_map.values())):
                if not (self.path / file).exists():
                    raise CheckpointError(
                        f"{index} names shard {file}, which is not in {self.path}; "
                        "the download may be incomplete."
                    )
            return dict(weight_map)
        single = self.path / SINGLE_FILE
        files = [single] if single.exists() else sorted(self.path.glob("*.safetensors"))
        if not files:
            bins = sorted(p.name for p in self.path.glob("*.bin"))
            if bins:
                raise CheckpointError(
                    f"{self.path} holds only PyTorch .bin weights ({', '.join(bins[:3])}); "
                    "l2s_kit reads safetensors. Convert once with:\n"
                    "  python -c \"from transformers import AutoModelForCausalLM as M; "
                    f"M.from_pretrained('{self.path}').save_pretrained('{self.path}-safetensors')\""
                    "\nand copy the tokenizer files along."
                )
            raise CheckpointError(
                f"{self.path} holds no *.safetensors weights (expected {SINGLE_FILE} or sharded "
                f"files with {INDEX_FILE})."
            )
        file_of: dict[str, str] = {}
        for p in files:
            with safe_open(p, framework="pt") as f:
                for name in f.keys():
                    if name in file_of:
                        raise CheckpointError(
                            f"tensor {name} is stored twice in {self.path} ({file_of[name]} and "
                            f"{p.name}) and there is no {INDEX_FILE} to say which is meant."
                        )
                    file_of[name] = p.name
        return file_of

    @property
    def names(self) -> list[str]:
        return sorted(self._info, key=natural_key)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._info[name]
        except KeyError:
            raise CheckpointError(f"{self.path} has no tensor {name}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._info

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """Read one tensor, or a block of its rows (first dimension), from disk."""
        file = self.path / self._file_of[name]
        with safe_open(file, framework="pt") as f:
            if rows is None:
                return f.get_tensor(name)
            return f.get_slice(name)[rows]

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {len(self._info)} tensors)"


class StateDictSource:
    """A state dict that the merge engine reads like a checkpoint (for the in-memory merge)."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], config: dict | None = None,
                 label: str = "state_dict"):
        self.sd = state_dict
        self.config = dict(config or {})
        self.path = Path(label)
        self._info = {n: TensorInfo(n, t.dtype, tuple(t.shape)) for n, t in state_dict.items()}

    @property
    def names(self) -> list[str]:
        return sorted(self._info, key=natural_key)

    def info(self, name: str) -> TensorInfo:
        return self._info[name]

    def __contains__(self, name: str) -> bool:
        return name in self._info

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        t = self.sd[name].detach().cpu()
        return t if rows is None else t[rows]


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor, as safetensors stores them."""
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


class WeightHasher:
    """SHA-256 over tensor names, dtypes, shapes and bytes, in write order.

    Independent of how the tensors are sharded, so it identifies the weights themselves.
    """

    def __init__(self):
        self._h = hashlib.sha256()

    def begin(self, info: TensorInfo) -> None:
        self._h.update(f"{info.name}|{DTYPE_NAMES[info.dtype]}|{list(info.shape)}\n".encode())

    def update(self, data: memoryview | bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def weights_hash(source) -> str:
    """Content hash of a checkpoint's (or state dict source's) weights, the same the writer records."""
    h = WeightHasher()
    for name in source.names:
        h.begin(source.info(name))
        h.update(tensor_bytes(source.read(name)))
    return h.hexdigest()


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


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def check_out(out_dir: Path, overwrite: bool) -> None:
    """Raise OutputExistsError if ``out_dir`` is in the way (exists without ``overwrite``)."""
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(
            f"output folder {out_dir} already exists; choose another path or pass "
            "overwrite=True (--overwrite on the command line) to replace it."
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output path {out_dir} is a file, not a folder; choose another path.")


def _prepare_out(out_dir: Path, overwrite: bool) -> Path:
    """Check the output path and make the temporary sibling the output is built in."""
    check_out(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished temporary folder into place (replacing an old output only at the end)."""
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the output gets the usual mode
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A temporary sibling folder to fill; it becomes ``out_dir`` when the block succeeds (an old
    ``out_dir`` is replaced only then, and only with ``overwrite``) and is removed otherwise."""
    out_dir = Path(out_dir)
    tmp = _prepare_out(out_dir, overwrite)
    try:
        yield tmp
        _publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling path to write (same suffix); it replaces ``path`` when the block
    succeeds and is removed otherwise, so ``path`` is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the file gets the usual mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
        self.tmp = _prepare_out(self.out_dir, self.overwrite)
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
        self._submit(lambda buf=buf: (self._fh.write(buf), self.hasher.update(buf)))
        self._written += len(buf)
        if self._written > info.nbytes:
            raise RuntimeError(f"tensor {name}: more bytes written than its shape {info.shape} holds")
        if self._written == info.nbytes:
            self.weight_map[name] = self.shard_file(si)
            self._pos += 1
            self._written = 0

    def _open_shard(self, si: int) -> None:
        self._close_file()
        self._fh = open(self.tmp / self.shard_file(si), "wb")  # noqa: SIM115 (closed by _close_file)
        self._fh.write(_header(self.shards[si], {"format": "pt"}))

    # -- other files -----------------------------------------------------------------------------
    def write_json(self, relpath: str, obj: object) -> None:
        (self.tmp / relpath).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_text(self, relpath: str, text: str) -> None:
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
        _publish(self.tmp, self.out_dir)

    @property
    def weights_hash(self) -> str:
        self.flush()
        return self.hasher.hexdigest()


def copy_side_files(writer: CheckpointWriter, source_dir: Path) -> list[str]:
    """Copy tokenizer files and ``generation_config.json`` from ``source_dir``; return their names."""
    copied = []
    for name in (*TOKENIZER_FILES, GENERATION_CONFIG):
        p = Path(source_dir) / name
        if p.is_file():
            writer.copy_file(p)
            copied.append(name)
    return copied
