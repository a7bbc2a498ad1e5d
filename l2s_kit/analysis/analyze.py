"""The study's tables and figures from sample files a researcher already has, without a model
(``l2s analyze``).

>>> from l2s_kit.analysis.analyze import analyze
>>> result = analyze(["s1=lm_eval_out/s1/samples_math500_2026-12-08T10-00-00.jsonl",
...                   "s2=lm_eval_out/s2/samples_math500_2026-12-08T10-05-00.jsonl",
...                   "ties=lm_eval_out/ties/samples_math500_2026-12-08T10-09-00.jsonl"],
...                  "figures/analysis", system1="s1", system2="s2", tokenizer="models/s2")

Read (:mod:`l2s_kit.analysis.samples`) → grade (the harness's grade, or the kit's graders with
``grader``, with their agreement) → summarize (Table 1 with intervals, by level, reflection,
where the length goes, paired tests against System 2, pass@k / maj@k) → write (CSV tables, the
Markdown report, figures).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from l2s_kit.analysis import reflection
from l2s_kit.analysis.outputs import AnalysisError
from l2s_kit.analysis.samples import read_samples
from l2s_kit.analysis.summary import format_table1, full_summary, table1
from l2s_kit.evaluate import FAMILY_BENCHMARK, family_format
from l2s_kit.io.shared import md_text

ROLES = {"system1": "System 1", "system2": "System 2"}


@dataclass
class Analysis:
    """What :func:`analyze` found: the responses, its tables, notes, the files written."""

    responses: pd.DataFrame
    summary: pd.DataFrame
    by_level: pd.DataFrame
    table1: pd.DataFrame
    agreement: pd.DataFrame | None
    length_unit: str
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def split_named(arg: str) -> tuple[str | None, str]:
    """``NAME=FILE`` → (NAME, FILE); a plain FILE → (None, FILE)."""
    name, sep, path = arg.partition("=")
    if sep and name and "/" not in name and os.sep not in name and not Path(arg).exists():
        return name, path
    return None, arg


def read_files(files: Sequence[str | os.PathLike], tokenizer=None) -> tuple[pd.DataFrame,
                                                                          list[str]]:
    """Every file's responses in one table (``NAME=FILE`` names the file's model), and their
    notes. Two files may hold one model's tasks, never the same problem twice."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    frames, notes = [], []
    for f in files:
        name, path = split_named(os.fspath(f))
        df = read_samples(path, model=name, tokenizer=tokenizer)
        notes += df.attrs.get("notes", [])
        frames.append(df)
    if not frames:
        raise AnalysisError("no sample files given")
    df = pd.concat(frames, ignore_index=True)
    # each model's rows in (dataset, id, sample) order: a bootstrap over problems gives the same
    # interval whatever order a tool wrote them in
    order = {m: i for i, m in enumerate(dict.fromkeys(df["model"]))}
    df = (df.assign(_m=df["model"].map(order), _id=df["id"].astype(str))
          .sort_values(["_m", "dataset", "_id", "sample"], kind="stable")
          .drop(columns=["_m", "_id"]).reset_index(drop=True))
    key = ["model", "dataset", "id", "sample"]
    twice = df[df.duplicated(key, keep=False)]
    if len(twice):
        r = twice.iloc[0]
        raise AnalysisError(f"model {r['model']} answers problem {r['id']} of {r['dataset']} "
                            "twice (two files of one model and task?): name each file's model "
                            "with NAME=FILE")
    return df, list(dict.fromkeys(notes))


