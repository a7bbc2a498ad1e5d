"""Evaluate a model on rows of (id, prompt, gold): generate, extract, grade, append to responses.jsonl.

One JSON line per sample, carrying what produced it: the model's name, its weights hash, the
recipe hash of a merge, the generation settings, the grader, and a hash of the row's prompt and
gold. Runs resume: samples already in the file (same model, dataset, id and sample index) are not
generated again, new ones are appended and synced to disk after every batch, and a line cut short
by an interruption is dropped before appending. A resume never mixes runs: rows of the same model
name with other weights, settings, grader or recipe, or a row whose prompt or gold changed under
its old id, are refused with a message naming what differs; and one evaluation at a time writes a
file (a second one is refused while the first holds the file's lock).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from l2s_kit.errors import L2SError
from l2s_kit.evaluate.backends import (
    DEFAULT_SETTINGS,
    Backend,
    GenerationSettings,
    TransformersBackend,
)
from l2s_kit.evaluate.extract import Extraction, extract_answer, final_part, grade
from l2s_kit.io import atomic_file

COLUMNS = ["model", "weights_hash", "recipe_hash", "files_hash", "dataset", "id", "level", "sample",
           "prompt", "response", "n_tokens", "finish_reason", "answer", "gold", "correct", "generation",
           "grader", "row_hash", "answer_scope"]
REQUIRED = ("id", "prompt", "gold")
CHUNK_BATCHES = 4  # prompts per backend call and write: this many batches
AUTO_CHUNK = 256  # the batch assumed for a chunk when the backend chooses its own


class ResponsesError(L2SError):
    """A responses file or the rows to evaluate cannot be used as they are."""


def _not_a_file(path: Path) -> str:
    """Why ``path`` is no file to read: it does not exist, is a folder, or is a device or pipe."""
    if path.is_dir():
        return "is a folder; give the jsonl file inside it"
    if path.exists():
        return "is not a regular file (a device or a pipe); give a jsonl file"
    return "does not exist"


def _row_problem(row: dict) -> str | None:
    """What is wrong with a row to evaluate (a missing field, an empty prompt), or None."""
    for field in REQUIRED:
        if field not in row:
            return f"missing field {field!r} (each row needs {', '.join(REQUIRED)})"
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        return f"field 'prompt' must be a non-empty string, got {row['prompt']!r}"
    gold = row["gold"]
    golds = gold if isinstance(gold, list) else [gold]
    if not golds or any(isinstance(g, bool) or not isinstance(g, (str, int, float))
                        or not str(g).strip() or g != g for g in golds):
        return (f"field 'gold' must be the answer (a non-empty string or a number, or a list of "
                f"them), got {gold!r}; a problem without an answer cannot be graded")
    return None


def load_rows(path: str | os.PathLike) -> list[dict]:
    """Rows to evaluate from a jsonl file (``id``, ``prompt``, ``gold``, optional ``dataset``,
    ``level``); errors name the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise ResponsesError(f"data file {path} " + _not_a_file(path))
    from l2s_kit.io.jsonl import json_objects

    rows = []
    for lineno, row in json_objects(path, ResponsesError, ", ".join(REQUIRED)):
        problem = _row_problem(row)
        if problem:
            raise ResponsesError(f"{path}, line {lineno}: {problem}")
        rows.append(row)
    if not rows:
        raise ResponsesError(f"{path} holds no rows; give a jsonl file with one object per line "
                             f"({', '.join(REQUIRED)})")
    _same_kind_of_level(rows, path)
    return rows


