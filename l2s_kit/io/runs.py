"""Run records: what a run was given, what it read and what it found, and two runs compared.

Every run folder (a notebook's ``figures/<notebook>/<run>/``, the study's ``figures/study/``)
holds ``run.json``: its parameters, the kit's version and git commit, the notebook's code hash,
fingerprints of its inputs (checkpoints by weights hash, data by content hash), status, date and
duration, and the files it made; and ``metrics.json``: its key numbers, flat ``name → value``.

A notebook states its key numbers and inputs with one helper, its last cell::

    l2s_kit.notebooks.metrics(summary.set_index("model")[["accuracy", "mean_tokens"]],
                              inputs=setup.fingerprints())

which shows them as a table and tags them (mimetype ``application/vnd.l2s.metrics+json``) so that
the runner finds them in the executed notebook. :func:`compare_runs` tells what changed between two
runs: parameters, inputs, code, and the numbers that moved beyond a tolerance.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from l2s_kit.errors import L2SError

METRICS_MIME = "application/vnd.l2s.metrics+json"
RECORD = "run.json"
METRICS = "metrics.json"
RTOL, ATOL = 1e-3, 1e-9  # a number moved when |a - b| > max(ATOL, RTOL · max(|a|, |b|))


class RunError(L2SError):
    """A run folder or its record is missing or unreadable."""


# ---- the notebooks' helper ---------------------------------------------------------------------

def flatten(numbers, prefix: str = "") -> dict[str, float | None]:
    """Key numbers as flat ``name → float`` (None for a missing value). A DataFrame gives
    ``<row label>.<column>`` for its numeric columns (a MultiIndex label joined with "/"), a
    Series ``<label>`` (joined likewise), a mapping its keys joined with "."; text values are left out."""
    out: dict[str, float | None] = {}

    def put(key: str, v) -> None:
        if isinstance(v, bool):
            v = float(v)
        if v is None or isinstance(v, (int, float)) or hasattr(v, "dtype"):
            try:
                f = None if v is None else float(v)
            except (TypeError, ValueError):
                return
            out[key] = None if f is None or math.isnan(f) else f

    if isinstance(numbers, pd.DataFrame):
        num = numbers.select_dtypes(include=["number", "bool"])
        for label, row in num.iterrows():
            name = "/".join(map(str, label)) if isinstance(label, tuple) else str(label)
            for col, v in row.items():
                put(f"{prefix}{name}.{col}", v)
    elif isinstance(numbers, pd.Series):
        for label, v in numbers.items():
            put(prefix + ("/".join(map(str, label)) if isinstance(label, tuple) else str(label)), v)
    elif isinstance(numbers, Mapping):
        for k, v in numbers.items():
            if isinstance(v, (Mapping, pd.DataFrame, pd.Series)):
                out.update(flatten(v, f"{prefix}{k}."))
            else:
                put(f"{prefix}{k}", v)
    else:
        raise TypeError(f"metrics: a DataFrame, Series or mapping of numbers, got {type(numbers).__name__}")
    return out


class Metrics:
    """Key numbers and input fingerprints, shown as a table and tagged for the runner."""

    def __init__(self, numbers, inputs: Mapping[str, str] | None = None):
        self.numbers = flatten(numbers)
        self.inputs = {str(k): str(v) for k, v in (inputs or {}).items()}

    def _repr_mimebundle_(self, include=None, exclude=None):
        from l2s_kit.io.shared import md_text

        rows = [f"| {md_text(k)} | {'' if v is None else f'{v:.6g}'} |"
                for k, v in self.numbers.items()]
        rows += [f"| input {md_text(k)} | {md_text(v[:19])} |" for k, v in self.inputs.items()]
        md = "Key numbers of this run (compared between runs):\n\n| | |\n|---|---:|\n" + "\n".join(rows)
        return {METRICS_MIME: {"metrics": self.numbers, "inputs": self.inputs},
                "text/markdown": md, "text/plain": md}


def metrics(numbers, inputs: Mapping[str, str] | None = None) -> Metrics:
    """The helper every notebook's last cell calls: ``numbers`` (see :func:`flatten`) and
    ``inputs`` (name → fingerprint, e.g. :meth:`l2s_kit.study.StudySetup.fingerprints`) shown and
    recorded; a headless run writes them to its ``metrics.json``."""
    return Metrics(numbers, inputs)


def collect(nb) -> dict:
    """The metrics and inputs every :func:`metrics` output of an executed notebook holds."""
    out: dict = {"metrics": {}, "inputs": {}}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            d = o.get("data", {}).get(METRICS_MIME)
            if d:
                out["metrics"].update(d.get("metrics", {}))
                out["inputs"].update(d.get("inputs", {}))
    return out


# ---- fingerprints ------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: str | os.PathLike) -> str:
    """A checkpoint folder by its weights hash (``weights:<sha256>``, the hash every response
    row carries), a file by its bytes, another folder by its files' names and bytes
    (``sha256:<hex>``; hidden files and caches left out)."""
    p = Path(path)
    if not p.exists():
        raise RunError(f"input {p} does not exist")
    if p.is_dir() and any(p.glob("*.safetensors")):
        from l2s_kit.io.identity import checkpoint_hash

        return f"weights:{checkpoint_hash(p)}"
    if p.is_file():
        return f"sha256:{_sha256_file(p)}"
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            h.update(f"{rel.as_posix()}\0{_sha256_file(f)}\n".encode())
    return f"sha256:{h.hexdigest()}"


def rows_fingerprint(rows) -> str:
    """The content hash of data rows (as the study and notebooks hold them)."""
    blob = json.dumps(list(rows), sort_keys=True, default=str).encode()
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"


def notebook_hash(nb) -> str:
    """The hash of a notebook's code cells (its outputs and metadata do not count)."""
    code = "\n\0".join(c.source for c in nb.cells if c.cell_type == "code"
                       and "parameters" not in c.metadata.get("tags", []))
    return hashlib.sha256(code.encode()).hexdigest()


