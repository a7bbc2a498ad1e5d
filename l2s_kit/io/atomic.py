"""Outputs that appear complete or not at all: a temporary sibling file or folder, renamed into
place when it is finished and removed otherwise.

A temporary's name carries the process id (``.<name>.tmp-<pid>-<random>``), so that one left
behind by a killed run (SIGKILL, a power cut) is recognised and removed, with a note of its size,
by the next run writing the same output; a live run's temporary is never touched."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from l2s_kit.errors import L2SError, OutputExistsError


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


ROOM = 1.05  # an output needs its bytes and a little more (headers, config, tokenizer files)


def check_room(out: str | os.PathLike, nbytes: int) -> None:
    """Refuse, before any work, an output of about ``nbytes`` bytes at ``out`` whose folder
    cannot be written or whose disk has not the room (a write failing late, with the disk full,
    costs the whole run)."""
    out = Path(out).absolute()
    where = next(p for p in out.parents if p.exists())
    if not where.is_dir():
        raise OutputExistsError(f"output {out}: {where} is a file where a folder is needed; "
                                "choose another output folder")
    if not os.access(where, os.W_OK | os.X_OK):
        raise OutputExistsError(f"output {out}: {where} cannot be written here (read-only, or "
                                "not yours); choose another output folder")
    free = shutil.disk_usage(where).free
    if nbytes * ROOM > free:
        raise OutputExistsError(
            f"output {out} needs about {nbytes * ROOM / 2**30:.2f} GiB and the disk holding {where} "
            f"has {free / 2**30:.2f} GiB free; free some space or choose an output on another disk")


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
    if out_dir.exists() or out_dir.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:  # a symbolic link is removed itself: what it points at is not ours
        old.unlink() if old.is_symlink() or not old.is_dir() else shutil.rmtree(old, ignore_errors=True)


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


class exclusive:
    """An exclusive lock on the output ``path`` (a hidden ``.<name>.lock`` beside what the path
    resolves to, so a symbolic link to it takes the same lock), refused at once while another
    run holds it: ``error`` is raised with "<path>: another <what> is writing this now; ...".
    The lock file is removed when the block ends."""

    def __init__(self, path: str | os.PathLike, what: str = "run", error: type = L2SError):
        real = Path(path).resolve()
        self.path = real.parent / f".{real.name}.lock"
        self.out, self.what, self.error = Path(path), what, error

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a")
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the file locked must still be the one at the path (an ending run unlinks it)
            if os.stat(self.path).st_ino != os.fstat(self.f.fileno()).st_ino:
                raise OSError
        except OSError:
            self.f.close()
            raise self.error(f"{self.out}: another {self.what} is writing this now; wait for it "
                             "to finish, or write to another output path") from None
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)  # while still held: no one can take a stale inode
        self.f.close()  # closing releases the lock


OWNER = ".l2s-output.json"  # in a results folder: which kind of run wrote it, and its files
# A notebook run's own folder (new, and published as a whole by that run), set while its kernel
# runs: a results folder that is this one is written into directly.
RUN_FOLDER = "L2S_RUN_FOLDER"


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != OWNER)


def _earlier(out: Path, kind: str) -> list[str] | None:
    """The files of ``out`` that no earlier ``kind`` run wrote there (None when ``out`` holds
    only its own earlier output, or nothing)."""
    present = _files(out)
    try:
        owner = json.loads((out / OWNER).read_text())
        written = set(owner["files"]) if owner.get("kind") == kind else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        written = set()
    foreign = [f for f in present if f not in written]
    return foreign or None


def check_results_folder(out: str | os.PathLike, kind: str, overwrite: bool = False) -> None:
    """Refuse, unless ``overwrite``, an existing ``out`` that holds anything an earlier ``kind``
    run did not write there (the user's own files): a results folder is replaced as a whole
    (see :func:`results_folder`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} is a file, not a folder; choose another path")
    check_room(out, 0)  # under a folder that can be written
    if overwrite or not out.is_dir():
        return
    foreign = _earlier(out, kind)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise OutputExistsError(
            f"output folder {out} holds files no earlier {kind} wrote there ({shown}); choose "
            "another output folder, or pass --overwrite (overwrite=True) to replace the folder "
            "with this run's results")


@contextmanager
def results_folder(out: str | os.PathLike, kind: str, overwrite: bool = False
                   ) -> Iterator[Path]:
    """A temporary sibling folder to fill with a ``kind`` run's results (tables, figures); it
    replaces ``out`` as a whole when the block succeeds, so ``out`` holds only this run's files
    (never an earlier run's figures beside new tables), and is removed otherwise.

    Checked on entry and again before the replacement: ``out`` may be replaced when it holds only
    an earlier ``kind`` run's output (recorded in ``.l2s-output.json``), or with ``overwrite``;
    anything else is the user's and is refused. Another run into the same ``out`` is refused
    while this one holds its lock. A notebook run's own folder (``$L2S_RUN_FOLDER``, new and
    published as a whole by that run) is written into directly."""
    out = Path(out)
    if os.environ.get(RUN_FOLDER) and out.resolve() == Path(os.environ[RUN_FOLDER]).resolve():
        yield out
        return
    with exclusive(out, kind, OutputExistsError):
        check_results_folder(out, kind, overwrite)
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(out), dir=out.parent))
        try:
            yield tmp
            (tmp / OWNER).write_text(json.dumps({"kind": kind, "files": _files(tmp)}, indent=1))
            check_results_folder(out, kind, overwrite)  # nothing of the user's appeared meanwhile
            publish(tmp, out, overwrite=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
