"""The L2S study on the built-in family, end to end (the README's main job, ``l2s study``).

1. Build (or reuse) the family: System 1 (quick) and System 2 (slow, fine-tuned from it).
2. Merge System 1 (base) with System 2 by every method, at the paper's settings and a small
   sweep of α / k / p, as real checkpoint folders.
3. Evaluate every model on the task's validation and test splits (greedy, ``responses.jsonl``).
4. Choose each method's setting on the validation split: the shortest merge within
   ``tolerance`` accuracy points of System 2. Report everything on the test split.
5. Write the tables (Table 1 by level, summaries, reflection) and plotly figures.

Every step is cached: a re-run reuses the family, the merges and the responses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from l2s_kit.analysis import format_table1, model_summary, reflection, table1
from l2s_kit.evaluate import FAMILY_SETTINGS, evaluate, extract_family
from l2s_kit.io import atomic_file, check_apart
from l2s_kit.study.explorer import model_name
from l2s_kit.zoo import DEFAULT, Family, FamilySpec, build_family

# The merges of the study, every method of the paper: its settings for the 7B pair (TA α = 0.7,
# TIES k = 0.8 α = 1.0, DARE p = 0.3, AIM-Ties ω = 0.4, Sens-Merging α = 0.7 T = 2), then a
# sweep that reaches the small scales this family needs. AIM and Sens-Merging calibrate on the
# family's own task (100 samples); Twin and LoRE are the SVD-based methods.
GRID: list[tuple[str, dict]] = [
    ("average", {}),
    *[("task_arithmetic", {"alpha": a}) for a in (0.1, 0.15, 0.2, 0.3, 0.5, 0.7)],
    *[("ties", {"k": k, "alpha": a}) for k in (0.5, 0.8) for a in (0.3, 0.5, 1.0)],
    *[("dare", {"p": 0.3, "alpha": a}) for a in (0.2, 0.3, 0.5, 1.0)],
    *[("dare_ties", {"p": 0.3, "alpha": a}) for a in (0.3, 0.5, 1.0)],
    *[("aim", {"omega": 0.4, "inner": "ties", "k": 0.8, "alpha": a}) for a in (0.5, 1.0)],
    *[("sens_merging", {"alpha": a, "temperature": 2.0}) for a in (0.2, 0.3, 0.7)],
    ("twin", {}),
    *[("lore", {"alpha": a, "tau": 0.05, "tau_relative": True}) for a in (0.2, 0.3, 0.7)],
]
REFERENCE = "system2"


@dataclass
class StudyResult:
    family: Family
    workdir: Path                            # merges and responses ({split}.jsonl)
    out: Path                                # tables and figures
    models: pd.DataFrame                     # model, method, parameters, folder, selected
    responses: dict[str, pd.DataFrame] = field(default_factory=dict)  # split → responses
    summary: pd.DataFrame | None = None      # split, model, accuracy, mean_tokens, ...
    by_level: pd.DataFrame | None = None     # test split, per model and level
    table1: pd.DataFrame | None = None
    figures: dict = field(default_factory=dict)  # name → plotly Figure
    files: list[Path] = field(default_factory=list)


def merge_grid(family: Family, workdir: Path, grid=GRID, progress: bool = True) -> pd.DataFrame:
    """Merge the family by every (method, parameters) of ``grid`` (reusing finished merges)."""
    from tqdm.auto import tqdm

    from l2s_kit.merging import merge_once

    rows = []
    for method, params in tqdm(grid, desc="merging", disable=not progress):
        folder, recipe = merge_once(
            {"merge_method": method, "base_model": str(family.system1),
             "models": [{"model": str(family.system2)}], "parameters": params},
            workdir / "merges", method)
        rows.append({"model": model_name(method, params), "method": method,
                     "parameters": ", ".join(f"{k}={v}" for k, v in params.items()),
                     "folder": str(folder), "recipe_hash": recipe.hash})
    return pd.DataFrame(rows)


def choose_on_validation(val: pd.DataFrame, tolerance: float = 3.0) -> pd.DataFrame:
    """Per method, the shortest model whose accuracy is within ``tolerance`` points of the
    reference. ``val``: the candidates' :func:`l2s_kit.analysis.model_summary` with ``reference``, plus a
    ``method`` column."""
    ok = val[val["accuracy_change"] >= -tolerance]
    best = ok.sort_values(["mean_tokens", "accuracy"], ascending=[True, False])
    return best.groupby("method", as_index=False).first()[["method", "model"]]


def run_study(workdir: str | os.PathLike = "data/runs/study", out: str | os.PathLike = "figures/study",
              *, family_root: str | os.PathLike | None = None, spec: FamilySpec = DEFAULT,
              n_per_level: int = 100, grid=GRID,
              tolerance: float = 3.0, png: bool = False, progress: bool = True) -> StudyResult:
    import transformers

    from l2s_kit import plots

    transformers.logging.disable_progress_bar()
    family = build_family(family_root, spec=spec, progress=progress)
    workdir = Path(workdir) / family.root.name
    out = Path(out)
    pair = {"System 1": family.system1, "System 2": family.system2}
    check_apart(workdir, pair)
    check_apart(out, pair)
    models = merge_grid(family, workdir, grid, progress)
    models = pd.concat([pd.DataFrame([
        {"model": "system1", "method": "System 1 (base)", "parameters": "",
         "folder": str(family.system1), "recipe_hash": None},
        {"model": "system2", "method": "System 2", "parameters": "",
         "folder": str(family.system2), "recipe_hash": None}]), models], ignore_index=True)

    result = StudyResult(family, workdir, out, models)
    for split in ("validation", "test"):
        rows = family.rows(split, n_per_level)
        frames = []
        for m in models.itertuples():
            frames.append(evaluate(m.folder, rows, workdir / f"{split}.jsonl", settings=FAMILY_SETTINGS,
                                   model_name=m.model, recipe_hash=m.recipe_hash,
                                   extract=extract_family, progress=False))
        result.responses[split] = reflection.annotate(pd.concat(frames, ignore_index=True))

    summaries = [model_summary(df, reference=REFERENCE).assign(split=split)
                 for split, df in result.responses.items()]
    summary = pd.concat(summaries, ignore_index=True).merge(
        models[["model", "method", "parameters"]], on="model")
    merges = models.loc[models["recipe_hash"].notna(), "model"]
    chosen = choose_on_validation(summary[(summary["split"] == "validation") & summary["model"].isin(merges)],
                    tolerance)
    summary["selected"] = summary["model"].isin(chosen["model"])
    result.summary = summary

    test = result.responses["test"]
    keep = ["system1", "system2", *chosen["model"]]
    shown = test[test["model"].isin(keep)]
    result.by_level = model_summary(test, ("model", "level"), reference=REFERENCE)
    by_level = shown.assign(dataset="level " + shown["level"].astype(str))
    result.table1 = table1(by_level, reference=REFERENCE).reindex(keep, level="model")

    # ---- files --------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_csv(summary, out / "summary.csv"), _write_csv(result.by_level, out / "by_level.csv"),
             _write_csv(reflection.keyword_frequency(test, ("model", "level")),
                        out / "keyword_frequency.csv")]
    files.append(_write_text(_report(result, chosen, tolerance), out / "table1.md"))
    t = summary[summary["split"] == "test"]
    figs = {
        "accuracy_vs_length": plots.accuracy_vs_length(
            t, title="Accuracy against length, test split (every merge of the grid)"),
        "length_by_level": plots.metric_by_level(result.by_level[result.by_level["model"].isin(keep)],
                                          "mean_tokens", "Length against difficulty",
                                          "mean generated tokens"),
        "accuracy_by_level": plots.metric_by_level(result.by_level[result.by_level["model"].isin(keep)],
                                            "accuracy", "Accuracy against difficulty",
                                            "accuracy (%)"),
        "reflection_by_level": plots.metric_by_level(result.by_level[result.by_level["model"].isin(keep)],
                                              "mean_keywords", "Reflection by level",
                                              "reflection keywords per response"),
    }
    for name, fig in figs.items():
        files += plots.save_figure(fig, out / name, png=png)
    result.files, result.figures = files, figs
    return result


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_file(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")
    return path


def _write_text(text: str, path: Path) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path


def _report(r: StudyResult, chosen: pd.DataFrame, tolerance: float) -> str:
    t = r.summary[r.summary["split"] == "test"].set_index("model")
    lines = [f"# L2S study on the built-in family ({r.family.root.name})", "",
             "Test split, greedy decoding; accuracy (%) with mean generated tokens underneath, by "
             "difficulty level; `ratio`: length change against System 2.", "",
             format_table1(r.table1), "",
             f"Merges chosen on the validation split (shortest within {tolerance:g} points of "
             "System 2):", ""]
    for m in chosen["model"]:
        row = t.loc[m]
        lines.append(f"- {m}: accuracy {row.accuracy:.1f}% ({row.accuracy_change:+.1f} points), "
                     f"{row.mean_tokens:.1f} tokens ({row.length_change:+.1f}%), reflective "
                     f"{100 * row.reflection_ratio:.0f}%, {row.mean_keywords:.1f} keywords/response")
    return "\n".join(lines) + "\n"


def print_result(r: StudyResult) -> None:
    cols = ["model", "accuracy", "mean_tokens", "length_change", "reflection_ratio",
            "mean_keywords", "selected"]
    t = r.summary[r.summary["split"] == "test"][cols]
    with pd.option_context("display.width", 160, "display.max_rows", 100,
                           "display.float_format", "{:.2f}".format):
        print("\nTest split, every model (length_change against System 2, in %):")
        print(t.to_string(index=False))
    print("\n" + (r.out / "table1.md").read_text())
    print(f"family:    {r.family.root}")
    print(f"responses: {r.workdir}/{{validation,test}}.jsonl")
    print(f"results:   {r.out}/ (" + ", ".join(sorted({p.name for p in r.files})) + ")")