def regrade(df: pd.DataFrame, grader: str, timeout: float = 5.0,
            progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``df`` graded with the kit's ``grader`` (the harness's grade kept as
    ``harness_correct``), and the agreement of the two per model (``agreement`` in %, the rows
    where they differ counted in ``disagree``; NaN where the harness gave no grade)."""
    from tqdm.auto import tqdm

    from l2s_kit.evaluate import Grader

    g = Grader(grader, timeout)
    extract = g.extractor
    answers, correct = [], []
    with g.open() as grade:
        for text, gold in tqdm(list(zip(df["response"].fillna(""), df["gold"])),
                               desc=f"grading ({grader})", disable=not progress):
            found = extract(text)
            answer = getattr(found, "answer", found)
            answers.append(answer)
            correct.append(bool(grade(answer, gold)))
    out = df.assign(harness_correct=df["correct"], harness_grader=df["grader"],
                    answer=answers, correct=correct, grader=grader)
    graded = out[out["harness_correct"].notna()]
    same = graded["harness_correct"].astype(bool) == graded["correct"]
    agreement = (graded.assign(_same=same).groupby("model", sort=False)
                 .agg(n=("_same", "size"), agreement=("_same", "mean"),
                      disagree=("_same", lambda s: int((~s).sum())))
                 .reset_index())
    agreement["agreement"] *= 100
    return out, agreement


def _roles(df: pd.DataFrame, system1: str | None, system2: str | None) -> tuple[pd.DataFrame,
                                                                                list[str]]:
    """The models named as System 1 and System 2 take the kit's names for them (``system1``,
    ``system2``: grey markers, the reference of every paired test); ``given_name`` keeps the
    name they came with."""
    models = list(dict.fromkeys(df["model"]))
    rename, notes = {}, []
    for role, name in (("system1", system1), ("system2", system2)):
        if name is None:
            continue
        if name not in models:
            raise AnalysisError(f"--{role} {name!r} is not a model of the files; models: "
                                + ", ".join(map(str, models)))
        rename[name] = role
        notes.append(f"{ROLES[role]} is {name}")
    clash = [m for m in models if m in ROLES and m not in rename.values() and m not in rename]
    if clash:
        raise AnalysisError(f"a model is called {clash[0]!r}, a name the kit keeps for the pair: "
                            "name it otherwise with NAME=FILE")
    return df.assign(given_name=df["model"], model=df["model"].replace(rename)), notes


def analyze(files: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
            system1: str | None = None, system2: str | None = None, tokenizer=None,
            grader: str | None = None, grade_timeout: float = 5.0,
            ks: Sequence[int] | None = None, png: bool = False, overwrite: bool = False,
            progress: bool = True) -> Analysis:
    """See the module docstring. ``out`` None: nothing is written."""
    df, notes = read_files(files, tokenizer)
    agreement = None
    if grader is not None:
        df, agreement = regrade(df, grader, grade_timeout, progress)
    elif df["correct"].isna().any():
        lacking = df.loc[df["correct"].isna(), "model"].iloc[0]
        raise AnalysisError(f"the responses of {lacking} carry no grade of their own: grade "
                            "them with --grader simple, math-verify or reference")
    df["correct"] = df["correct"].astype(bool)
    unit = "tokens" if df["n_tokens"].notna().all() else "words"
    if unit == "words":
        df["n_tokens"] = df["n_words"].astype(float)
    df, named = _roles(df, system1, system2)
    notes = named + notes
    reference = "system2" if system2 else None
    if reference is None:
        notes.append("no --system2: no paired tests and no length change against it")
    candidates = None
    if set(df["dataset"]) == {FAMILY_BENCHMARK}:  # the family's answer format: its own finder
        candidates = family_format().candidates
        notes.append(f"{FAMILY_BENCHMARK}: answers stated along the way found by the family's "
                     "own finder")
    result = _summaries(df, reference, ks, unit, agreement, notes, candidates)
    if out is not None:
        write_analysis(result, Path(out), png=png, overwrite=overwrite)
    return result


def _summaries(df: pd.DataFrame, reference: str | None, ks, unit: str, agreement,
               notes: list[str], candidates=None) -> Analysis:
    from l2s_kit.analysis.sampling import sampling_metrics

    levels = bool(df["level"].notna().all())
    found = {"candidates": candidates} if candidates else {}
    summary = full_summary(df, ("model",), reference=reference, **found)
    if ks:
        summary = summary.merge(sampling_metrics(df, ks, ("model",), intervals=True),
                                on="model", how="left")
    group = ("model", "level") if levels else ("model", "dataset")
    by_level = full_summary(df.sort_values("level", kind="stable") if levels else df, group,
                            reference=reference, ks=ks, **found)
    shown = (df.sort_values("level", kind="stable").assign(
        dataset=lambda d: "level " + d["level"].astype(str)) if levels else df)
    t1 = table1(shown, reference=reference, uncertainty=True)
    t1 = t1.reindex(list(dict.fromkeys(df["model"])), level="model")
    return Analysis(df, summary, by_level, t1, agreement, unit, notes)


def report(a: Analysis) -> str:
    """The analysis as Markdown: what was read, Table 1, the paired comparisons, sampling
    metrics and the graders' agreement."""
    models = list(dict.fromkeys(a.responses["model"]))
    sources = a.responses.groupby("model", sort=False)["source"].first()
    n = a.responses.groupby("model", sort=False)["id"].nunique()
    lines = ["# Analysis of sample files", "",
             *[f"- {md_text(m)}: {n[m]} problems from {sources[m]}"
               + (f" ({md_text(a.responses.loc[a.responses['model'] == m, 'given_name'].iloc[0])})"
                  if m in ROLES else "") for m in models],
             "", *[f"Note: {md_text(x)}." for x in a.notes], "",
             f"Accuracy (%) with mean length in {a.length_unit} underneath, each ± half its 95% "
             "interval; `ratio`: the length change against System 2.", "",
             format_table1(a.table1, length_label=a.length_unit), ""]
    s = a.summary.set_index("model")
    if "mcnemar_p" in s.columns:
        lines += ["Against System 2 on the same problems (95% paired bootstrap intervals; "
                  "McNemar's exact test):", ""]
        for m in models:
            if m == "system2":
                continue
            r = s.loc[m]
            lines.append(f"- {md_text(m)}: accuracy {r.accuracy_change:+.1f} points "
                         f"[{r.accuracy_change_lo:+.1f}, {r.accuracy_change_hi:+.1f}], "
                         f"p = {r.mcnemar_p:.3g}; length {r.length_change:+.1f}% "
                         f"[{r.length_change_lo:+.1f}, {r.length_change_hi:+.1f}]")
        lines.append("")
    metrics = [c for c in s.columns if c.startswith(("avg@", "pass@", "maj@"))
               and not c.endswith(("_lo", "_hi"))]
    if metrics:
        def cell(m, c):
            lo, hi = s.loc[m].get(f"{c}_lo"), s.loc[m].get(f"{c}_hi")
            return f"{s.loc[m, c]:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if lo == lo and lo is not
                                           None else "")

        lines += ["Sampling metrics (%, 95% bootstrap intervals over problems):", "",
                  "| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics),
                  *[f"| {md_text(m)} | " + " | ".join(cell(m, c) for c in metrics) + " |"
                    for m in models], ""]
    if a.agreement is not None and len(a.agreement):
        lines += ["The harness's grade against the kit's (rows the harness graded):", "",
                  "| model | rows | agreement (%) | disagree |", "|---|---:|---:|---:|",
                  *[f"| {md_text(r.model)} | {r.n} | {r.agreement:.1f} | {r.disagree} |"
                    for r in a.agreement.itertuples()], "",
                  "The disagreeing rows are listed in `disagreements.csv`.", ""]
    return "\n".join(lines)


