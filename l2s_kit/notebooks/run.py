"""Running notebooks headless: their declared parameters checked against what is given, each
run with papermill in its own folder, then rendered (HTML, PNGs)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from l2s_kit.errors import L2SError
from l2s_kit.io.choices import BACKENDS
from l2s_kit.io.hub import hub_id
from l2s_kit.notebooks.render import export_pngs, render_html, use_renderer

NOTEBOOKS = Path("notebooks")
# The kernel's own start-up log (e.g. its notice that a local kernel talks over TCP without
# encryption) is not for the notebook's reader: only its errors are shown.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
OUT = Path("figures")


class NotebookError(L2SError):
    """A notebook or its parameters cannot be run as asked."""


SHIPPED = Path(__file__).resolve().parents[2] / "notebooks"  # a source checkout's notebooks


def notebook_folder(name: str) -> Path | None:
    """Where the relative paths of notebook ``name`` resolve: the working folder when it holds
    the notebook (JupyterLab, VS Code, ``papermill --cwd``, ``l2s notebooks run``); else the
    checkout's ``notebooks/`` when the notebook is one of the kit's (plain papermill started in
    another folder); else None (a copy run from elsewhere: the working folder stays)."""
    if (Path.cwd() / f"{name}.ipynb").is_file():
        return Path.cwd()
    if (SHIPPED / f"{name}.ipynb").is_file():
        return SHIPPED
    return None


def setup(name: str | None = None) -> None:
    """The notebooks' set-up cell: relative paths resolved from the notebook's own folder
    (:func:`notebook_folder` of ``name``), whatever folder papermill was started in; plotly
    figures that survive saving and HTML export (the ``"l2s"`` renderer, and plotly.js shown
    once so that plain nbconvert draws them), quiet transformers progress bars, compact pandas
    tables, torch threads no more than the cores the kernel may use."""
    import transformers

    from l2s_kit.io.runtime import limit_threads

    if name is not None:
        folder = notebook_folder(name)
        if folder is not None and folder != Path.cwd():
            os.chdir(folder)
    limit_threads()
    use_renderer()
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display

    from l2s_kit.notebooks.render import plotlyjs_once

    if InteractiveShell.initialized():  # in a kernel: plotly.js once per notebook, for pages
        display({"text/html": plotlyjs_once()}, raw=True)  # rendered by plain nbconvert
    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    pd.set_option("display.precision", 2)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.width", 160)


def find_notebooks(folder: str | os.PathLike = NOTEBOOKS) -> dict[str, Path]:
    """Every ``*.ipynb`` directly in ``folder``, by name (file stem), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotebookError(f"notebook folder {folder} does not exist; run from the repository root "
                            "or name the folder (--dir PATH, or notebooks=PATH)")
    return {p.stem: p for p in sorted(folder.glob("*.ipynb"))}


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict]:
    """The parameters a notebook declares: name → {"default", "type", "help"} (papermill)."""
    import papermill

    params = papermill.inspect_notebook(str(path))
    return {k: {"default": v["default"], "type": _literal_type(v["default"], v["inferred_type_name"]),
                "help": v["help"]} for k, v in params.items()}


def _literal_type(default: str, inferred: str) -> str:
    """The type of a parameters cell's literal default ("0.2" -> "float"); papermill infers
    types only from annotations, which the parameters cells (plain literals) do not have."""
    import ast

    try:
        return type(ast.literal_eval(default)).__name__
    except (ValueError, SyntaxError):
        return inferred


def _load_params_file(path: str | os.PathLike) -> dict:
    from l2s_kit.io.yamlfile import load_mapping

    return load_mapping(path, "parameters file", NotebookError, "a mapping of parameter names to "
                        "values")


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,),
          "dict": (dict,)}


def _check_type(nb: str, name: str, value: object, declared: dict) -> None:
    """``value`` must have the type of the declared default (an int where a float is declared is
    fine; a default of None takes anything)."""
    want = _TYPES.get(declared["type"])
    if want is None:
        return
    ok = isinstance(value, want) and not (isinstance(value, bool) and bool not in want)
    if not ok:
        raise NotebookError(
            f"parameter {name!r} of notebook {nb!r} must be of type {declared['type']} (its default is "
            f"{declared['default']}), got {value!r}; with -p the value is read as YAML "
            "(0.5, [0.2, 0.5], text)")