def code_version() -> dict:
    """The kit's version and, when it runs from a git checkout, its commit (``dirty`` when
    tracked files differ from it)."""
    from l2s_kit.version import __version__

    repo = Path(__file__).resolve().parents[2]
    out = {"version": __version__, "commit": None, "dirty": None}
    if not (repo / ".git").exists():
        return out
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return out
    return {**out, "commit": commit, "dirty": bool(dirty)}


# ---- records -----------------------------------------------------------------------------------

def write_json(data: dict, path: Path) -> Path:
    """A run record (or its metrics) at ``path``, paths under the home written ``~/...``."""
    from l2s_kit.io import atomic_file
    from l2s_kit.io.shared import home_paths

    data = home_paths(json.loads(json.dumps(data, default=str)))
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return path


# the fields of a run record that the gallery and comparisons read, with their types
FIELDS = {"kind": str, "notebook": str, "run": str, "status": str, "started": str,
          "seconds": (int, float), "parameters": dict, "inputs": dict, "code": dict,
          "files": dict, "comparison": dict}


def skipped(e: RunError) -> None:
    """Say in one line that a damaged run record is passed over (the work goes on)."""
    import sys

    print(f"note: passed over a damaged run record: {e}", file=sys.stderr)


def read_record(folder: str | os.PathLike) -> dict:
    """``run.json`` of a run folder, with its ``metrics.json`` under ``"metrics"``."""
    folder = Path(folder)
    path = folder / RECORD
    if not path.is_file():
        raise RunError(f"{folder} is not a run folder: it has no {RECORD} (runs made by "
                       "`l2s notebooks run` or `l2s study` have one)")
    record = _json_mapping(path)
    for key, kind in FIELDS.items():
        if record.get(key) is not None and not isinstance(record[key], kind):
            raise RunError(f"{path}: field {key!r} is {record[key]!r}, not a "
                           f"{'number' if kind == (int, float) else kind.__name__}; the file is "
                           "damaged (delete the run folder, or run it again)")
    m = folder / METRICS
    metrics = _json_mapping(m).get("metrics", {}) if m.is_file() else {}
    if not isinstance(metrics, dict) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in metrics.values()):
        raise RunError(f"{m}: 'metrics' must map names to numbers; the file is damaged (delete "
                       "the run folder, or run the notebook again)")
    record["metrics"] = metrics
    record["folder"] = str(folder)
    return record