def _same_kind_of_level(rows: list[dict], path: Path) -> None:
    """Levels are numbers (``"3"`` is taken as 3) or names, one kind per file: 1 and "1" are one
    level, and numbers and names cannot be ordered together."""
    kinds = {}
    for lineno, row in enumerate(rows, 1):
        level = row.get("level")
        if isinstance(level, str) and level.strip().lstrip("-").isdigit():
            row["level"] = level = int(level)
        if level is None:
            continue
        if isinstance(level, bool) or not isinstance(level, (int, str)):
            raise ResponsesError(f"{path}, row {lineno}: field 'level' must be a whole number or "
                                 f"a name, got {level!r}")
        kinds.setdefault(type(level), (lineno, level))
    if len(kinds) > 1:
        (a, va), (b, vb) = kinds.values()
        raise ResponsesError(f"{path}: levels mix numbers and names (row {a}: {va!r}, row {b}: "
                             f"{vb!r}); give every level as a number, or every one as a name")


KIT_ROW = ("model", "dataset", "id", "sample", "row_hash")  # what every row the kit writes has


def _foreign_row(rows: list) -> int | None:
    """The line number of the first row that is not one the kit writes (None: all are)."""
    return next((i for i, r in enumerate(rows, 1)
                 if not (isinstance(r, dict) and all(k in r for k in KIT_ROW))), None)


def is_responses_file(path: Path) -> bool:
    """Whether ``path`` holds only rows the kit writes (a responses file of ``l2s eval``)."""
    try:
        return _foreign_row(_read_lines(path, repair=False)) is None
    except (L2SError, OSError, UnicodeDecodeError):
        return False


def _read_lines(path: Path, repair: bool) -> list[dict]:
    """The JSON rows of a responses file. A last line without its newline (an interrupted write)
    is dropped with a warning, and with ``repair`` (for a file the evaluation appends to) the
    file must hold only the kit's rows, and is rewritten without it atomically."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ResponsesError(
                f"{path}, line {lineno}: not valid JSON ({e}); the file is damaged: delete it "
                "(or that line) or write to another path") from None
    if repair and (bad := _foreign_row(rows)) is not None:
        raise ResponsesError(
            f"{path}, line {bad}: not a response row written by the kit (each has "
            f"{', '.join(KIT_ROW)}); l2s eval appends only to its own responses files: choose "
            "another output path")
    if tail.strip():
        try:
            rows.append(json.loads(tail))  # complete, only the newline is missing
            keep = data + b"\n"
        except json.JSONDecodeError:
            warnings.warn(f"{path}: dropped an incomplete last line (an interrupted write)",
                          stacklevel=3)
            keep = data[:len(data) - len(tail)]
        if repair:
            with atomic_file(path) as tmp:
                tmp.write_bytes(keep)
    return rows


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object)
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def load_responses(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> pd.DataFrame:
    """All rows of one or several responses.jsonl files, one DataFrame row per sample."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows = []
    for p in map(Path, paths):
        if not p.is_file():
            raise ResponsesError(f"responses file {p} " + _not_a_file(p))
        rows.extend(_read_lines(p, repair=False))
    return _frame(rows)


def _key(model, dataset, id_, sample) -> tuple:
    return (str(model), str(dataset), str(id_), int(sample))


def _recipe_hash(model) -> str | None:
    from l2s_kit.merging import MERGE_INFO, read_merge_info

    if model is None or not (Path(model) / MERGE_INFO).is_file():
        return None
    return read_merge_info(model).get("recipe_hash")


def _check_rows(rows: Iterable[dict]) -> list[dict]:
    out, seen = [], set()
    for k, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            raise ResponsesError(f"row {k} (id {row.get('id', '?')!r}): {problem}")
        r = {"dataset": row.get("dataset", "data"), "id": row["id"], "level": row.get("level"),
             "prompt": row["prompt"], "gold": row["gold"]}
        r["row_hash"] = row_hash(r)
        if row.get("split") is not None:
            r["split"] = row["split"]
        key = (str(r["dataset"]), str(r["id"]))
        if key in seen:
            raise ResponsesError(f"rows hold id {r['id']!r} of dataset {r['dataset']!r} twice; "
                                 "ids must be unique within a dataset")
        seen.add(key)
        out.append(r)
    return out


