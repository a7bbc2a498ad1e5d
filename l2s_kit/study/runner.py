"""One merge-then-evaluate job, and the runners that run many: in this process or as Ray tasks.

The study, sweeps and the explorer all evaluate through :func:`run_job`, so a model is merged,
named and recorded one way whatever asked for it:

- a job with a ``recipe`` is merged either **on disk** (``merge_once``: streamed into
  ``workdir/merges/<name>-<merge key>``, reused when it exists) or **in memory** (System 1 is
  loaded once per process and the merged weights are swapped into it: seconds per merge for a
  model that fits); a job with a ``model`` is a checkpoint evaluated as it is;
- every response row names the model's weights hash (the merged state's, the same whether it
  was merged in memory or on disk), its recipe hash, the settings and the grader;
- responses go to ``workdir/responses/<name>-<evaluation key>.jsonl``: each job writes only its
  own file, so jobs run in any order and in parallel, and a killed run resumes; the key
  (:func:`evaluation_key`) covers the model's weights, config and tokenizer files, the
  settings, the grader and the prompt, so a rerun with any of them changed never mixes with or
  trips over the earlier responses.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from l2s_kit.errors import L2SError
from l2s_kit.evaluate import GenerationSettings, render_prompt
from l2s_kit.io.choices import MERGE_IN, RUNNERS
from l2s_kit.io.names import LM_HEAD
from l2s_kit.merging.recipe import Recipe


class RunnerError(L2SError, ValueError):
    """A job or runner is malformed (unknown runner, grader, backend or merge place)."""


@dataclass(frozen=True)
class Job:
    """One merge-then-evaluate job: ``recipe`` (a validated :class:`l2s_kit.merging.Recipe`,
    checked once where the job is made and handed down whole) merged and evaluated, or, with
    ``recipe`` None, the checkpoint ``model`` evaluated as it is (e.g. System 2). ``prompt``: a
    prompt template rendered from each row's ``question`` (None: the rows' own prompts);
    ``settings``: this job's generation settings (None: the runner's)."""

    name: str
    recipe: Recipe | None = None
    model: str | None = None
    prompt: str | None = None
    settings: GenerationSettings | None = None

    def __post_init__(self):
        if (self.recipe is None) == (self.model is None):
            raise RunnerError(f"job {self.name!r}: give a recipe to merge or a model, not both")
        if self.recipe is not None and not isinstance(self.recipe, Recipe):
            raise RunnerError(f"job {self.name!r}: recipe must be a Recipe (load_recipe(...)), "
                              f"got {type(self.recipe).__name__}")

    @property
    def recipe_hash(self) -> str | None:
        return self.recipe.hash if self.recipe is not None else None


def file_name(name: str) -> str:
    """``name`` as a file name: characters other than letters, digits and ``._=-`` replaced,
    and then a short hash of the name added (so two names never share a file)."""
    slug = re.sub(r"[^\w.=-]+", "_", name)
    if slug != name:
        slug += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return slug


def responses_file(workdir: str | os.PathLike, name: str, key: str | None = None) -> Path:
    """``workdir/responses/<name>-<key>.jsonl`` (the name made a file name by
    :func:`file_name`; ``key``: :func:`evaluation_key`)."""
    return Path(workdir) / "responses" / f"{file_name(name)}{'-' + key if key else ''}.jsonl"


def evaluation_key(job: Job, settings: GenerationSettings, grader: str) -> str:
    """What the job's responses depend on: the model (:func:`l2s_kit.merging.merge_key` of its
    recipe, or :func:`l2s_kit.io.checkpoint_key` of its folder: weights, config and tokenizer
    files), the generation settings, the grader and the prompt template. 10 hex digits: a rerun
    with anything else evaluates into a file of its own (and the earlier one stays for going
    back), a rerun with the same reuses every response."""
    import json

    from l2s_kit.io import checkpoint_key
    from l2s_kit.merging import merge_key

    model = merge_key(job.recipe) if job.recipe is not None else checkpoint_key(job.model)
    blob = json.dumps([model, settings.to_dict(), grader, job.prompt], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


_LOADED: dict = {}  # (System 1 folder, device) → backend, reused by in-memory merges


def _base_backend(folder: str, device: str, tokenizer_dir: str):
    from l2s_kit.evaluate import TransformersBackend

    key = (str(Path(folder).resolve()), device)
    if key not in _LOADED:
        _LOADED.clear()  # one System 1 at a time
        _LOADED[key] = TransformersBackend(folder, tokenizer=tokenizer_dir, device=device,
                                           progress=False)
    return _LOADED[key]


def merge_into_base(recipe: Recipe, device: str = "cpu"):
    """Merge ``recipe`` in memory into the (cached) loaded System 1; returns (backend, weights
    hash). The tokenizer is the recipe's tokenizer source (System 1's by default), as a merge on
    disk would get."""
    from l2s_kit.io import StateDictSource, weights_hash
    from l2s_kit.merging import merge_in_memory

    tok = recipe.source_path(recipe.tokenizer_source)
    backend = _base_backend(recipe.base_model, device, tok)
    state = merge_in_memory(recipe, device=device)
    digest = weights_hash(StateDictSource(state))
    missing, unexpected = backend.model.load_state_dict(state, strict=False)
    tied = {LM_HEAD} if backend.model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise RunnerError(f"merged state does not fit System 1's model ({recipe.base_model}): "
                          f"missing {missing}, unexpected {unexpected}")
    return backend, digest


class _Merged:
    """A backend that merges into the loaded System 1 only when asked to generate (asking again
    for a merge whose responses are all in the file costs no merge)."""

    name = "merge"

    def __init__(self, recipe: Recipe, device: str):
        self.recipe, self.device = recipe, device

    def generate(self, prompts, settings):
        backend, _ = merge_into_base(self.recipe, self.device)
        return backend.generate(prompts, settings)


def _ready(job: Job, device: str, backend: str, merge_in: str, workdir: Path | None,
           tensor_parallel: int, weights: dict | None):
    """(checkpoint folder or None, a backend or None: evaluate loads the folder itself, the
    merged weights' hash or None, method) for ``job``: see :func:`evaluate_job`."""
    if job.recipe is None:
        folder, gen, digest = Path(job.model), None, None
    elif merge_in == "memory":
        if backend != "transformers":
            raise RunnerError("in-memory merges need the transformers backend; merge on disk "
                              "(merge_in='disk') for vLLM")
        from l2s_kit.merging import merge_key

        key = merge_key(job.recipe)
        if weights is not None and key in weights:  # merged before: again only if needed
            folder, gen, digest = None, _Merged(job.recipe, device), weights[key]
        else:
            gen, digest = merge_into_base(job.recipe, device)
            folder = None
            if weights is not None:
                weights[key] = digest
    else:  # merged on the task's device (cuda in a GPU task), once
        from l2s_kit.merging import merge_once

        folder = merge_once(job.recipe, Path(workdir) / "merges", file_name(job.name),
                            device=device)
        gen, digest = None, None
    if gen is None and backend == "vllm":
        from l2s_kit.evaluate.vllm_backend import VLLMBackend

        gen = VLLMBackend(folder, tensor_parallel_size=tensor_parallel, progress=False)
    return folder, gen, digest, (job.recipe.merge_method if job.recipe else "model")


def evaluate_job(job: Job, rows: list[dict], out: str | os.PathLike, *,
                 settings: GenerationSettings, grade, extract, device: str = "cpu",
                 backend: str = "transformers", merge_in: str = "memory",
                 workdir: str | os.PathLike | None = None, tensor_parallel: int = 1,
                 weights: dict | None = None, progress: bool = False):
    """The one place a job's model is made ready and evaluated, for the study, the sweep, the
    explorer and the tuner: a checkpoint folder as it is; a merge swapped into the loaded
    System 1 (``merge_in`` "memory"; with ``weights``, a memo of merge key → weights hash, a
    merge already made is made again only when something is left to generate) or merged on disk
    once under ``workdir/merges`` ("disk"); then :func:`l2s_kit.evaluate.evaluate` of ``rows``
    (each with its ``dataset``; rendered with ``job.prompt`` when it has one) into ``out``.
    Returns (responses, {"method", "folder", "weights_hash", "merged_in"})."""
    from l2s_kit.evaluate import evaluate

    folder, gen, digest, method = _ready(job, device, backend, merge_in, workdir,
                                         tensor_parallel, weights)
    if job.prompt is not None:
        rows = [{**r, "prompt": render_prompt(job.prompt, r["question"])} for r in rows]
    df = evaluate(folder, rows, out, backend=gen, settings=settings, model_name=job.name,
                  recipe_hash=job.recipe_hash, weights_hash=digest, extract=extract,
                  grader=grade, progress=progress, device=device)
    if digest is None and len(df):
        digest = df["weights_hash"].iloc[-1]
    merged_in = ("memory" if folder is None else "disk") if job.recipe else None
    return df, {"method": method, "folder": str(folder) if folder is not None else None,
                "weights_hash": digest, "merged_in": merged_in}


def run_job(job: Job, datasets: Mapping[str, list[dict]], workdir: str, *,
            settings: GenerationSettings, grader: str = "simple",
            extract: Callable | None = None, backend: str = "transformers",
            device: str = "cpu", tensor_parallel: int = 1, merge_in: str = "disk",
            progress: bool = False) -> dict:
    """Merge and evaluate one job on every dataset (:func:`evaluate_job`) into its own
    responses file; returns the job's row of the runner's jobs table. Runs in this process or
    in a Ray worker."""
    from l2s_kit.evaluate import Grader

    settings = job.settings or settings
    out = responses_file(workdir, job.name, evaluation_key(job, settings, grader))
    rows = [{**r, "dataset": name} for name, rs in datasets.items() for r in rs]
    grading = Grader(grader, extract=extract)
    with grading.open() as grade_fn:
        df, info = evaluate_job(job, rows, out, settings=settings, grade=grade_fn,
                                extract=grading.extractor, device=device, backend=backend,
                                merge_in=merge_in, workdir=workdir,
                                tensor_parallel=tensor_parallel, progress=progress)
        timeouts = getattr(grade_fn, "counts", {}).get("timeout", 0)
    generated = df.attrs["generated"]
    return {"name": job.name, **info, "recipe_hash": job.recipe_hash, "responses": str(out),
            "grade_timeouts": timeouts, "generated_samples": generated["samples"],
            "generated_tokens": generated["tokens"],
            "generation_s": round(generated["seconds"], 3),
            "tokens_per_s": (generated["tokens"] / generated["seconds"]
                             if generated["seconds"] > 0 else math.nan)}


def run_jobs(jobs: list[Job], datasets: Mapping[str, list[dict]], workdir: str | os.PathLike, *,
             runner: str = "local", num_cpus: float = 1, num_gpus: float = 0,
             ray_address: str | None = None, progress: bool = True, desc: str = "jobs",
             **kwargs) -> list[dict]:
    """Every job (``runner="local"``: one after another here; ``"ray"``: one Ray task each, on
    the cluster at ``ray_address`` or a local Ray), rows in the jobs' order. ``kwargs`` go to
    :func:`run_job`."""
    from tqdm.auto import tqdm

    if runner not in RUNNERS:
        raise RunnerError(f"runner {runner!r} is not one of ('local', 'ray')")
    datasets = {str(k): list(v) for k, v in datasets.items()}
    if runner == "local":
        return [run_job(j, datasets, str(workdir), **kwargs)
                for j in tqdm(jobs, desc=desc, unit="job", disable=not progress)]
    return _run_ray(jobs, datasets, str(Path(workdir).resolve()), kwargs, num_cpus, num_gpus,
                    ray_address, progress, desc)


def _run_ray(jobs, datasets, workdir, kwargs, num_cpus, num_gpus, address, progress,
             desc) -> list[dict]:
    """One Ray task per job; results in the jobs' order."""
    from tqdm.auto import tqdm

    try:
        import ray
    except ImportError as e:
        raise RunnerError("runner='ray' needs ray: pip install 'l2s_kit[cluster]'") from e
    started = not ray.is_initialized()
    if started:
        init = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is None:  # a local Ray on this machine's CPUs (and GPUs)
            init["num_cpus"] = max(int(num_cpus), os.cpu_count() or 1)
        ray.init(address=address, **init)
    try:
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(run_job)
        data_ref = ray.put(datasets)  # shipped once, shared by every task
        refs = [task.remote(j, data_ref, workdir, **kwargs) for j in jobs]
        pending = list(refs)
        with tqdm(total=len(refs), desc=f"{desc} (ray)", unit="job", disable=not progress) as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready)  # raises the task's error, naming the job's traceback
                bar.update(len(ready))
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()