def write_analysis(a: Analysis, out: Path, *, png: bool = False, overwrite: bool = False) -> None:
    """The analysis's tables, report and figures in ``out`` (a folder the kit writes whole)."""
    from l2s_kit.analysis import plots
    from l2s_kit.io import atomic_folder, write_csv

    group = "level" if "level" in a.by_level.columns else "dataset"
    figs = {
        "accuracy_vs_length": plots.accuracy_vs_length(
            a.summary.assign(method=a.summary["model"]), labelled=None,
            title=f"Accuracy against mean length ({a.length_unit}), 95% intervals"),
        "by_level": plots.level_bars(a.by_level, by=group, title=f"Length ({a.length_unit}), "
                                     f"accuracy and reflection by {group}"),
        "after_answer": plots.after_answer(a.by_level, by=group),
    }
    with atomic_folder(out, overwrite, kind="analysis") as tmp:
        write_csv(a.summary, tmp / "summary.csv", float_format="%.4g")
        write_csv(a.by_level, tmp / "by_level.csv", float_format="%.4g")
        write_csv(reflection.keyword_frequency(a.responses, ("model", group)),
                  tmp / "keyword_frequency.csv")
        if a.agreement is not None:
            write_csv(a.agreement, tmp / "agreement.csv", float_format="%.4g")
            r = a.responses
            differ = r[r["harness_correct"].notna()
                       & (r["harness_correct"].astype(bool) != r["correct"])]
            write_csv(differ[["model", "dataset", "id", "sample", "gold", "answer", "correct",
                              "harness_correct", "harness_grader", "response"]],
                      tmp / "disagreements.csv")
        (tmp / "report.md").write_text(report(a), encoding="utf-8")
        for name, fig in figs.items():
            plots.save_figure(fig, tmp / name)
            if png:
                plots.export_png(fig, tmp / f"{name}.png")
    a.files = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
