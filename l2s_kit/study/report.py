"""The study's report: its finding first, Table 1 with intervals, each chosen merge against
System 2, sampling metrics, the methods with no setting chosen and where the generation time
went (``table1.md``); and the summary printed at the end of ``l2s study``."""

from __future__ import annotations

import textwrap

import pandas as pd

from l2s_kit.analysis import format_table1
from l2s_kit.io.shared import md_text, shown_path
from l2s_kit.study.result import StudyResult
from l2s_kit.study.setup import StudySetup


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


def report(r: StudyResult, chosen: pd.DataFrame, tolerance: float) -> str:
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
