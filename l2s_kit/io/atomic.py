"""Outputs that appear complete or not at all: a temporary sibling file or folder, renamed into
place when it is finished and removed otherwise.

A temporary's name carries the process id (``.<name>.tmp-<pid>-<random>``), so that one left
behind by a killed run (SIGKILL, a power cut) is recognised and removed, with a note of its size,
by the next run writing the same output; a live run's temporary is never touched."""

from __future__ import annotations

import os
import re
import shutil
import sys
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


def check_apart(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output that is, contains or lies inside an input (``inputs``: what each is ->
    its path), whatever the flags: nothing the user owns is replaced, removed or mixed with an
    output. Symbolic links are followed."""
    o = Path(out).resolve()
    for what, path in inputs.items():
        if path is None:
            continue
        i = Path(path).resolve()
        how = ("is" if o == i else "contains" if o in i.parents
               else "lies inside" if i in o.parents else None)
        if how is not None:
            raise OutputExistsError(
                f"output {out} {how} the {what} {path}; choose an output folder apart from "
                "every input (an output never replaces, holds or sits inside an input, even "
                "with --overwrite)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove_stale_temporaries(out: Path) -> list[tuple[Path, int]]:
    """Remove the temporaries of ``out`` left by runs that no longer exist; returns them with
    their sizes in bytes (and says so on stderr)."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.tmp-(\d+)-")
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            size = _size(p)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append((p, size))
            print(f"note: removed {p} ({size / 2**20:.1f} MiB), a temporary left by an "
                  "interrupted run", file=sys.stderr)
    return removed


def _prefix(out: Path) -> str:
    return f".{out.name}.tmp-{os.getpid()}-"


def temp_sibling(out_dir: Path, overwrite: bool) -> Path:
    """Check the output path and make the temporary sibling the output is built in."""
    check_out(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    return Path(tempfile.mkdtemp(prefix=_prefix(out_dir), dir=out_dir.parent))


def publish(tmp: Path, out_dir: Path, overwrite: bool = False) -> None:
    """Move the finished temporary folder into place (replacing an old output only at the end,
    and only with ``overwrite``). Checked again here, not only at the start: an output that
    appeared meanwhile (another run into the same folder) is never replaced unasked."""
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the output gets the usual mode
    if not overwrite:
        try:  # rename onto a non-empty folder fails: no window between a check and the rename
            os.rename(tmp, out_dir)
        except OSError as e:
            if not out_dir.exists():
                raise
            raise OutputExistsError(
                f"output folder {out_dir} appeared while this run was writing it (another run "
                "into the same folder?); it was left as it is. Choose another path or pass "
                "overwrite=True (--overwrite) to replace it.") from e
        return
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
        publish(tmp, out_dir, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling path to write (same suffix); it replaces ``path`` when the block
    succeeds and is removed otherwise, so ``path`` is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the file gets the usual mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_csv(df, path: str | os.PathLike, **to_csv) -> Path:
    """``df`` as CSV at ``path`` (no index; ``to_csv``: pandas' options, e.g. ``float_format``),
    written through :func:`atomic_file`: complete or not at all."""
    with atomic_file(path) as tmp:
        df.to_csv(tmp, index=False, **to_csv)
    return Path(path)
