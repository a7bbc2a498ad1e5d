"""Evaluate a model on rows of (id, prompt, gold): generate, extract, grade, append to responses.jsonl.

One JSON line per sample, carrying what produced it (model, recipe hash, generation settings).
Runs resume: samples already in the file (same model, dataset, id, sample index and settings) are
not generated again, new ones are appended and synced to disk after every batch, and a line cut
short by an interruption is dropped before appending.
"""

from __future__ import annotations

import json
import os
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
from l2s_kit.evaluate.extract import Extraction, extract_answer, grade
from l2s_kit.io import atomic_file

COLUMNS = ["model", "recipe_hash", "dataset", "id", "level", "sample", "prompt", "response",
           "n_tokens", "finish_reason", "answer", "gold", "correct", "generation"]
REQUIRED = ("id", "prompt", "gold")


class ResponsesError(L2SError):
    """A responses file or the rows to evaluate cannot be used as they are."""


def _row_problem(row: dict) -> str | None:
    """What is wrong with a row to evaluate (a missing field, an empty prompt), or None."""
    for field in REQUIRED:
        if field not in row:
            return f"missing field {field!r} (each row needs {', '.join(REQUIRED)})"
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        return f"field 'prompt' must be a non-empty string, got {row['prompt']!r}"
    return None


