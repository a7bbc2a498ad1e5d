"""The L2S study of a pair, end to end (``l2s study``; the built-in family by default), as a
pipeline of named steps:

0. The setup (:mod:`l2s_kit.study.setup`): System 1 (quick) and System 2 (slow), the problems
   split into validation and test, the prompts, settings, extractor and grader. With nothing
   given, the built-in family (built or reused).
1. **plan** (:func:`study_jobs`): System 1, System 2 and a merge of System 1 (base) with System 2
   by every method of the grid, each job's recipe validated once.
2. **execute** (:func:`execute`): each job merged (in memory when the model fits, or on disk
   once per merge: :mod:`l2s_kit.study.runner`), locally or as Ray tasks, and evaluated on
   validation and test (one resumable ``responses/<model>-<key>.jsonl`` each; every row names
   the model's weights hash).
3. **analyse** (:func:`analyse`): summaries of both splits; each method's setting chosen on
   validation (the shortest merge within ``tolerance`` accuracy points of System 2: the one
   choice rule, :func:`l2s_kit.analysis.stats.shortest_index`) with its stability; Table 1.
4. **render** (:func:`render`): the tables (Table 1 by level, or by dataset when the data has no
   levels; summaries, reflection), the report (:mod:`l2s_kit.study.report`) and the figures.
5. **record** (:func:`record_run`): ``run.json`` and ``metrics.json``.

Every step is cached: a re-run reuses the family, the merges and the responses.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from l2s_kit.analysis import full_summary, reflection, shortest, stats, table1
from l2s_kit.errors import FigureExportError, L2SError
from l2s_kit.evaluate import load_responses
from l2s_kit.io import atomic_file, check_apart, results_folder, write_csv
from l2s_kit.io.shared import shown_path
from l2s_kit.merging.methods.settings import GRID, PAIR_GRID
from l2s_kit.study.explorer import model_name
from l2s_kit.study.report import report
from l2s_kit.study.result import StudyResult
from l2s_kit.study.runner import Job, choose_merge_in, run_jobs
from l2s_kit.study.setup import REFERENCE, StudySetup, build_setup, family_setup
from l2s_kit.study.spec import SetupError, StudySpec
from l2s_kit.zoo import DEFAULT, FamilySpec, build_family


def study_jobs(setup: StudySetup, grid=GRID) -> list[Job]:
    """System 1, System 2 and one job per (method, parameters) of ``grid``: merges of System 1
    (base) with System 2, prompted and decoded as System 2."""
    from l2s_kit.merging import load_recipe

    jobs = [Job(role, model=str(getattr(setup, role)), prompt=setup.prompts[role],
                settings=setup.settings[role]) for role in ("system1", "system2")]
    for method, params in grid:
        try:
            r = load_recipe({"merge_method": method, "base_model": str(setup.system1),
                             "models": [{"model": str(setup.system2)}], "parameters": params})
        except L2SError as e:
            raise SetupError(f"grid: merge {model_name(method, params)!r}: {e}") from None
        jobs.append(Job(model_name(method, params), recipe=r,
                        prompt=setup.prompts["system2"], settings=setup.settings["system2"]))
    names = [j.name for j in jobs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SetupError(f"grid: merge {dup[0]!r} is given twice")
    return jobs


def with_sampling(setup: StudySetup, sampling: dict | None) -> StudySetup:
    """``setup`` with every model decoded by ``sampling`` (``n``, ``temperature``, ``top_p``:
    a spec's, checked); errors name the setting."""
    from l2s_kit.evaluate import GenerationError

    if not sampling:
        return setup
    try:
        settings = {role: replace(st, **sampling) for role, st in setup.settings.items()}
    except GenerationError as e:
        raise SetupError(str(e).replace("generation setting ", "")) from None
    return replace(setup, settings=settings)


def choose_on_validation(val: pd.DataFrame, tolerance: float = 3.0) -> pd.DataFrame:
    """Per method, the shortest model whose accuracy is within ``tolerance`` points of the
    reference. ``val``: the candidates' :func:`l2s_kit.analysis.model_summary` with ``reference``, plus a
    ``method`` column."""
    return shortest(val[val["accuracy_change"] >= -tolerance], by="method")[["method", "model"]]


def run_study(workdir: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *,
              spec: StudySpec | None = None, setup: StudySetup | None = None,
              family_spec: FamilySpec = DEFAULT, progress: bool = True, overwrite: bool = False,
              **keywords) -> StudyResult:
    """The study ``spec`` asks for (a :class:`StudySpec`, or the keywords of one, with
    ``workdir`` and ``out``: Python's face) into ``workdir/<setup name>`` (merges, responses) and
    ``out`` (tables, figures, and the run's record: ``run.json`` with the spec and
    ``metrics.json``). ``setup``: a :class:`StudySetup` already made to study instead of the
    spec's pair or family (its data as made); ``family_spec``: the built-in family to build
    when the spec names none.

    ``out`` holds this run's files only: it is replaced as a whole at the end when it holds an
    earlier study's, and anything else is refused before any work (:func:`l2s_kit.io.results_folder`).
    ``l2s study`` is this function plus the gallery page
    (:func:`l2s_kit.notebooks.gallery.write_gallery` of the folder above ``out``): from Python or
    the command line the study's folder is the same.
    """
    import transformers

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    transformers.logging.disable_progress_bar()
    if spec is None:
        where = {k: str(v) for k, v in (("workdir", workdir), ("out", out)) if v is not None}
        spec = StudySpec.from_dict({**where, **keywords}, where="run_study")
    elif workdir is not None or out is not None or keywords:
        raise SetupError("give a StudySpec (spec=) or its settings as keywords, not both")
    if setup is None:
        setup = (family_setup(build_family(spec.family_root, spec=family_spec, progress=progress),
                              spec.n_per_level, device=spec.device,
                              max_new_tokens=spec.max_new_tokens)
                 if spec.is_family else build_setup(spec, progress))
    if spec.out is None:  # a pair's study never replaces the family's (the demo's)
        spec = replace(spec, out="figures/study" if setup.family is not None
                       else f"figures/study-{setup.name}")
    grid = spec.grid or (GRID if setup.family is not None else PAIR_GRID)
    setup = with_sampling(setup, spec.sampling)
    workdir, out = Path(spec.workdir), Path(spec.out)
    pair = {"System 1": setup.system1, "System 2": setup.system2}
    check_apart(workdir, pair)  # the folder given, not only the pair's folder made inside it
    check_apart(out, pair)
    with results_folder(out, "study", overwrite) as folder:  # the pipeline, step by step:
        jobs = study_jobs(setup, grid)                                       # plan
        result = execute(setup, jobs, grid, workdir / setup.name, out,       # merge, evaluate
                         progress=progress, runner=spec.runner, merge_in=spec.merge_in,
                         num_gpus=spec.num_gpus, ray_address=spec.ray_address)
        chosen = analyse(result, spec.tolerance, spec.ks)                    # summarize, choose
        render(result, chosen, spec.tolerance, spec.png, folder)             # tables, figures
        record_run(result, spec, started, time.perf_counter() - t0, folder=folder)  # record
    result.files = [result.out / p.relative_to(folder) for p in result.files]
    return result


def execute(setup: StudySetup, jobs: list[Job], grid, workdir: Path, out: Path, *,
            progress: bool, runner: str, merge_in: str, num_gpus: float,
            ray_address: str | None) -> StudyResult:
    """The study's jobs (System 1, System 2 and every merge of ``grid``: :func:`study_jobs`),
    merged and evaluated on both splits: the study's models and its responses by split (this
    run's problems only)."""
    where = choose_merge_in(setup.system1, setup.device, setup.backend, merge_in)
    datasets: dict[str, list[dict]] = {}
    for split in ("validation", "test"):
        for r in setup.data[split]:
            datasets.setdefault(r.get("dataset") or "data", []).append(r)
    done = run_jobs(jobs, datasets, workdir, runner=runner, num_gpus=num_gpus,
                    ray_address=ray_address, progress=progress, desc="study",
                    settings=setup.settings["system2"], grader=setup.grader,
                    extract=setup.extract, backend=setup.backend,
                    device="cuda" if num_gpus > 0 else setup.device,
                    tensor_parallel=setup.tensor_parallel, merge_in=where)
    # run_jobs keeps the jobs' order: System 1, System 2, then the grid
    labels = [("System 1 (base)", {}), ("System 2", {}), *grid]
    models = pd.DataFrame([{
        "model": d["name"], "method": method,
        "parameters": ", ".join(f"{k}={v}" for k, v in params.items()),
        **{k: d[k] for k in ("weights_hash", "recipe_hash", "folder", "merged_in", "responses",
                             "generated_samples", "generation_s", "tokens_per_s")}}
        for d, (method, params) in zip(done, labels)])

    result = StudyResult(setup, workdir, out, models)
    # this run's problems only, each in this run's split: a responses file may also hold rows
    # of an earlier run on other problems (another --limit) or another split (another --seed)
    split_of = {(name, str(r["id"])): r["split"] for name, rows in datasets.items() for r in rows}
    level_of = {(name, str(r["id"])): r.get("level") for name, rows in datasets.items() for r in rows}
    allr = load_responses(models["responses"].tolist())
    keys = list(zip(allr["dataset"].astype(str), allr["id"].astype(str)))
    allr["split"] = [split_of.get(k) for k in keys]
    allr["level"] = [level_of.get(k) for k in keys]  # the data's levels now, not when generated
    allr = reflection.annotate(allr[allr["split"].notna()])
    for split in ("validation", "test"):
        result.responses[split] = allr[allr["split"] == split].reset_index(drop=True)
    return result


def analyse(result: StudyResult, tolerance: float, ks) -> pd.DataFrame:
    """The summary of both splits, each method's choice on validation (with its stability under
    resampling), the by-level view and Table 1 of the test split, set on ``result``; returns the
    chosen merges."""
    setup, models = result.setup, result.models
    numbers = dict(reference=REFERENCE, ks=ks, candidates=setup.candidates)
    summaries = [full_summary(df, **numbers).assign(split=split)
                 for split, df in result.responses.items()]
    summary = pd.concat(summaries, ignore_index=True).merge(
        models[["model", "method", "parameters", "weights_hash"]], on="model")
    merges = models.loc[models["recipe_hash"].notna(), "model"]
    val = summary[(summary["split"] == "validation") & summary["model"].isin(merges)]
    chosen = choose_on_validation(val, tolerance)
    summary["selected"] = summary["model"].isin(chosen["model"])
    stable = stats.choice_stability(result.responses["validation"], val[["method", "model"]],
                                    chosen, REFERENCE, tolerance)
    summary = summary.merge(stable[["model", "stability"]].rename(
        columns={"stability": "choice_stability"}), on="model", how="left")
    summary.loc[summary["split"] != "validation", "choice_stability"] = float("nan")
    result.summary = summary

    test = result.responses["test"]
    keep = ["system1", "system2", *chosen["model"]]
    shown = test[test["model"].isin(keep)]
    if setup.has_levels:
        result.by_level = full_summary(test, ("model", "level"), **numbers)
        shown = shown.assign(dataset="level " + shown["level"].astype(int).astype(str))
    else:
        result.notes.append("the data has no difficulty levels: the views by level are views by "
                            "dataset")
        result.by_level = full_summary(test, ("model", "dataset"), **numbers)
    result.table1 = table1(shown, reference=REFERENCE, uncertainty=True).reindex(keep, level="model")
    return chosen


def render(result: StudyResult, chosen: pd.DataFrame, tolerance: float, png: bool,
           out: Path) -> None:
    """The study's tables, report and figures in ``out`` (PNGs with ``png``; a PNG that
    cannot be made is noted in ``result.missing_pngs``, the rest stands)."""
    from l2s_kit.analysis import plots

    summary, test = result.summary, result.responses["test"]
    group = "level" if result.setup.has_levels else "dataset"
    keep = ["system1", "system2", *chosen["model"]]
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_csv(summary, out / "summary.csv"), _write_csv(result.by_level, out / "by_level.csv"),
             _write_csv(_shared_models(result.models), out / "models.csv"),
             _write_csv(reflection.keyword_frequency(test, ("model", group)),
                        out / "keyword_frequency.csv")]
    files.append(_write_text(report(result, chosen, tolerance), out / "table1.md"))
    t = summary[summary["split"] == "test"]
    against = "difficulty level" if group == "level" else "dataset"
    colors = plots.model_colors(t)  # one colour per model in every figure of the run
    shown_levels = pd.concat([result.by_level[result.by_level["model"] == m] for m in keep])
    figs = {
        "accuracy_vs_length": plots.frontier(
            t, title=f"Accuracy against length on test: {len(t) - 2} merges, "
            "those chosen on validation named (95% intervals)"),
        "by_level": plots.level_bars(shown_levels, title=f"System 1, System 2 and the chosen "
                                     f"merges by {against}, test split (95% intervals)", by=group,
                                     colors=colors),
        "after_answer": plots.after_answer(
            shown_levels, by=group, colors=colors,
            title=f"Tokens generated after the answer was first stated, by {against} (test split)"),
    }
    for name, fig in figs.items():
        files += plots.save_figure(fig, out / name)
        if png:
            try:
                plots.export_png(fig, out / f"{name}.png")
                files.append(out / f"{name}.png")
            except FigureExportError as e:  # the study is done: its tables and HTML stand
                result.missing_pngs.append(str(e).replace(str(out), str(result.out)))
    result.files, result.figures = files, figs


