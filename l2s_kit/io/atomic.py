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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from l2s_kit.errors import L2SError, OutputExistsError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


OWNER = ".l2s-output.json"  # in every folder the kit writes: its kind and its files' hashes


def user_cache() -> Path:
    """The kit's cache folder: ``$L2S_CACHE``, else the platform's user cache folder
    (``~/.cache/l2s_kit`` on Linux). Nothing the kit caches lives inside an input."""
    if os.environ.get("L2S_CACHE"):
        return Path(os.environ["L2S_CACHE"])
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # pragma: no cover (a dependency of Jupyter, installed with the kit)
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l2s_kit"
    return Path(user_cache_dir("l2s_kit", appauthor=False))


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """(files, empty folders) below ``folder``, relative, symbolic links listed as files and
    never followed; an unreadable subfolder is listed as itself."""
    files, empty = [], []
    for root, dirs, names in _scandirs(folder):
        rel = Path(root).relative_to(folder)
        files += [(rel / n).as_posix() for n in names]
        if not dirs and not names and root != str(folder):
            empty.append(rel.as_posix() + "/")
    return sorted(files), sorted(empty)


def _scandirs(folder: Path):
    def err(e: OSError) -> None:
        raise OutputExistsError(f"output folder {folder}: {e.filename} cannot be read ({e.strerror})"
                                "; the kit replaces only folders it can see whole: choose a new "
                                "output folder")
    for root, dirs, names in os.walk(folder, onerror=err, followlinks=False):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]
        yield root, dirs, names + links


LEGACY = "legacy"  # a file named by an earlier version's record, which kept no hashes


def _record(folder: Path) -> dict:
    try:
        data = json.loads((folder / OWNER).read_text())
        files = data.get("files")
        if isinstance(data.get("kind"), str) and isinstance(files, list):  # before hashes: a
            return {**data, "files": {f: LEGACY for f in files if isinstance(f, str)}}  # study's
        if isinstance(data.get("kind"), str) and isinstance(files, dict):
            return data
    except (OSError, ValueError, AttributeError):
        pass
    return {"kind": None, "files": {}}


def foreign_files(folder: str | os.PathLike) -> tuple[str | None, list[str]]:
    """(the kind of kit run that wrote ``folder``, or None; what in it that run did not write).
    A file is the kit's when the folder's record (``.l2s-output.json``) names it with the hash of
    its bytes: a file added, or one of the kit's edited since, is the user's."""
    folder = Path(folder)
    record = _record(folder)
    files, empty = _walk(folder)
    mine = record["files"]
    foreign = [f for f in files if f != OWNER and not _same(folder / f, mine.get(f))]
    if OWNER in files and not mine:
        foreign.append(OWNER)
    foreign = sorted(foreign + empty, key=lambda f: (f.count("/") - f.endswith("/"), f))
    return (record["kind"] if mine else None), foreign  # the folder's own entries first


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _same(path: Path, recorded) -> bool:
    """Whether ``path`` is the file the record describes (size, modification time, SHA-256; the
    hash is computed only when the time differs, as after a copy)."""
    if recorded is LEGACY:  # a results folder recorded by name only, as earlier versions did
        return path.is_file() and not path.is_symlink()
    if not (isinstance(recorded, list) and len(recorded) == 3) or path.is_symlink():
        return False
    size, mtime, digest = recorded
    now = _stamp(path)
    return now[0] == size and (now[1] == mtime or sha256_file(path) == digest)


def seal(folder: Path, kind: str, hashes: dict[str, str] | None = None) -> None:
    """Write ``folder``'s record: which kind of run wrote it and each of its files' size and
    SHA-256 (``hashes``: those already computed while writing, by relative name)."""
    hashes = hashes or {}
    files, _ = _walk(folder)
    record = {"kind": kind, "files": {
        f: [*_stamp(folder / f), hashes.get(f) or sha256_file(folder / f)]
        for f in files if f != OWNER}}
    (folder / OWNER).write_text(json.dumps(record, indent=1) + "\n")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def check_place(out: str | os.PathLike, what: str = "output") -> None:
    """Refuse ``out`` where no output may ever be, whatever the flags: the home folder, a
    filesystem root, a folder above the home (a working folder the kit adds files to, too)."""
    why = _refused_place(Path(out))
    if why:
        raise OutputExistsError(f"{what} {out} {why}; the kit never writes an output there, even "
                                "with --overwrite: name a new folder for this output")


def _refused_place(out: Path) -> str | None:
    """Why ``out`` may never be an output whatever the flags (the home folder, a filesystem
    root, a folder above the home), or None."""
    real = _resolved(out, "output")
    home = Path.home().resolve()
    if real == home:
        return "is your home folder"
    if real.parent == real:
        return "is a filesystem root"
    if real in home.parents:
        return f"holds your home folder {home}"
    return None