def _per_notebook(names: Iterable[str], declared: dict[str, dict], given: Mapping,
                  strict: Iterable[str] = ()) -> dict:
    """name → the parameters it gets. Every given name must be declared by some notebook, and
    every name in ``strict`` (given for this run, not from a shared file) by a notebook that
    runs; values must have the declared defaults' types."""
    names = list(names)
    common = {k: v for k, v in given.items() if not (k in declared and isinstance(v, dict))}
    own = {k: v for k, v in given.items() if k in declared and isinstance(v, dict)}
    everywhere = set().union(*(d.keys() for d in declared.values()))
    running = set().union(*(declared[n].keys() for n in names))
    for nb, ps in [(None, common), *own.items()]:
        unknown = sorted(set(ps) - (everywhere if nb is None else set(declared[nb])))
        if unknown:
            where = "any notebook" if nb is None else f"notebook {nb!r}"
            known = sorted(everywhere if nb is None else declared[nb])
            raise NotebookError(f"parameter(s) {', '.join(unknown)} not declared by {where}; "
                                f"declared: {', '.join(known)}")
    unused = sorted(k for k in strict if k in common and k not in running)
    if unused:
        owners = sorted(n for n in declared if unused[0] in declared[n])
        raise NotebookError(f"parameter {unused[0]!r} is declared only by {', '.join(owners)}, "
                            f"which is not being run ({', '.join(names)}); run that notebook or "
                            "drop the parameter")
    out = {n: {**{k: v for k, v in common.items() if k in declared[n]}, **own.get(n, {})}
           for n in names}
    for n, ps in out.items():
        for k, v in ps.items():
            _check_type(n, k, v, declared[n][k])
    return out


PATH_PARAMETERS = ("base", "model", "data_dir", "rows", "responses", "tokenizer")


def _check_pair(nb: str, params: dict, declared: dict, folder: Path) -> None:
    """Refuse, before a kernel starts, a half-given pair, data without a pair and a path that
    does not exist (relative paths are read from the notebook's folder, as the kernel will).
    ``model`` is a path only where ``base`` is declared too (a pair). Only given parameters are
    checked: the declared defaults of these are empty."""
    given = {k: v for k, v in params.items() if v not in (None, "", [])}
    for k in PATH_PARAMETERS:
        if k not in given or (k == "model" and "base" not in declared):
            continue
        for item in given[k] if isinstance(given[k], list) else [given[k]]:
            p = Path(os.path.expanduser(str(item)))
            if k in ("base", "model") and hub_id(str(item)) is not None \
                    and not (folder / p).exists():
                continue  # a hub id: resolved where the notebook reads it
            if not (p if p.is_absolute() else folder / p).exists():
                raise NotebookError(f"parameter {k!r} of notebook {nb!r}: {item} does not exist"
                                    + ("" if p.is_absolute() else f" (read from {folder}, the "
                                       "notebook's folder)"))
    if "base" in declared and "model" in declared:
        if ("base" in given) != ("model" in given):
            had, missing = ("base", "model") if "base" in given else ("model", "base")
            raise NotebookError(f"notebook {nb!r}: parameter {had!r} is given but {missing!r} "
                                "is not; a pair needs both base (System 1) and model (System 2)")
        for k in ("benchmark", "data_dir", "rows", "limit"):
            if k in given and "base" not in given:
                raise NotebookError(f"notebook {nb!r}: parameter {k!r} applies to a pair's "
                                    "data; give base and model too, or drop it")
        if "benchmark" in given and "data_dir" not in given:
            raise NotebookError(f"notebook {nb!r}: parameter 'benchmark' needs 'data_dir' (the "
                                "folder holding <benchmark>/test.jsonl)")
    if "backend" in params and params["backend"] not in BACKENDS:
        raise NotebookError(f"parameter 'backend' of notebook {nb!r} must be transformers or "
                            f"vllm, got {params['backend']!r}")


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_run_name(run: str) -> str:
    """``run`` if it names one folder inside a notebook's output folder: letters, digits, ``.``,
    ``_`` and ``-``, starting with a letter or digit (no ``/``, ``..``, ``.`` or hidden name, so
    a run can never reach, replace or compare against anything outside ``out/<notebook>/``)."""
    if not RUN_NAME.fullmatch(run) or set(run) == {"."}:
        raise L2SError(f"--run {run!r}: a run name is one folder name (letters, digits, '.', '_' "
                       "and '-', starting with a letter or digit), e.g. --run baseline")
    return run


