"""Sweeps: a grid of merge recipes × datasets, one merge-then-evaluate job per recipe, run in this
process or as Ray tasks (many GPUs, many machines), gathered into one set of tables.

>>> jobs = sweep_jobs({"ta-0.7": "examples/ta-7b.yaml", "ties": "examples/ties-7b.yaml"},
...                   models={"system2": "/models/DeepSeek-R1-Distill-Qwen-7B"})
>>> datasets = {"math500": load_benchmark("math500", "data/benchmarks"),
...             "aime24": load_benchmark("aime24", "data/benchmarks")}
>>> r = run_sweep(jobs, datasets, "runs/sweep", runner="ray", num_gpus=1, backend="vllm",
...               grader="math-verify", settings=GenerationSettings(max_new_tokens=8192),
...               reference="system2")
>>> r.table1                                           # the paper's Table 1 for the grid

A job merges its recipe into ``workdir/merges/<name>-<recipe hash>`` (reused when it exists: a
merge folder appears complete or not at all), then evaluates the merged model (or a given
checkpoint) on every dataset into ``workdir/responses/<name>-<key>.jsonl`` (resumed when interrupted; the key is :func:`l2s_kit.study.runner.evaluation_key`).
Each job writes only its own files, so jobs run in any order and in parallel. With
``runner="ray"`` each job is one Ray task asking for ``num_cpus`` CPUs and ``num_gpus`` GPUs
(it then evaluates on CUDA; with ``backend="vllm"``, tensor-parallel over its GPUs); ``workdir``
must be on a file system every Ray node sees. ``ray`` is the optional extra ``cluster``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from l2s_kit.analysis import summarize, table1
from l2s_kit.errors import L2SError
from l2s_kit.evaluate import DEFAULT_SETTINGS, GenerationSettings, load_responses
from l2s_kit.io import check_apart, check_place
from l2s_kit.io.choices import BACKENDS, GRADERS, RUNNERS
from l2s_kit.study.runner import Job, choose_merge_in, job_inputs, run_jobs


class SweepError(L2SError, ValueError):
    """A sweep is malformed (unknown runner, grader or backend, duplicate names, no datasets)."""




@dataclass
class SweepResult:
    jobs: pd.DataFrame  # name, method, recipe_hash, folder, responses (file)
    responses: pd.DataFrame  # one row per sample (l2s_kit.evaluate.COLUMNS)
    summary: pd.DataFrame  # model, dataset, n, accuracy, mean_tokens[, length_change, ...]
    table1: pd.DataFrame  # (model, metric) × datasets, Avg., ratio
    files: list[Path] = field(default_factory=list)


def sweep_jobs(recipes: Mapping[str, object] | None = None,
               models: Mapping[str, str | os.PathLike] | None = None) -> list[Job]:
    """Jobs of a grid: ``recipes`` maps names to recipes (a file, YAML text, a dict or a
    ``Recipe``; checked now, before any job runs), ``models`` names to checkpoint folders
    evaluated as they are. Names become the ``model`` column of the results."""
    from l2s_kit.merging import Recipe, load_recipe

    jobs = []
    for name, folder in (models or {}).items():
        if not Path(folder, "config.json").is_file():
            raise SweepError(f"model {name!r}: {folder} is not a checkpoint folder (no config.json)")
        jobs.append(Job(str(name), model=str(folder)))
    for name, source in (recipes or {}).items():
        recipe = source if isinstance(source, Recipe) else load_recipe(source)
        jobs.append(Job(str(name), recipe=recipe))
    names = [j.name for j in jobs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepError(f"job name {dup[0]!r} is given twice; names must be unique")
    if not jobs:
        raise SweepError("a sweep needs at least one recipe or model")
    return jobs


def run_sweep(jobs: list[Job], datasets: Mapping[str, list[dict]],
              workdir: str | os.PathLike, *, runner: str = "local",
              settings: GenerationSettings = DEFAULT_SETTINGS, grader: str = "simple",
              extract: Callable | None = None, backend: str = "transformers",
              num_cpus: float = 1, num_gpus: float = 0, reference: str | None = None,
              ray_address: str | None = None, merge_in: str = "disk",
              progress: bool = True) -> SweepResult:
    """Run every job (``runner="local"``: one after another here; ``"ray"``: one Ray task each,
    on the cluster at ``ray_address`` or a local Ray started for the sweep), then gather.

    ``grader``: "simple" (normalized match), "math-verify" or "reference" (see
    :class:`l2s_kit.evaluate.MathGrader`). ``extract``: the answer extractor (default: the
    shared one; ``l2s_kit.evaluate.extract_family`` for the built-in family). ``num_gpus`` > 0 evaluates
    on CUDA. ``reference``: a job name; the summary and Table 1 then give length changes
    against it. ``merge_in``: "disk" (each merge streamed to ``workdir/merges`` once), "memory"
    (swapped into a loaded System 1; transformers only) or "auto" (see
    :func:`l2s_kit.study.runner.choose_merge_in`).
    """
    if runner not in RUNNERS:
        raise SweepError(f"runner {runner!r} is not one of {RUNNERS}")
    if grader not in GRADERS:
        raise SweepError(f"grader {grader!r} is not one of {GRADERS}")
    if backend not in BACKENDS:
        raise SweepError(f"backend {backend!r} is not one of {BACKENDS}")
    if not datasets:
        raise SweepError("a sweep needs at least one dataset (name → rows)")
    if reference is not None and reference not in {j.name for j in jobs}:
        raise SweepError(f"reference {reference!r} is not a job; jobs: "
                         + ", ".join(j.name for j in jobs))
    workdir = Path(workdir)
    check_apart(workdir, job_inputs(jobs))
    check_place(workdir, "workdir")
    (workdir / "responses").mkdir(parents=True, exist_ok=True)
    device = "cuda" if num_gpus > 0 else "cpu"
    recipes = [j.recipe for j in jobs if j.recipe is not None]
    if recipes:
        merge_in = choose_merge_in(recipes[0].base_model, device, backend, merge_in)
    done = run_jobs(jobs, datasets, workdir, runner=runner, num_cpus=num_cpus, num_gpus=num_gpus,
                    ray_address=ray_address, progress=progress, desc="sweep",
                    settings=settings, grader=grader, extract=extract, backend=backend,
                    device=device, tensor_parallel=max(1, int(num_gpus)), merge_in=merge_in)
    jobs_df = pd.DataFrame(done)
    responses = load_responses(jobs_df["responses"].tolist())
    order = list(datasets)
    return SweepResult(jobs_df, responses,
                       summarize(responses, ("model", "dataset"), reference=reference),
                       table1(responses, reference=reference, datasets=order))


# -- sweep files (l2s sweep) ----------------------------------------------------------------------
SWEEP_KEYS = {"recipes", "models", "benchmarks", "data_dir", "data", "prompt", "limit", "runner",
              "ray_address", "num_cpus", "num_gpus", "backend", "grader", "reference", "merge_in",
              "max_new_tokens", "temperature", "top_p", "n", "seed", "workdir"}


def load_sweep(source: str | os.PathLike | dict) -> dict:
    """A sweep file (YAML) as keyword arguments of :func:`run_sweep` plus ``jobs`` and
    ``datasets``. Keys: ``recipes`` (name → recipe file, relative to the sweep file), ``models``
    (name → checkpoint folder), ``benchmarks`` (names, read from ``data_dir`` with ``prompt`` and
    ``limit``) and/or ``data`` (name → jsonl file of rows), ``workdir``, ``runner``,
    ``ray_address``, ``num_cpus``, ``num_gpus``, ``backend``, ``grader``, ``reference``, and the
    generation settings ``max_new_tokens`` (a number, "8k" or "10k"), ``temperature``, ``top_p``,
    ``n``, ``seed``. Checks everything (recipes, folders, data files) before any job runs."""
    from l2s_kit.evaluate import get_prompt, load_benchmark, load_rows
    from l2s_kit.io.yamlfile import load_mapping

    where, rel = "sweep", Path(".")
    if isinstance(source, dict):
        d = dict(source)
    else:
        path = Path(source)
        where, rel = str(path), path.resolve().parent
        d = load_mapping(path, "sweep file", SweepError, "a mapping (recipes, benchmarks, ...)")
    if not isinstance(d, dict):
        raise SweepError(f"{where}: a sweep file is a mapping (recipes, benchmarks, ...)")
    unknown = sorted(set(d) - SWEEP_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(SWEEP_KEYS))}")

    def resolve(p) -> str:
        p = Path(os.path.expanduser(str(p)))
        return str(p if p.is_absolute() or p.exists() else rel / p)

    recipes = {k: resolve(v) if isinstance(v, str) and "\n" not in v else v
               for k, v in (d.get("recipes") or {}).items()}
    jobs = sweep_jobs(recipes, {k: resolve(v) for k, v in (d.get("models") or {}).items()})
    prompt = d.get("prompt", "qwen25-math-cot")
    if get_prompt(prompt).needs_tokenizer:
        raise SweepError(f"{where}: prompt 'chat' depends on each model's tokenizer; use "
                         "qwen25-math-cot or fewshot in a sweep")
    datasets: dict[str, list[dict]] = {}
    for name in d.get("benchmarks") or []:
        if not d.get("data_dir"):
            raise SweepError(f"{where}: benchmarks need data_dir (the folder holding "
                             "<name>/test.jsonl)")
        datasets[name] = load_benchmark(name, resolve(d["data_dir"]), prompt=prompt,
                                        limit=d.get("limit"))
    for name, file in (d.get("data") or {}).items():
        datasets[name] = load_rows(resolve(file))[:d.get("limit")]
    stop = get_prompt(prompt).stop if d.get("benchmarks") else ()
    given = {k: d[k] for k in ("max_new_tokens", "temperature", "top_p", "n", "seed") if k in d}
    settings = GenerationSettings(stop=stop, **given)  # the rest: GenerationSettings' defaults
    kwargs = {k: d[k] for k in ("runner", "ray_address", "num_cpus", "num_gpus", "backend",
                                "grader", "reference", "merge_in") if k in d}
    return {"jobs": jobs, "datasets": datasets, "settings": settings,
            "workdir": resolve(d.get("workdir", "runs/sweep")), **kwargs}