def claim_output(out: str | os.PathLike, kind: str, overwrite: bool = False, *,
                 replace_own: bool = False) -> None:
    """The one rule for every folder the kit writes: raise OutputExistsError unless ``out`` may
    become a ``kind`` output. The kit deletes or replaces only files it wrote itself:

    - a new path, or an empty folder: written;
    - a folder holding only an earlier output of the kit (every file named with its hash in the
      folder's record): replaced with ``overwrite`` (or, with ``replace_own``, when the earlier
      output is of the same ``kind``: a results folder holds its latest run);
    - a folder holding anything else (a file the kit did not write, or one of its files edited
      since): refused with or without ``overwrite``, naming what it holds;
    - the home folder, a filesystem root or a folder above the home: refused by name.
    """
    out = Path(out)
    check_place(out)
    if out.is_symlink() and not out.exists():
        raise OutputExistsError(f"output {out} is a symbolic link to nothing (or a loop of links); "
                                "remove the link or choose another path")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"output path {out} is a file, not a folder; choose another path")
    earlier, foreign = foreign_files(out)
    if foreign:
        raise OutputExistsError(
            f"output folder {out} holds {len(foreign)} file{'s' * (len(foreign) > 1)} the kit did "
            f"not write ({_shown(foreign)}); the kit replaces only its own earlier output, even "
            "with --overwrite: choose a new folder (or an empty one)")
    if earlier is None or overwrite or (replace_own and earlier == kind):
        return
    raise OutputExistsError(
        f"output folder {out} holds an earlier {earlier} output of the kit; pass --overwrite "
        "(overwrite=True) to replace it, or choose another path")


def _written(digest: str) -> Path:
    return user_cache() / "written" / digest[:2] / digest


def remember_output(path: str | os.PathLike) -> None:
    """Note in the kit's cache that it wrote the file ``path`` with its present bytes (a file
    output has no record of its own: :func:`claim_file` recognises it by its hash)."""
    try:
        mark = _written(sha256_file(path))
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError:
        pass  # a read-only cache: the file is then replaced only after the user removes it


def claim_file(path: str | os.PathLike, overwrite: bool = False, what: str = "output",
               mine: Callable[[Path], bool] | None = None) -> None:
    """The one rule (see :func:`claim_output`) for a file output: a new path is written; an
    existing regular file is replaced only with ``overwrite`` and only when the kit wrote it
    with its present bytes (noted by :func:`remember_output`, or recognised by ``mine``, a test
    of its content); a folder, a device, the home folder or a user's own file never."""
    path = Path(path)
    why = _refused_place(path)
    if why:
        raise OutputExistsError(f"{what} {path} {why}; give the path of a file to write")
    if path.is_symlink() and not path.exists():
        raise OutputExistsError(f"{what} {path} is a symbolic link to nothing (or a loop of "
                                "links); remove the link or choose another path")
    if not path.exists():
        return
    if path.is_dir():
        raise OutputExistsError(f"{what} {path} is a folder; give the path of a file to write "
                                "(e.g. inside that folder)")
    if not path.is_file():
        raise OutputExistsError(f"{what} {path} is not a regular file (a device or a pipe); give "
                                "the path of a file to write")
    if not overwrite:
        raise OutputExistsError(f"{what} {path} exists; pass --overwrite (overwrite=True) to "
                                "replace it, or choose another path")
    if not (_written(sha256_file(path)).exists() or (mine is not None and mine(path))):
        raise OutputExistsError(
            f"{what} {path} was not written by the kit (or was changed since); the kit replaces "
            "only files it wrote itself, even with --overwrite: move it away yourself or choose "
            "another path")


def check_out(out_dir: Path, overwrite: bool, kind: str = "merge") -> None:
    """:func:`claim_output` for a folder output that is replaced only with ``overwrite``."""
    claim_output(out_dir, kind, overwrite)


def _resolved(path: str | os.PathLike, what: str) -> Path:
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:  # a loop of symbolic links
        raise OutputExistsError(f"{what} {path} cannot be resolved ({e}); a loop of symbolic "
                                "links? Remove the link or choose another path") from None