def run_notebooks(names: Iterable[str] | None = None, parameters: Mapping | None = None, *,
                  parameters_file: str | os.PathLike | None = None, run: str | None = None,
                  notebooks: str | os.PathLike = NOTEBOOKS, out: str | os.PathLike = OUT,
                  overwrite: bool = False, png: bool = True, progress: bool = True,
                  timeout: int | None = None) -> pd.DataFrame:
    """Run notebooks (all of ``notebooks/`` by default) with papermill and render them.

    ``parameters`` override those of ``parameters_file``. ``run`` names the output folder
    (default, or ``"auto"``: the time, ``YYYYmmdd-HHMMSS``). Each run folder gets ``run.json``
    and ``metrics.json`` (:mod:`l2s_kit.io.runs`), is compared with the notebook's
    previous run, and ``out/index.html`` (the gallery) is rewritten. Returns one row per
    notebook: notebook, status ("ok" or "failed"), seconds, folder, html, pngs (count), error
    (the failing cell's error), compared_with (the previous run or None), moved (numbers that
    moved since it) and unexplained (numbers moved while parameters and inputs did not).
    """
    from tqdm.auto import tqdm

    found = find_notebooks(notebooks)
    names = list(found) if names is None else list(names)
    missing = [n for n in names if Path(n).stem not in found]
    if missing:
        raise NotebookError(f"no notebook {', '.join(map(repr, missing))} in {notebooks}; "
                            f"available: {', '.join(found) or 'none'}")
    names = [Path(n).stem for n in names]
    if not names:
        raise NotebookError(f"no notebooks in {notebooks}")
    declared = {n: notebook_parameters(p) for n, p in found.items()}
    given = {**(_load_params_file(parameters_file) if parameters_file else {}),
             **(parameters or {})}
    params = _per_notebook(names, declared, given, strict=(parameters or {}).keys())
    for n in names:
        _check_pair(n, params[n], declared[n], found[n].parent.resolve())
    from l2s_kit.io import check_out, check_place

    out = Path(out)
    check_place(out, "notebook runs' folder (--out)")
    reserved = None
    if run in (None, "", "auto"):
        run, reserved = _auto_run_name(out, names)
    else:
        run = check_run_name(run)
    try:
        for n in names:  # fail before running anything when an output folder is in the way
            check_out(out / n / run, overwrite, "notebook")
        rows = []
        for n in tqdm(names, desc="notebooks", unit="notebook", disable=not progress):
            rows.append(_run_one(found[n], params[n], declared[n], out / n / run,
                                 overwrite, png, progress, timeout))
    finally:
        if reserved is not None:
            reserved.rmdir()
    from l2s_kit.notebooks.gallery import write_gallery

    write_gallery(out)
    return pd.DataFrame(rows, columns=["notebook", "status", "seconds", "folder", "html", "pngs",
                                       "error", "compared_with", "moved", "unexplained"])


def _auto_run_name(out: Path, names) -> tuple[str, Path]:
    """The time (``YYYYmmdd-HHMMSS``, then ``-2``, ``-3``, ... when taken) as a run name no
    notebook of ``names`` has yet, reserved by an atomic ``mkdir`` of ``out/.auto-<name>`` so that
    two runs started in the same second never take the same one (the reservation is removed
    when the run ends)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        name = stamp if i == 1 else f"{stamp}-{i}"
        if any((out / n / name).exists() for n in names):
            continue
        try:
            (out / f".auto-{name}").mkdir()
        except FileExistsError:
            continue
        return name, out / f".auto-{name}"
    raise NotebookError(f"{out}: no free run name for {stamp}; give --run NAME")


def _effective(declared: dict, given: dict) -> dict:
    """Every declared parameter's value in this run: the given one, else the default."""
    import ast

    out = {}
    for k, d in declared.items():
        try:
            out[k] = ast.literal_eval(d["default"])
        except (ValueError, SyntaxError):
            out[k] = d["default"]
    return {**out, **given}


TIMEOUT_TRIES = 2  # a notebook whose cell times out runs again once, in a new kernel


def _execute(path: Path, executed: Path, params: dict, progress: bool,
             timeout: int | None, folder: Path) -> str | None:
    """Run the notebook with papermill into ``executed``; the error of the cell that failed, or
    None. A cell that times out (its kernel's reply never came: now and then with a cell that
    displays widgets, jupyter/nbclient#312) runs the notebook again in a new kernel, once. The
    kernel knows ``folder`` as this run's own (``$L2S_RUN_FOLDER``: results written there go
    straight in, see :func:`l2s_kit.io.results_folder`)."""
    from unittest import mock

    from l2s_kit.io.atomic import RUN_FOLDER

    with mock.patch.dict(os.environ, {RUN_FOLDER: str(folder.resolve())}):
        return _execute_tries(path, executed, params, progress, timeout)


def _log_recovered(path: Path) -> None:
    """With L2S_KERNEL_LOG set: append what the steady client recovered to that file."""
    log = os.environ.get("L2S_KERNEL_LOG")
    if log:
        from l2s_kit.notebooks.kernel import RECOVERED

        with open(log, "a") as f:
            f.write(f"{path.stem}: {RECOVERED}\n")