def row_hash(row: dict) -> str:
    """A short hash of a row's prompt and gold: an edited row under an old id is noticed."""
    import hashlib

    text = json.dumps([row["prompt"], str(row["gold"])], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def grader_name(grader) -> str:
    """How a grader is recorded on rows: its ``name`` attribute, else its function name."""
    name = getattr(grader, "name", None) or getattr(grader, "__name__", None)
    return str(name or type(grader).__name__)


def _resume_problem(r: dict, *, out: Path, model_name: str, gen: dict, weights: str | None,
                    recipe_hash: str | None, grader: str, rows: dict,
                    files: str | None = None) -> str | None:
    """Why a row of ``out`` cannot be resumed by this evaluation (None when it can)."""
    again = "; give this model another name or write to another output path"
    if r.get("generation") != gen:
        return (f"{out} holds responses of model {model_name!r} generated with other settings "
                f"({r.get('generation')}, now {gen}){again}")
    if files is not None and r.get("files_hash") not in (None, files):
        return (f"{out} holds responses of model {model_name!r} whose config or tokenizer files "
                f"were others (config.json, generation_config.json, tokenizer files: hash "
                f"{r['files_hash']}, now {files}): the checkpoint was edited{again}")
    if weights is not None and r.get("weights_hash") not in (None, weights):
        return (f"{out} holds responses of model {model_name!r} with other weights (weights hash "
                f"{str(r['weights_hash'])[:12]}…, now {weights[:12]}…): another checkpoint under "
                f"the same name{again}")
    same_weights = weights is not None and r.get("weights_hash") == weights
    # the same weights are the same model: a recipe naming its inputs by other paths (another
    # working folder) merges nothing else
    if recipe_hash is not None and r.get("recipe_hash") not in (None, recipe_hash) \
            and not same_weights:
        return (f"{out} holds responses of model {model_name!r} merged by another recipe "
                f"(recipe hash {r['recipe_hash']}, now {recipe_hash}){again}")
    if r.get("grader") not in (None, grader):
        return (f"{out} holds responses of model {model_name!r} graded by {r['grader']!r}, now "
                f"{grader!r}; grade again with that grader, or write to another output path")
    new = rows.get((str(r.get("dataset")), str(r.get("id"))))
    if new is not None and r.get("row_hash") not in (None, new["row_hash"]):
        return (f"{out}: row {r.get('id')!r} of dataset {r.get('dataset')!r} has another prompt or "
                "gold now than when its response was generated; give edited rows new ids, or "
                "write to another output path")
    return None


def _identity(model, backend, model_name, recipe_hash, weights_hash) -> tuple:
    """(model name, recipe hash, weights hash, files hash) of what is evaluated, each the given
    one or the folder's (no files hash for a backend without a folder)."""
    from l2s_kit.io import checkpoint_hash, files_hash

    if model_name is None:
        model_name = Path(model).name if model is not None else backend.name
    if recipe_hash is None:
        recipe_hash = _recipe_hash(model)
    if weights_hash is None and model is not None:
        weights_hash = checkpoint_hash(model)
    return model_name, recipe_hash, weights_hash, files_hash(model) if model is not None else None


def evaluate(model: str | os.PathLike | None, rows: Iterable[dict], out: str | os.PathLike, *,
             backend: Backend | None = None, settings: GenerationSettings = DEFAULT_SETTINGS,
             model_name: str | None = None, recipe_hash: str | None = None,
             extract: Callable[[str], str | None | Extraction] = extract_answer,
             grader: Callable[[str | None, object], bool] = grade, progress: bool = True,
             device: str = "cpu", weights_hash: str | None = None,
             after_think: bool = True) -> pd.DataFrame:
    """Generate ``settings.n`` samples per row, grade them, and append them to ``out`` (jsonl).

    ``model`` is a checkpoint folder, run with a :class:`TransformersBackend` on ``device`` unless
    ``backend`` is given (it is loaded only when something is left to generate). ``model_name``
    defaults to the folder name, ``recipe_hash`` to the one in the folder's ``l2s_merge.json``,
    ``weights_hash`` to the folder's (:func:`l2s_kit.io.checkpoint_hash`; give it with a
    ``backend`` holding weights of its own, e.g. an in-memory merge).
    ``rows`` need ``id``, ``prompt``, ``gold``; ``dataset`` (default "data") and ``level`` are
    optional. ``extract`` may return an :class:`Extraction` (``extract_labelled``: the row gets
    ``answer_source``) and ``grader`` may have a ``grade`` method giving a status
    (:class:`MathGrader`: the row gets ``grade_status``, e.g. ``timeout``). With ``after_think``
    (the default), a response with a closed ``<think>`` block is graded on the text after it;
    each row records ``answer_scope`` ("after_think" or "whole").
    Samples already in ``out`` for this model are kept and not generated again; ``out`` holding
    this model's rows with other weights, config or tokenizer files, settings, recipe or grader,
    or for an edited row, is an error naming what differs. A row's level is the one given now.

    Returns this model's rows of ``out`` for the given ``rows``, one per sample (columns:
    ``COLUMNS``); rows of other problems the file may hold (an earlier run) are left out.
    ``df.attrs["generated"]``: the samples this call generated, their tokens and the seconds
    generating and grading them took (all 0 when every sample was resumed).
    """
    from l2s_kit.io.atomic import exclusive

    if model is None and backend is None:
        raise ResponsesError("evaluate needs a checkpoint folder (model=...) or a backend")
    model_name, recipe_hash, weights_hash, files = _identity(model, backend, model_name,
                                                             recipe_hash, weights_hash)
    out, gen, graded_by = _responses_path(out), settings.to_dict(), grader_name(grader)
    todo_rows = _check_rows(rows)
    by_id = {(str(r["dataset"]), str(r["id"])): r for r in todo_rows}

    with exclusive(out, "evaluation", ResponsesError):
        mine = _resumed(out, model_name, rows=by_id, gen=gen, weights=weights_hash,
                        recipe_hash=recipe_hash, grader=graded_by, files=files)
        done, todo = _missing(todo_rows, mine, model_name, settings.n)
        start, new = time.perf_counter(), []
        if todo:
            if backend is None:
                backend = TransformersBackend(model, device=device, progress=False)
            ident = {"model": model_name, "weights_hash": weights_hash, "recipe_hash": recipe_hash,
                     "files_hash": files, "gen": gen, "grader_name": graded_by,
                     "after_think": after_think}
            new = _generate_into(out, todo, done, backend, settings, ident, extract, grader,
                                 progress)
        generated = {"samples": len(new), "tokens": sum(r["n_tokens"] for r in new),
                     "seconds": time.perf_counter() - start if new else 0.0}
        mine += new
    df = _as_given(mine, by_id)
    df.attrs["generated"] = generated  # what this call generated (nothing: all resumed)
    return df


def _missing(rows: list[dict], mine: list[dict], model_name: str, n: int
             ) -> tuple[set[tuple], list[dict]]:
    """(the samples already in the file, the rows with a sample still to generate)."""
    done = {_key(model_name, r["dataset"], r["id"], r["sample"]) for r in mine}
    return done, [r for r in rows if any(_key(model_name, r["dataset"], r["id"], j) not in done
                                         for j in range(n))]


def _as_given(mine: list[dict], by_id: dict) -> pd.DataFrame:
    """This model's responses of the rows given, each with the row's level as given now (a
    level edited since a response was generated is the new one)."""
    return _frame([{**r, "level": by_id[(str(r.get("dataset")), str(r.get("id")))]["level"]}
                   for r in mine if (str(r.get("dataset")), str(r.get("id"))) in by_id])


def _responses_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ResponsesError(f"{out} is a folder; --out / out is the responses file to write, "
                             "e.g. runs/responses.jsonl")
    if out.exists() and not out.is_file():
        raise ResponsesError(f"{out} is not a regular file (a device or a pipe); --out / out is "
                             "the responses file to write, e.g. runs/responses.jsonl")
    return out


def _resumed(out: Path, model_name: str, **identity) -> list[dict]:
    """This model's rows already in ``out``, each checked against what is asked now (an error
    naming what differs)."""
    mine = []
    if out.exists():
        for r in _read_lines(out, repair=True):
            if r.get("model") != model_name:
                continue
            problem = _resume_problem(r, out=out, model_name=model_name, **identity)
            if problem:
                raise ResponsesError(problem)
            mine.append(r)
    return mine


def _generate_into(out: Path, rows: list[dict], done: set[tuple], backend: Backend,
                   settings: GenerationSettings, ident: dict, extract, grader,
                   progress: bool) -> list[dict]:
    """Generate ``rows``, append their samples to ``out`` batch by batch; return the new rows."""
    from tqdm.auto import tqdm

    model_name = ident["model"]
    written = []
    with open(out, "a", encoding="utf-8") as f, \
            tqdm(total=len(rows), desc=f"eval {model_name}", unit="prompt",
                 disable=not progress) as bar:
        # prompts handed to the backend at once (and written together): several batches, so a
        # continuous-batching backend always has prompts waiting for a row that ends
        chunk = CHUNK_BATCHES * (settings.batch_size or AUTO_CHUNK)
        for start in range(0, len(rows), chunk):
            batch = rows[start:start + chunk]
            samples = backend.generate([r["prompt"] for r in batch], settings)
            if len(samples) != len(batch) or any(len(s) != settings.n for s in samples):
                raise ResponsesError(f"backend {backend.name!r} returned {len(samples)} results for "
                                     f"{len(batch)} prompts; expected {settings.n} samples each")
            lines = []
            for r, gens in zip(batch, samples):
                for j, g in enumerate(gens):
                    if _key(model_name, r["dataset"], r["id"], j) in done:
                        continue
                    text, scope = final_part(g.text, ident["after_think"])
                    answer, source = _extracted(extract(text))
                    correct, status = _graded(grader, answer, r["gold"])
                    extra = {k: v for k, v in (("answer_source", source),
                                               ("grade_status", status)) if v is not None}
                    if "split" in r:
                        extra["split"] = r["split"]
                    lines.append(json.dumps({
                        "model": model_name, "weights_hash": ident["weights_hash"],
                        "recipe_hash": ident["recipe_hash"], "files_hash": ident["files_hash"],
                        "dataset": r["dataset"],
                        "id": r["id"], "level": r["level"], "sample": j, "prompt": r["prompt"],
                        "response": g.text, "n_tokens": g.n_tokens,
                        "finish_reason": g.finish_reason, "answer": answer, "gold": r["gold"],
                        "correct": correct, "generation": ident["gen"],
                        "grader": ident["grader_name"], "row_hash": r["row_hash"],
                        "answer_scope": scope, **extra,
                    }, ensure_ascii=False) + "\n")
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
            written += map(json.loads, lines)  # as a later read of the file gives them
            bar.update(len(batch))
    return written


def _extracted(found) -> tuple[str | None, str | None]:
    """(answer, source) from an extractor returning a string or an ``Extraction``."""
    if isinstance(found, tuple):
        return found[0], found[1]
    return found, None


def _graded(grader, answer, gold) -> tuple[bool, str | None]:
    """(correct, status): graders with a ``grade`` method (``MathGrader``) also give a status
    (ok, no_answer, timeout, error), recorded as ``grade_status``."""
    judge = getattr(grader, "grade", None)
    if callable(judge):
        res = judge(answer, gold)
        return bool(res.correct), res.status
    return bool(grader(answer, gold)), None