def check_apart(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output that is, contains or lies inside an input (``inputs``: what each is ->
    its path), whatever the flags: nothing the user owns is replaced, removed or mixed with an
    output. Symbolic links are followed."""
    o = _resolved(out, "output")
    for what, path in inputs.items():
        if path is None:
            continue
        i = _resolved(path, what)
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
    pattern = re.compile(rf"^\.{re.escape(_stem(out))}\.tmp-(\d+)-")
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


def _stem(out: Path) -> str:
    """``out``'s name, shortened (with a hash of the whole) where a temporary's name built on it
    would pass the 255 bytes a file name may have."""
    if len(out.name.encode()) <= 200:
        return out.name
    import hashlib

    return out.name.encode()[:120].decode(errors="ignore") + "~" + \
        hashlib.sha256(out.name.encode()).hexdigest()[:12]


def _prefix(out: Path) -> str:
    return f".{_stem(out)}.tmp-{os.getpid()}-"


def temp_sibling(out_dir: Path, overwrite: bool, kind: str = "merge") -> Path:
    """Check the output path (:func:`claim_output`) and make the temporary sibling the output is
    built in."""
    claim_output(out_dir, kind, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    return Path(tempfile.mkdtemp(prefix=_prefix(out_dir), dir=out_dir.parent))


def publish(tmp: Path, out_dir: Path, overwrite: bool = False, kind: str = "merge", *,
            replace_own: bool = False, hashes: dict[str, str] | None = None) -> None:
    """Seal the finished temporary folder (:func:`seal`) and move it into place. An old output is
    replaced only at the end, only as :func:`claim_output` allows, and checked once more after
    it is moved aside: anything of the user's that appeared meanwhile is put back, untouched."""
    seal(tmp, kind, hashes)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the output gets the usual mode
    try:  # onto nothing or an empty folder: no window between a check and the rename
        os.rename(tmp, out_dir)
        return
    except OSError as e:
        if not (out_dir.exists() or out_dir.is_symlink()):
            raise
        if not (overwrite or replace_own):
            raise OutputExistsError(
                f"output folder {out_dir} appeared while this run was writing it (another run "
                "into the same folder?); it was left as it is. Choose another path or pass "
                "overwrite=True (--overwrite) to replace it.") from e
    claim_output(out_dir, kind, overwrite, replace_own=replace_own)
    old = Path(tempfile.mkdtemp(prefix=f".{_stem(out_dir)}.old-", dir=out_dir.parent))
    os.rmdir(old)
    os.rename(out_dir, old)
    if old.is_symlink():  # a symbolic link is removed itself: what it points at is not ours
        os.rename(tmp, out_dir)
        old.unlink()
        return
    try:
        claim_output(old, kind, overwrite, replace_own=replace_own)
    except OutputExistsError:
        os.rename(old, out_dir)
        raise
    os.rename(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(out_dir: str | os.PathLike, overwrite: bool = False, kind: str = "merge",
                  ) -> Iterator[Path]:
    """A temporary sibling folder to fill; it becomes ``out_dir`` when the block succeeds (an old
    ``out_dir`` is replaced only then, and only as :func:`claim_output` allows) and is removed
    otherwise."""
    out_dir = Path(out_dir)
    tmp = temp_sibling(out_dir, overwrite, kind)
    try:
        yield tmp
        publish(tmp, out_dir, overwrite, kind)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike, remember: bool = False) -> Iterator[Path]:
    """A temporary sibling path to write (same suffix); it replaces ``path`` when the block
    succeeds and is removed otherwise, so ``path`` is never seen half-written. With ``remember``
    (an output the user named) the kit notes that it wrote it (:func:`remember_output`)."""
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
        if remember:
            remember_output(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_csv(df, path: str | os.PathLike, remember: bool = False, **to_csv) -> Path:
    """``df`` as CSV at ``path`` (no index; ``to_csv``: pandas' options, e.g. ``float_format``),
    written through :func:`atomic_file`: complete or not at all."""
    with atomic_file(path, remember) as tmp:
        df.to_csv(tmp, index=False, **to_csv)
    return Path(path)


class exclusive:
    """An exclusive lock on the output ``path`` (a hidden ``.<name>.lock`` beside what the path
    resolves to, so a symbolic link to it takes the same lock), refused at once while another
    run holds it: ``error`` is raised with "<path>: another <what> is writing this now; ...".
    The lock file is removed when the block ends."""

    def __init__(self, path: str | os.PathLike, what: str = "run", error: type = L2SError):
        real = Path(path).resolve()
        self.path = real.parent / f".{_stem(real)}.lock"
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


# A notebook run's own folder (new, and published as a whole by that run), set while its kernel
# runs: a results folder that is this one is written into directly.
RUN_FOLDER = "L2S_RUN_FOLDER"


def check_results_folder(out: str | os.PathLike, kind: str, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` that a ``kind`` results folder may not replace
    (:func:`claim_output`: an earlier ``kind`` run's folder is replaced, another kit output only
    with ``overwrite``, anything else never), or under a folder that cannot be written."""
    claim_output(out, kind, overwrite, replace_own=True)
    check_room(out, 0)


@contextmanager
def results_folder(out: str | os.PathLike, kind: str, overwrite: bool = False
                   ) -> Iterator[Path]:
    """A temporary sibling folder to fill with a ``kind`` run's results (tables, figures); it
    replaces ``out`` as a whole when the block succeeds, so ``out`` holds only this run's files
    (never an earlier run's figures beside new tables), and is removed otherwise.

    Checked on entry and again before the replacement (:func:`claim_output`): ``out`` may be
    replaced when it holds only an earlier ``kind`` run's output, or another output of the kit
    with ``overwrite``; anything else is the user's and is refused. Another run into the same
    ``out`` is refused while this one holds its lock. A notebook run's own folder
    (``$L2S_RUN_FOLDER``, new and published as a whole by that run) is written into directly."""
    out = Path(out)
    if os.environ.get(RUN_FOLDER) and out.resolve() == Path(os.environ[RUN_FOLDER]).resolve():
        yield out
        return
    check_results_folder(out, kind, overwrite)  # before the lock is made beside it
    with exclusive(out, kind, OutputExistsError):
        check_results_folder(out, kind, overwrite)
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(out), dir=out.parent))
        try:
            yield tmp
            publish(tmp, out, overwrite, kind, replace_own=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