def job_inputs(jobs: list[Job]) -> dict[str, str]:
    """Every checkpoint folder the jobs read, named for messages."""
    out = {}
    for j in jobs:
        if j.model is not None:
            out[f"model of job {j.name}"] = j.model
        if j.recipe is not None:
            from l2s_kit.merging import recipe_inputs

            out.update({f"{what} of job {j.name}": p for what, p in recipe_inputs(j.recipe).items()})
    return out


def choose_merge_in(system1: str | os.PathLike, device: str = "cpu", backend: str = "transformers",
                    merge_in: str = "auto") -> str:
    """"memory" or "disk". ``auto``: in memory with the transformers backend when three copies of
    System 1's weights (the loaded model, the merged state, the inputs' blocks) fit in the free
    memory of ``device``; on disk otherwise and always with vLLM."""
    if merge_in not in MERGE_IN:
        raise RunnerError(f"merge_in {merge_in!r} is not one of {MERGE_IN}")
    if merge_in != "auto":
        if merge_in == "memory" and backend != "transformers":
            raise RunnerError("merge_in='memory' needs the transformers backend (vLLM loads "
                              "checkpoints from disk); use 'disk' or 'auto'")
        return merge_in
    if backend != "transformers":
        return "disk"
    size = sum(f.stat().st_size for f in Path(system1).glob("*.safetensors"))
    return "memory" if 3 * size < _free_memory(device) else "disk"


def _free_memory(device: str) -> int:
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