def _execute_tries(path: Path, executed: Path, params: dict, progress: bool,
                   timeout: int | None) -> str | None:
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    from l2s_kit.notebooks.kernel import SteadyKernelManager

    for attempt in range(1, TIMEOUT_TRIES + 1):
        try:
            papermill.execute_notebook(str(path), str(executed), parameters=params,
                                       cwd=str(path.parent), kernel_name="python3",
                                       # never waits forever on a lost wake-up (see kernel.py)
                                       kernel_manager_class=SteadyKernelManager,
                                       # a second bar under the notebooks' one moves the
                                       # cursor ("\x1b[A"): only on a terminal
                                       progress_bar=progress and sys.stderr.isatty(),
                                       execution_timeout=timeout,
                                       extra_arguments=KERNEL_ARGUMENTS)
            _log_recovered(path)
            return None
        except PapermillExecutionError as e:
            return f"cell {e.exec_count}: {e.ename}: {e.evalue}"
        except CellTimeoutError as e:
            if attempt == TIMEOUT_TRIES:
                return (f"a cell did not finish in {timeout} s, {TIMEOUT_TRIES} times "
                        f"({str(e).splitlines()[0]})")
            print(f"{path.stem}: a cell did not finish in {timeout} s; running the notebook "
                  "again in a new kernel", file=sys.stderr)
    return None


def _shareable(nb, path: Path, tmp: Path, folder: Path):
    """The executed notebook as it is shared: this run's temporary folder named as the run's
    folder, the home folder as ``~``, papermill's record of the notebook's paths by file name
    (sources, outputs and metadata; the run record keeps what a rerun needs)."""
    from l2s_kit.io.shared import shown_path

    swaps = [(str(tmp.resolve()), shown_path(folder.absolute())), (str(tmp), shown_path(folder)),
             (str(Path.home().resolve()), "~")]

    def clean(v):
        if isinstance(v, str):
            for a, b in swaps:
                v = v.replace(a, b)
            return v
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    import nbformat

    pm = nb.metadata.get("papermill")
    if pm is not None:
        pm["input_path"], pm["output_path"] = path.name, path.name
    return nbformat.from_dict(clean(nb))


def _run_one(path: Path, params: dict, declared: dict, folder: Path, overwrite: bool,
             png: bool, progress: bool, timeout: int | None) -> dict:
    import nbformat

    from l2s_kit.io import atomic_folder, runs

    start, error = time.perf_counter(), None
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    effective = _effective(declared, params)
    with atomic_folder(folder, overwrite, "notebook") as tmp:
        executed = tmp / path.name
        if "out_dir" in declared:
            params = {**params, "out_dir": str(tmp.resolve())}
        error = _execute(path, executed, params, progress, timeout, tmp)
        nb = _shareable(nbformat.read(executed, as_version=4), path, tmp, folder)
        nbformat.write(nb, executed)
        render_html(nb, tmp / f"{path.stem}.html")
        pngs = export_pngs(nb, tmp) if png and error is None else []
        found = runs.collect(nb)
        record = {"kind": "notebook", "notebook": path.stem, "run": folder.name,
                  "status": "failed" if error else "ok", "error": error, "started": started,
                  "seconds": round(time.perf_counter() - start, 1),
                  "parameters": {k: v for k, v in effective.items() if k != "out_dir"},
                  "given": {k: v for k, v in params.items() if k != "out_dir"},
                  "code": runs.code_version(),
                  "notebook_hash": runs.notebook_hash(nbformat.read(path, as_version=4)),
                  "inputs": found["inputs"],
                  "files": {"html": f"{path.stem}.html", "notebook": path.name,
                            "pngs": [p.name for p in pngs],
                            "other": sorted(p.name for p in tmp.iterdir() if p.is_file()
                                            and p.suffix in (".csv", ".md", ".json"))}}
        before = runs.previous_run(folder.parent, record) if error is None else None
        c = runs.compare_records(before, {**record, "metrics": found["metrics"]}) if before else None
        record["comparison"] = c.summary() if c else None
        runs.write_json({"metrics": found["metrics"]}, tmp / runs.METRICS)
        runs.write_json(record, tmp / runs.RECORD)
    return {"notebook": path.stem, "status": record["status"], "seconds": record["seconds"],
            "folder": str(folder), "html": str(folder / f"{path.stem}.html"), "pngs": len(pngs),
            "error": error, "compared_with": c.a if c else None,
            "moved": c.summary()["numbers_moved"] if c else None,
            "unexplained": c.unexplained if c else None}
