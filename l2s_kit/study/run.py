"""The L2S study of a pair, end to end (``l2s study``; the built-in family by default).

1. The setup (:mod:`l2s_kit.study.setup`): System 1 (quick) and System 2 (slow), the problems
   split into validation and test, the prompts, settings, extractor and grader. With nothing
   given, the built-in family (built or reused).
2. Merge System 1 (base) with System 2 by every method of the grid, in memory when the model fits
   or on disk once per merge (:mod:`l2s_kit.study.runner`), locally or as Ray tasks.
3. Evaluate every model on validation and test (one resumable ``responses/<model>-<key>.jsonl`` each;
   every row names the model's weights hash).
4. Choose each method's setting on validation: the shortest merge within ``tolerance`` accuracy
   points of System 2. Report everything on test.
5. Write the tables (Table 1 by level, or by dataset when the data has no levels; summaries,
   reflection) and plotly figures.

Every step is cached: a re-run reuses the family, the merges and the responses.
"""

from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from l2s_kit.analysis import format_table1, full_summary, reflection, shortest, stats, table1
from l2s_kit.errors import FigureExportError, L2SError
from l2s_kit.evaluate import load_responses
from l2s_kit.io import atomic_file, check_apart, results_folder, write_csv
from l2s_kit.io.shared import md_text, shown_path
from l2s_kit.merging.methods.settings import GRID, PAIR_GRID
from l2s_kit.study.explorer import model_name
from l2s_kit.study.runner import Job, choose_merge_in, run_jobs
from l2s_kit.study.setup import REFERENCE, StudySetup, build_setup, family_setup
from l2s_kit.study.spec import SetupError, StudySpec
from l2s_kit.zoo import DEFAULT, FamilySpec, build_family


@dataclass
class StudyResult:
    setup: StudySetup
    workdir: Path                            # merges/ and responses/<model>-<key>.jsonl
    out: Path                                # tables and figures
    models: pd.DataFrame                     # model, method, parameters, weights_hash, folder, ...
    responses: dict[str, pd.DataFrame] = field(default_factory=dict)  # split → responses
    summary: pd.DataFrame | None = None      # split, model, accuracy, mean_tokens, ...
    by_level: pd.DataFrame | None = None     # test split, per model and level (or dataset)
    table1: pd.DataFrame | None = None
    figures: dict = field(default_factory=dict)  # name → plotly Figure
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing_pngs: list[str] = field(default_factory=list)  # PNGs asked for but not written, why

    @property
    def family(self):
        return self.setup.family


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
    with results_folder(out, "study", overwrite) as folder:
        result = _run_models(setup, grid, workdir / setup.name, out, progress=progress,
                             runner=spec.runner, merge_in=spec.merge_in,
                             num_gpus=spec.num_gpus, ray_address=spec.ray_address)
        chosen = _summarize(result, spec.tolerance, spec.ks)
        _write_files(result, chosen, spec.tolerance, spec.png, folder)
        record_run(result, spec, started, time.perf_counter() - t0, folder=folder)
    result.files = [result.out / p.relative_to(folder) for p in result.files]
    return result


def _run_models(setup: StudySetup, grid, workdir: Path, out: Path, *, progress: bool,
                runner: str, merge_in: str, num_gpus: float, ray_address: str | None
                ) -> StudyResult:
    """System 1, System 2 and every merge of ``grid``, merged and evaluated on both splits: the
    study's models and its responses by split (this run's problems only)."""
    jobs = study_jobs(setup, grid)
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


def _summarize(result: StudyResult, tolerance: float, ks) -> pd.DataFrame:
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


