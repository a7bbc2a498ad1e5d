"""Outputs that appear complete or not at all: a temporary sibling file or folder, renamed into
place when it is finished and removed otherwise."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from l2s_kit.errors import OutputExistsError


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


def temp_sibling(out_dir: Path, overwrite: bool) -> Path:
    """Check the output path and make the temporary sibling the output is built in."""
    check_out(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


def publish(tmp: Path, out_dir: Path) -> None:
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
    tmp = temp_sibling(out_dir, overwrite)
    try:
        yield tmp
        publish(tmp, out_dir)
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