def _json_mapping(path: Path) -> dict:
    """A JSON object file of a run folder; a damaged one is a :class:`RunError` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: cannot read it ({e}); the file is damaged (delete the run "
                       "folder, or run the notebook again)") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(data).__name__}; the file is "
                       "damaged (delete the run folder, or run the notebook again)")
    return data


def runs_of(folder: str | os.PathLike) -> list[dict]:
    """The records of every run folder directly in ``folder`` (a notebook's), oldest first."""
    out = []
    for d in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if d.is_dir() and (d / RECORD).is_file() and not d.name.startswith("."):
            try:
                out.append(read_record(d))
            except RunError as e:
                skipped(e)
    return sorted(out, key=lambda r: str(r.get("started", "")))


def previous_run(folder: str | os.PathLike, record: dict) -> dict | None:
    """The latest run in ``folder`` (a notebook's runs) that finished before ``record`` started
    and is not the same run, or None."""
    earlier = [r for r in runs_of(folder) if r.get("run") != record.get("run")
               and r.get("started", "") < record.get("started", "")
               and r.get("status") == "ok"]
    return earlier[-1] if earlier else None


# ---- comparing two runs ------------------------------------------------------------------------

@dataclass
class Comparison:
    """What changed from run ``a`` to run ``b``."""

    a: str
    b: str
    parameters: list[tuple[str, object, object]] = field(default_factory=list)
    inputs: list[tuple[str, object, object]] = field(default_factory=list)
    code: list[tuple[str, object, object]] = field(default_factory=list)
    numbers: pd.DataFrame = field(default_factory=pd.DataFrame)  # name, a, b, change: moved only
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def moved(self) -> bool:
        """Numbers moved beyond the tolerance (or appeared, or went away)."""
        return bool(len(self.numbers) or self.added or self.removed)

    @property
    def unexplained(self) -> bool:
        """Numbers moved while the parameters and inputs did not."""
        return self.moved and not self.parameters and not self.inputs

    def summary(self) -> dict:
        return {"compared_with": self.a, "parameters_changed": [p for p, _, _ in self.parameters],
                "inputs_changed": [p for p, _, _ in self.inputs],
                "code_changed": [p for p, _, _ in self.code],
                "numbers_moved": int(len(self.numbers) + len(self.added) + len(self.removed)),
                "unexplained": self.unexplained}

    def format(self) -> str:
        lines = [f"{self.a} → {self.b}"]
        for title, items in (("parameters", self.parameters), ("inputs", self.inputs),
                             ("code", self.code)):
            if items:
                lines.append(f"{title} changed:")
                lines += [f"  {k}: {_short(a)} → {_short(b)}" for k, a, b in items]
            else:
                lines.append(f"{title}: unchanged")
        if len(self.numbers):
            lines.append(f"numbers moved ({len(self.numbers)}):")
            lines += [f"  {r.name}: {r.a:.6g} → {r.b:.6g} ({r.change:+.4g})"
                      for r in self.numbers.itertuples()]
        lines += [f"  {k}: new in {self.b}" for k in self.added]
        lines += [f"  {k}: gone in {self.b}" for k in self.removed]
        if not self.moved:
            lines.append("numbers: none moved")
        elif self.unexplained:
            lines.append("numbers moved while parameters and inputs did not"
                         + (" (the code changed)" if self.code else ""))
        return "\n".join(lines)


def _short(v) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 70 else s[:67] + "..."


def _diff(a: Mapping, b: Mapping, skip=()) -> list[tuple[str, object, object]]:
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in skip and a.get(k) != b.get(k)]


def moved(x: float | None, y: float | None, rtol: float = RTOL, atol: float = ATOL) -> bool:
    if x is None or y is None:
        return (x is None) != (y is None)
    return abs(x - y) > max(atol, rtol * max(abs(x), abs(y)))


def compare_records(a: dict, b: dict, rtol: float = RTOL, atol: float = ATOL) -> Comparison:
    """:class:`Comparison` of two run records (as :func:`read_record` gives them)."""
    ma, mb = a.get("metrics", {}), b.get("metrics", {})
    rows = [{"name": k, "a": ma[k], "b": mb[k],
             "change": (mb[k] - ma[k]) if None not in (ma[k], mb[k]) else float("nan")}
            for k in ma if k in mb and moved(ma[k], mb[k], rtol, atol)]
    code_a = {**(a.get("code") or {}), "notebook": a.get("notebook_hash")}
    code_b = {**(b.get("code") or {}), "notebook": b.get("notebook_hash")}
    return Comparison(
        a=a.get("run", "a"), b=b.get("run", "b"),
        parameters=_diff(a.get("parameters", {}), b.get("parameters", {}), skip=("out_dir",)),
        inputs=_diff(a.get("inputs", {}), b.get("inputs", {})),
        code=_diff(code_a, code_b),
        numbers=pd.DataFrame(rows, columns=["name", "a", "b", "change"]),
        added=sorted(set(mb) - set(ma)), removed=sorted(set(ma) - set(mb)))


def compare_runs(a: str | os.PathLike, b: str | os.PathLike, rtol: float = RTOL,
            atol: float = ATOL) -> Comparison:
    """Compare the run folders ``a`` (earlier) and ``b``."""
    return compare_records(read_record(a), read_record(b), rtol, atol)