def _write_files(result: StudyResult, chosen: pd.DataFrame, tolerance: float, png: bool,
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
    files.append(_write_text(_report(result, chosen, tolerance), out / "table1.md"))
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


def generation_record(models: pd.DataFrame) -> dict:
    """Per model, what this run generated: samples, seconds and tokens per second (samples 0:
    every response was reused from an earlier run)."""
    return {m.model: {"samples": int(m.generated_samples), "seconds": float(m.generation_s),
                      "tokens_per_s": None if pd.isna(m.tokens_per_s)
                      else round(float(m.tokens_per_s), 1)}
            for m in models.itertuples()}


def _generation_line(models: pd.DataFrame) -> str:
    """Where the run's generation time went, in one sentence."""
    made = models[models["generated_samples"] > 0]
    if not len(made):
        return "Generation: every response was reused from an earlier run (nothing generated)."
    slow = made.sort_values("generation_s", ascending=False).iloc[0]
    return (f"Generation: {int(made['generated_samples'].sum())} samples of {len(made)} models "
            f"in {made['generation_s'].sum():.0f} s; the slowest, {md_text(slow.model)}, "
            f"{slow.generation_s:.0f} s at {slow.tokens_per_s:.0f} tokens/s (each model's in "
            "run.json and models.csv)"
            + (f"; {len(models) - len(made)} reused" if len(made) < len(models) else "") + ".")


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


def _report(r: StudyResult, chosen: pd.DataFrame, tolerance: float) -> str:
    t = r.summary[r.summary["split"] == "test"].set_index("model")
    s = r.setup
    by = "difficulty level" if s.has_levels else "dataset"
    lines = [f"# L2S study on {md_text(s.title)}",
             "", *_finding(r, chosen, tolerance), "",
             f"System 1: `{shown_path(s.system1)}` (weights {_short(r, 'system1')}); System 2: "
             f"`{shown_path(s.system2)}` "
             f"(weights {_short(r, 'system2')}); {len(s.data['validation'])} validation and "
             f"{len(s.data['test'])} test problems; prompts: System 1 "
             f"{s.prompts['system1'] or 'as given'}, System 2 and merges "
             f"{s.prompts['system2'] or 'as given'}; at most "
             f"{s.settings['system2'].max_new_tokens} new tokens; grader {s.grader}.", "",
             f"Test split, {_decoding(s)}; accuracy (%) with mean generated tokens underneath, by "
             f"{by}, each ± half its 95% interval (accuracy: Wilson's interval with one sample "
             "per problem, else a bootstrap over problems; tokens: a bootstrap over problems); "
             f"`Avg.`: the mean of the {by} columns (each {by} weighs the same); `ratio`: the "
             "paper's length change against System 2 (the mean over columns of each column's "
             "change), `ratio (pooled)`: the change of the summed tokens. The numbers below, "
             "like `summary.csv`, are means over problems.", "",
             *[f"Note: {n}.\n" for n in r.notes],
             _generation_line(r.models), "",
             format_table1(r.table1), "",
             f"Merges chosen on the validation split (the shortest within {tolerance:g} points of "
             "System 2 there), then on the test split against System 2 on the same problems "
             "(95% paired bootstrap intervals in brackets; McNemar's exact test on the paired "
             "grades):", ""]
    v = r.summary[r.summary["split"] == "validation"].set_index("model")
    for m in chosen["model"]:
        lines.append(_chosen_line(m, t.loc[m], v.loc[m] if m in v.index else None))
    if not len(chosen):
        lines.append("- none")
    metrics = [c for c in t.columns if c.startswith(("avg@", "pass@", "maj@"))]
    if metrics:
        lines += ["", f"Sampling metrics on the test split (%; {_decoding(s)}):", "",
                  "| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics),
                  *[f"| {m} | " + " | ".join(f"{t.loc[m, c]:.1f}" for c in metrics) + " |"
                    for m in ["system1", "system2", *chosen["model"]]]]
    missed = _not_chosen(r, chosen)
    if missed:
        lines += ["", "Methods with no setting chosen (their best setting on validation, by "
                  "accuracy then length):", "", *missed]
    return "\n".join(lines) + "\n"


def _chosen_line(m: str, row: pd.Series, val: pd.Series | None) -> str:
    """A chosen merge on the test split against System 2, with its intervals and verdicts."""
    if val is not None:
        stable = (f", chosen in {100 * val.choice_stability:.0f}% of bootstrap resamples"
                  if pd.notna(val.get("choice_stability")) else "")
        head = (f"validation {val.accuracy:.1f}% ({val.accuracy_change:+.1f} points "
                f"[{val.accuracy_change_lo:+.1f}, {val.accuracy_change_hi:+.1f}]), "
                f"{val.mean_tokens:.1f} tokens{stable}; ")
    else:
        head = ""
    if row.length_change == 0 and row.length_change_lo == row.length_change_hi == 0:
        # its chosen setting answers exactly as System 2 does: nothing shorter was found
        shorter = "**no shorter merge found**: the same length as System 2 on every problem"
    else:
        shorter = ("**shorter with confidence**" if row.shorter
                   else "not shown shorter (the interval reaches 0)")
    drop = ("**an accuracy drop distinguishable from zero**" if row.accuracy_drop
            else "no accuracy change distinguishable from zero")
    return (f"- {m}: {head}test {row.accuracy:.1f}% [{row.accuracy_lo:.1f}, {row.accuracy_hi:.1f}], "
            f"accuracy change {row.accuracy_change:+.1f} points "
            f"[{row.accuracy_change_lo:+.1f}, {row.accuracy_change_hi:+.1f}], McNemar p = "
            f"{_p(row.mcnemar_p)} ({drop}); {row.mean_tokens:.1f} tokens, length change "
            f"{row.length_change:+.1f}% [{row.length_change_lo:+.1f}, {row.length_change_hi:+.1f}] "
            f"({shorter}); {_after_answer(row.after_answer_share)}; reflective "
            f"{100 * row.reflection_ratio:.0f}%, {row.mean_keywords:.1f} keywords/response")


def _after_answer(share: float) -> str:
    if pd.isna(share):
        return ("tokens after the answer: not measured (the answer finder reads no answer in "
                "these responses: give the setup candidates for their format)")
    return f"{share:.0f}% of tokens after the answer was first stated"


def _decoding(s: StudySetup) -> str:
    g = s.settings["system2"]
    if g.n == 1 and g.temperature == 0:
        return "greedy decoding"
    return f"{g.n} sample(s) per problem at temperature {g.temperature:g}, top-p {g.top_p:g}"


def _p(p: float) -> str:
    return "–" if pd.isna(p) else ("< 0.001" if p < 0.001 else f"{p:.3g}")


def _finding(r: StudyResult, chosen: pd.DataFrame, tolerance: float) -> list[str]:
    """The study's answer in one line, first in the report."""
    t = r.summary[r.summary["split"] == "test"].set_index("model")
    if not len(chosen):
        return [f"**No merge was chosen**: none came within {tolerance:g} points of System 2's "
                "accuracy on the validation split, so this pair shows no long-to-short merge at "
                "these settings (every merge is in the tables and on the accuracy-against-length "
                "figure)."]
    ranked = t.loc[list(chosen["model"])].sort_values(["mean_tokens", "accuracy"],
                                                       ascending=[True, False])
    best = ranked.iloc[0]
    same = ranked[(ranked["mean_tokens"] == best.mean_tokens)
                  & (ranked["accuracy"] == best.accuracy)].index[1:]
    named = best.name + (f" (and {', '.join(same)}: the same numbers)" if len(same) else "")
    return [f"**Found**: {len(chosen)} of the methods have a merge within {tolerance:g} points of "
            f"System 2 on the validation split; the shortest, {named}, answers the test split "
            f"at {best.accuracy:.1f}% ({best.accuracy_change:+.1f} points "
            f"[{best.accuracy_change_lo:+.1f}, {best.accuracy_change_hi:+.1f}]) in "
            f"{best.mean_tokens:.1f} tokens ({best.length_change:+.1f}% "
            f"[{best.length_change_lo:+.1f}, {best.length_change_hi:+.1f}] against System 2)."]


def _not_chosen(r: StudyResult, chosen: pd.DataFrame) -> list[str]:
    v = r.summary[(r.summary["split"] == "validation")
                  & ~r.summary["model"].isin(["system1", "system2"])]
    out = []
    for method, rows in v.groupby("method", sort=False):
        if rows["model"].isin(chosen["model"]).any():
            continue
        b = rows.sort_values(["accuracy", "mean_tokens"], ascending=[False, True]).iloc[0]
        out.append(f"- {method}: {b.model}, validation {b.accuracy:.1f}% "
                   f"({b.accuracy_change:+.1f} points, outside the tolerance), "
                   f"{b.mean_tokens:.1f} tokens")
    return out


def _short(r: StudyResult, model: str) -> str:
    h = r.models.set_index("model").loc[model, "weights_hash"]
    return f"`{h[:12]}`" if isinstance(h, str) else "?"


def print_result(r: StudyResult) -> None:
    cols = ["model", "accuracy", "mean_tokens", "length_change", "reflection_ratio",
            "mean_keywords", "selected"]
    t = r.summary[r.summary["split"] == "test"][cols]
    with pd.option_context("display.width", 160, "display.max_rows", 100,
                           "display.float_format", "{:.2f}".format):
        print("\nTest split, every model (means over problems; length_change against System 2, "
              "in %):")
        print(t.to_string(index=False))
    report = (r.out / "table1.md").read_text().split("\n\n")
    print("\n" + textwrap.fill(report[1].replace("**", ""), width=100) + "\n")  # the finding
    print(f"table 1:   {r.out / 'table1.md'} (accuracy and tokens by level with 95% intervals, "
          "each chosen merge against System 2)")
    print(f"pair:      {r.setup.system1} + {r.setup.system2}")
    print(f"responses: {r.workdir}/responses/<model>-<key>.jsonl")
    print(f"results:   {r.out}/ (" + ", ".join(sorted({p.name for p in r.files})) + ")")
