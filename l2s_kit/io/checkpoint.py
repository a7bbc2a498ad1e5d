"""Read Hugging Face checkpoint folders lazily, one tensor (or block of rows) at a time.

Headers are read and checked with ``safetensors.safe_open``; tensors (or blocks of rows) are then
read with ``pread`` at the offsets the header gives, into a buffer of their own: no file is
memory-mapped, so the pages of a multi-GB checkpoint do not pile up in the process's resident
memory, and a file truncated while it is read is an error naming it, not a bus error. Each
read checks first that its file is still the one the checkpoint opened (size, modification time,
inode), and :meth:`Checkpoint.check_unchanged` checks every file at once (a merge does so before
its output appears): a checkpoint rewritten while it is read never gives an output matching
neither version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from l2s_kit.errors import CheckpointError
from l2s_kit.io.dtypes import DTYPE_NAMES, SAFE_DTYPES
from l2s_kit.io.files import (  # noqa: F401  (handed on by l2s_kit.io)
    GENERATION_CONFIG,
    INDEX_FILE,
    SINGLE_FILE,
    TOKENIZER_FILES,
    VOCABULARY_FILES,
)


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


def _headers(path: Path):
    """(name, slice) of every tensor of one safetensors file; a truncated or corrupt file is
    named in the error."""
    try:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                yield name, f.get_slice(name)
    except Exception as e:  # safetensors raises its own error types for damaged headers
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it is truncated "
                              "or corrupt: copy or download it again") from None


def _stamp(path: Path) -> tuple[int, int, int]:
    """What tells a file rewritten: size, modification time and inode ((-1, -1, -1): gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1, -1)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Each tensor's byte range in a safetensors file (8-byte little-endian header length, the
    JSON header, then the data its ``data_offsets`` count from)."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > size - 8:
                raise ValueError(f"its header length {n} passes the file's end ({size} bytes)")
            header = json.loads(f.read(n))
        return {k: (8 + n + int(v["data_offsets"][0]), 8 + n + int(v["data_offsets"][1]))
                for k, v in header.items() if k != "__metadata__"}
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError,
            MemoryError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it is truncated "
                              "or corrupt: copy or download it again") from None


def _weight_map(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index: tensor name → a file name in the same
    folder; anything else is named with what to do."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index} is not valid JSON ({e}); copy or download it again") \
            from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no 'weight_map' object (tensor name -> shard file); "
                              "copy or download it again")
    for name, file in weight_map.items():
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise CheckpointError(f"{index}: tensor {name} is mapped to {file!r}; each tensor "
                                  "maps to a shard file name in the same folder")
    return dict(weight_map)


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
            self.config: dict = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{config_path} is not valid JSON: {e}") from e
        if not isinstance(self.config, dict):
            raise CheckpointError(f"{config_path}: expected a JSON object (a model's settings), "
                                  f"got a {type(self.config).__name__}; copy config.json from the "
                                  "model the weights came from")
        self._file_of = self._find_files()
        self._info: dict[str, TensorInfo] = {}
        self._where: dict[str, tuple[int, int]] = {}
        files = sorted(set(self._file_of.values()))
        kept = ["config.json", *([INDEX_FILE] if (self.path / INDEX_FILE).exists() else []), *files]
        self._stamps = {f: _stamp(self.path / f) for f in kept}
        held: dict[str, str] = {}  # tensor -> the shard whose header holds it
        for file in files:
            where = _offsets(self.path / file)
            for name, sl in _headers(self.path / file):
                if name in held:
                    raise CheckpointError(
                        f"tensor {name} is stored twice in {self.path}, in {held[name]} and "
                        f"{file}; the checkpoint is inconsistent (one copy may differ): copy or "
                        "download it again")
                held[name] = file
                if self._file_of.get(name) != file:
                    continue
                self._where[name] = where[name]
                dtype = sl.get_dtype()
                if dtype not in SAFE_DTYPES:
                    raise CheckpointError(
                        f"tensor {name} in {self.path / file} has dtype {dtype}, which l2s_kit "
                        "does not read; convert the checkpoint to bf16/fp16/fp32."
                    )
                self._info[name] = TensorInfo(name, SAFE_DTYPES[dtype], tuple(sl.get_shape()))
        missing = [n for n in self._file_of if n not in self._info]
        if missing:
            name = missing[0]
            where = f" (it is in {held[name]})" if name in held else ""
            raise CheckpointError(
                f"{self.path / INDEX_FILE} lists tensor {name} in {self._file_of[name]}, but "
                f"that shard does not hold it{where}; {len(missing)} such tensors: the index "
                "and the shards do not match (copy or download the checkpoint again)")

    def _find_files(self) -> dict[str, str]:
        index = self.path / INDEX_FILE
        if index.exists():
            weight_map = _weight_map(index)
            for file in sorted(set(weight_map.values())):
                if not (self.path / file).is_file():
                    raise CheckpointError(
                        f"{index} names shard {file}, which is not in {self.path}; "
                        "the download may be incomplete."
                    )
            return weight_map
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
            for name, _ in _headers(p):
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
        """Read one tensor, or a block of its rows (first dimension, step 1), from disk."""
        file = self._file_of[name]
        info, (start, end) = self._info[name], self._where[name]
        shape = list(info.shape)
        if rows is not None:
            first = shape[0] if shape else 1
            lo, hi, step = rows.indices(first)
            if step != 1:
                raise ValueError(f"rows of {name}: a slice with step 1, got {rows}")
            row = (end - start) // first if first else 0
            hi = max(hi, lo)
            start, end, shape[0] = start + lo * row, start + hi * row, hi - lo
        self._check(file)
        buffer = torch.empty(end - start, dtype=torch.uint8)
        with open(self.path / file, "rb") as f:
            view, done = memoryview(buffer.numpy()), 0
            while done < len(view):
                got = os.preadv(f.fileno(), [view[done:]], start + done)
                if got <= 0:
                    self._check(file)
                    raise CheckpointError(f"{self.path / file} ends inside tensor {name}; it is "
                                          "truncated: copy or download it again")
                done += got
        return buffer.view(info.dtype).reshape(shape)

    def _check(self, file: str) -> None:
        now = _stamp(self.path / file)
        if now != self._stamps[file]:
            was = self._stamps[file][0]
            how = (f"{was} bytes, now {now[0]}" if now[0] != was else "replaced or rewritten")
            raise CheckpointError(
                f"{self.path / file} changed while it was being read ({how}): another program is "
                "writing it. Nothing was written; run again once the checkpoint is complete")

    def check_unchanged(self) -> None:
        """Raise CheckpointError naming the first file of this checkpoint (config.json, the index
        or a shard) that is no longer the one it read at the start."""
        for file in self._stamps:
            self._check(file)

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