def load_rows(path: str | os.PathLike) -> list[dict]:
    """Rows to evaluate from a jsonl file (``id``, ``prompt``, ``gold``, optional ``dataset``,
    ``level``); errors name the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise ResponsesError(f"data file {path} does not exist")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ResponsesError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                             "save the rows as UTF-8 jsonl") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ResponsesError(f"{path}, line {lineno}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise ResponsesError(f"{path}, line {lineno}: expected a JSON object with "
                                 f"fields {', '.join(REQUIRED)}")
        problem = _row_problem(row)
        if problem:
            raise ResponsesError(f"{path}, line {lineno}: {problem}")
        rows.append(row)
    if not rows:
        raise ResponsesError(f"{path} holds no rows; give a jsonl file with one object per line "
                             f"({', '.join(REQUIRED)})")
    return rows


def _read_lines(path: Path, repair: bool) -> list[dict]:
    """The JSON rows of a responses file. A last line without its newline (an interrupted write)
    is dropped with a warning, and with ``repair`` the file is rewritten without it atomically."""
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
            raise ResponsesError(f"responses file {p} does not exist")
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
        key = (str(r["dataset"]), str(r["id"]))
        if key in seen:
            raise ResponsesError(f"rows hold id {r['id']!r} of dataset {r['dataset']!r} twice; "
                                 "ids must be unique within a dataset")
        seen.add(key)
        out.append(r)
    return out


def evaluate(model: str | os.PathLike | None, rows: Iterable[dict], out: str | os.PathLike, *,
             backend: Backend | None = None, settings: GenerationSettings = DEFAULT_SETTINGS,
             model_name: str | None = None, recipe_hash: str | None = None,
             extract: Callable[[str], str | None | Extraction] = extract_answer,
             grader: Callable[[str | None, object], bool] = grade, progress: bool = True,
             device: str = "cpu") -> pd.DataFrame:
    """Generate ``settings.n`` samples per row, grade them, and append them to ``out`` (jsonl).

    ``model`` is a checkpoint folder, run with a :class:`TransformersBackend` on ``device`` unless
    ``backend`` is given (it is loaded only when something is left to generate). ``model_name``
    defaults to the folder name, ``recipe_hash`` to the one in the folder's ``l2s_merge.json``.
    ``rows`` need ``id``, ``prompt``, ``gold``; ``dataset`` (default "data") and ``level`` are
    optional. ``extract`` may return an :class:`Extraction` (``extract_labelled``: the row gets
    ``answer_source``) and ``grader`` may have a ``grade`` method giving a status
    (:class:`MathGrader`: the row gets ``grade_status``, e.g. ``timeout``).
    Samples already in ``out`` for this model with the same settings are kept and not
    generated again; ``out`` holding this model's rows under other settings is an error.

    Returns every row of ``out`` for this model, one per sample (columns: ``COLUMNS``).
    """
    if model is None and backend is None:
        raise ResponsesError("evaluate needs a checkpoint folder (model=...) or a backend")
    if model_name is None:
        model_name = Path(model).name if model is not None else backend.name
    if recipe_hash is None:
        recipe_hash = _recipe_hash(model)
    out = Path(out)
    if out.is_dir():
        raise ResponsesError(f"{out} is a folder; --out / out is the responses file to write, "
                             "e.g. runs/responses.jsonl")
    gen = settings.to_dict()
    todo_rows = _check_rows(rows)

    done: set[tuple] = set()
    mine: list[dict] = []  # this model's rows already in the file
    if out.exists():
        for r in _read_lines(out, repair=True):
            if r.get("model") != model_name:
                continue
            mine.append(r)
            if r.get("generation") != gen:
                raise ResponsesError(
                    f"{out} holds responses of model {model_name!r} generated with other settings "
                    f"({r.get('generation')}, now {gen}); write to another output path, or delete "
                    "the file to start over")
            if recipe_hash is not None and r.get("recipe_hash") not in (None, recipe_hash):
                raise ResponsesError(
                    f"{out} holds responses of model {model_name!r} merged by another recipe "
                    f"(recipe hash {r['recipe_hash']}, now {recipe_hash}); give the new merge "
                    "another model name or output path, or delete the file to start over")
            done.add(_key(model_name, r["dataset"], r["id"], r["sample"]))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)

    todo = [r for r in todo_rows
            if any(_key(model_name, r["dataset"], r["id"], j) not in done for j in range(settings.n))]
    if todo:
        if backend is None:
            backend = TransformersBackend(model, device=device, progress=False)
        mine += _generate_into(out, todo, done, backend, settings, model_name, recipe_hash, gen,
                               extract, grader, progress)
    return _frame(mine)


def _generate_into(out: Path, rows: list[dict], done: set[tuple], backend: Backend,
                   settings: GenerationSettings, model_name: str, recipe_hash: str | None,
                   gen: dict, extract, grader, progress: bool) -> list[dict]:
    """Generate ``rows``, append their samples to ``out`` batch by batch; return the new rows."""
    from tqdm.auto import tqdm

    written = []
    with open(out, "a", encoding="utf-8") as f, \
            tqdm(total=len(rows), desc=f"eval {model_name}", unit="prompt",
                 disable=not progress) as bar:
        for start in range(0, len(rows), settings.batch_size):
            batch = rows[start:start + settings.batch_size]
            samples = backend.generate([r["prompt"] for r in batch], settings)
            if len(samples) != len(batch) or any(len(s) != settings.n for s in samples):
                raise ResponsesError(f"backend {backend.name!r} returned {len(samples)} results for "
                                     f"{len(batch)} prompts; expected {settings.n} samples each")
            lines = []
            for r, gens in zip(batch, samples):
                for j, g in enumerate(gens):
                    if _key(model_name, r["dataset"], r["id"], j) in done:
                        continue
                    answer, source = _extracted(extract(g.text))
                    correct, status = _graded(grader, answer, r["gold"])
                    extra = {k: v for k, v in (("answer_source", source),
                                               ("grade_status", status)) if v is not None}
                    lines.append(json.dumps({
                        "model": model_name, "recipe_hash": recipe_hash, "dataset": r["dataset"],
                        "id": r["id"], "level": r["level"], "sample": j, "prompt": r["prompt"],
                        "response": g.text, "n_tokens": g.n_tokens,
                        "finish_reason": g.finish_reason, "answer": answer, "gold": r["gold"],
                        "correct": correct, "generation": gen, **extra,
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