def key_numbers(r: StudyResult) -> dict[str, float]:
    """The numbers a rerun is compared on: each model's test accuracy and mean tokens with their
    95% intervals, share of reflective responses and share of tokens after the answer, and
    which merges were chosen (1.0)."""
    t = r.summary[r.summary["split"] == "test"].set_index("model")
    out = {f"test.{m}.{c}": float(t.loc[m, c]) for m in t.index
           for c in ("accuracy", "accuracy_lo", "accuracy_hi", "mean_tokens", "tokens_lo",
                     "tokens_hi", "reflection_ratio", "after_answer_share")}
    out.update({f"chosen.{m}": 1.0 for m in t.index[t["selected"]]})
    return out


def generation_record(models: pd.DataFrame) -> dict:
    """Per model, what this run generated: samples, seconds and tokens per second (samples 0:
    every response was reused from an earlier run)."""
    return {m.model: {"samples": int(m.generated_samples), "seconds": float(m.generation_s),
                      "tokens_per_s": None if pd.isna(m.tokens_per_s)
                      else round(float(m.tokens_per_s), 1)}
            for m in models.itertuples()}


def record_run(r: StudyResult, spec: StudySpec, started: str, seconds: float,
               folder: Path | None = None) -> Path:
    """``run.json`` and ``metrics.json`` in the study's ``out`` folder (or ``folder``, where it
    is being written; see :mod:`l2s_kit.io.runs`), so it can be listed in a gallery and
    compared: ``parameters`` is the spec's JSON form (``StudySpec.from_dict`` of it rebuilds the
    study), ``given`` the settings the user gave."""
    from l2s_kit.io import runs

    folder = r.out if folder is None else folder
    names = sorted({p.name for p in r.files})
    html = [n for n in names if n.endswith(".html")]
    runs.write_json({"metrics": key_numbers(r)}, folder / runs.METRICS)
    first = [f"{k}.html" for k in r.figures if f"{k}.html" in html]
    return runs.write_json({
        "kind": "study", "notebook": None, "run": r.out.name, "status": "ok", "error": None,
        "started": started, "seconds": round(seconds, 1), "parameters": spec.to_dict(),
        "given": spec.given, "code": runs.code_version(), "notebook_hash": None,
        "inputs": r.setup.fingerprints(),
        "generation": generation_record(r.models),
        "files": {"html": first[0] if first else None, "notebook": None,
                  "pngs": [f"{k}.png" for k in r.figures if f"{k}.png" in names],
                  "other": [n for n in names if not n.endswith(".png") and n not in first[:1]]
                  + [runs.METRICS]},
        "comparison": None}, folder / runs.RECORD)


def _shared_models(models: pd.DataFrame) -> pd.DataFrame:
    """The models table as shared (``models.csv``): each folder named as a page names it (no
    absolute path of this machine; the weights hash identifies the model)."""
    return models.drop(columns=["responses"]).assign(folder=models["folder"].map(
        lambda f: shown_path(f) if isinstance(f, str) else f))


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    return write_csv(df, path, float_format="%.4g")  # the study's tables: 4 significant digits


def _write_text(text: str, path: Path) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path


