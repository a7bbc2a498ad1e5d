"""The study's report says what it found, first: the merge chosen, or plainly that none was, with
every method tried and why it was not chosen."""

from __future__ import annotations

import pandas as pd
import pytest


def _study(tmp_path, grid, **keywords):
    from l2s_kit.study import run_study

    return run_study(tmp_path / "runs", tmp_path / "out", n_per_level=4, grid=grid, progress=False,
                     **keywords)


def test_no_merge_chosen_is_said_at_the_top_and_the_front_is_still_drawn(tmp_path):
    # α = 0.1 is too close to System 1: it answers at once, far below System 2
    r = _study(tmp_path, [("task_arithmetic", {"alpha": 0.1})])
    report = (tmp_path / "out" / "table1.md").read_text().splitlines()
    assert report[2].startswith("**No merge was chosen**: none came within 3 points")
    assert "- none" in report
    missed = [ln for ln in report if ln.startswith("- task_arithmetic: task_arithmetic alpha=0.1")]
    assert len(missed) == 1 and "outside the tolerance" in missed[0]
    fig = r.figures["accuracy_vs_length"]
    # it answers as System 1 does, so it is drawn as System 1's point, named there
    s1 = next(t for t in fig.data if t.name == "System 1")
    assert list(s1.text) == ["System 1 (and 1 merge)"]
    assert list(s1.hovertext) == ["system1<br>task_arithmetic alpha=0.1"]
    assert "Pareto front" in {t.name for t in fig.data}
    assert not r.summary["selected"].any()


def test_a_chosen_merge_is_said_at_the_top(tmp_path):
    r = _study(tmp_path, [("task_arithmetic", {"alpha": a}) for a in (0.1, 0.3)])
    first = (tmp_path / "out" / "table1.md").read_text().splitlines()[2]
    t = r.summary[(r.summary["split"] == "test") & r.summary["selected"]].iloc[0]
    assert first.startswith("**Found**: 1 of the methods have a merge within 3 points")
    assert f"the shortest, {t.model}, answers the test split at {t.accuracy:.1f}%" in first
    report = (tmp_path / "out" / "table1.md").read_text()
    # the two averages are named: Table 1's over levels, every other number's over problems
    assert "`Avg.`: the mean of the difficulty level columns (each difficulty level weighs" in report
    assert "The numbers below, like `summary.csv`, are means over problems." in report


def test_the_gallery_says_how_to_get_a_missing_png_with_the_run_kinds_own_flag():
    from l2s_kit.notebooks.gallery import _png_hint

    assert _png_hint({"notebook": "study.ipynb", "kind": "notebook"}) == (
        "run the notebook again without --no-png to get one")
    assert _png_hint({"kind": "study"}) == "run l2s study again with --png to get one"


def test_a_failed_png_export_leaves_every_table_and_html_and_says_figures_incomplete(
        tmp_path, monkeypatch, capsys):
    """kaleido failing every try (as it does now and then on a busy machine) does not sink the
    study: exit status 3, every table and HTML written, the missing PNGs named with why and the
    command that makes them again."""
    import plotly.graph_objects as go

    from l2s_kit.analysis import plots
    from l2s_kit.cli import main

    calls = []

    def broken(self, *a, **k):
        calls.append(1)
        raise RuntimeError("JavascriptError: ReferenceError: kaleido_scopes is not defined")

    monkeypatch.setattr(go.Figure, "write_image", broken)
    monkeypatch.setattr(plots, "PNG_TRIES", 2)
    monkeypatch.setattr("time.sleep", lambda s: None)
    out = tmp_path / "figures" / "study"
    (tmp_path / "grid.yaml").write_text("task_arithmetic: {alpha: [0.3]}\n")
    code = main(["study", "--workdir", str(tmp_path / "runs"), "--out", str(out), "--png",
                 "--grid", str(tmp_path / "grid.yaml"), "--n-per-level", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert len(calls) == 3 * 2  # three figures, each tried twice
    for name in ("summary.csv", "by_level.csv", "models.csv", "table1.md", "run.json",
                 "accuracy_vs_length.html", "by_level.html", "after_answer.html"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.png"))
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".l2s-output.json"]
    assert "figures incomplete: 3 PNG(s) missing" in err
    assert f"{out / 'accuracy_vs_length.png'}: PNG export failed 2 times (RuntimeError: " \
           "JavascriptError: ReferenceError: kaleido_scopes is not defined)" in err
    again = err.split("make them again (the merges and responses are reused): ")[1].splitlines()[0]
    # the command is rebuilt from what was given (not from sys.argv, which is pytest's here)
    assert again.startswith("l2s study ") and "--png" in again and "--quiet" in again
    assert f"--grid {tmp_path / 'grid.yaml'}" in again and "--n-per-level 3" in again
    assert "--tolerance" not in again  # a default, not given
    import json

    record = json.loads((out / "run.json").read_text())
    assert set(record["given"]) == {"grid", "workdir", "out", "png", "n_per_level"}
    assert record["parameters"]["tolerance"] == 3.0 and "tolerance" not in record["given"]
    assert "Traceback" not in err


def test_a_legend_joins_models_only_when_every_number_is_equal():
    import pandas as pd

    from l2s_kit.analysis import plots

    rows = []
    for model, acc in (("system2", 100.0), ("task_arithmetic alpha=0.2", 36.0),
                       ("dare p=0.3 alpha=0.2", 36.0)):
        for level in (1, 2):
            rows.append({"model": model, "level": level, "mean_tokens": 50.0 + level,
                         "accuracy": acc, "reflection_ratio": 1.0})
    fig = plots.metric_by_level(pd.DataFrame(rows), "mean_tokens", "Length", "tokens")
    names = sorted(t.name for t in fig.data)
    # the two merges agree in every number: one entry; System 2 differs in accuracy: its own
    assert names == ["System 2", "task_arithmetic alpha=0.2 = dare p=0.3 alpha=0.2"], names


def test_the_report_gives_every_chosen_merge_its_intervals_and_mcnemar_p(tmp_path):
    import pandas as pd

    from l2s_kit.analysis import stats

    r = _study(tmp_path, [("task_arithmetic", {"alpha": a}) for a in (0.1, 0.3)])
    t = r.summary[r.summary["split"] == "test"].set_index("model")
    chosen = t.index[t["selected"]][0]
    p = stats.paired(r.responses["test"], "system2").set_index("model").loc[chosen]
    row = t.loc[chosen]
    assert row.length_change_lo == p.length_change_lo and row.mcnemar_p == p.mcnemar_p
    line = next(ln for ln in (tmp_path / "out" / "table1.md").read_text().splitlines()
                if ln.startswith(f"- {chosen}:"))
    assert (f"accuracy change {row.accuracy_change:+.1f} points [{p.accuracy_change_lo:+.1f}, "
            f"{p.accuracy_change_hi:+.1f}], McNemar p = ") in line
    assert f"length change {row.length_change:+.1f}% [{p.length_change_lo:+.1f}, " in line
    assert "chosen in" in line and "of bootstrap resamples" in line
    assert ("**shorter with confidence**" in line) == bool(p.length_change_hi < 0)
    # the CSVs carry the intervals, and the figures draw them
    s = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert {"accuracy_lo", "accuracy_hi", "tokens_lo", "tokens_hi", "mcnemar_p", "shorter",
            "after_answer_share", "truncation_rate", "choice_stability"} <= set(s.columns)
    by = pd.read_csv(tmp_path / "out" / "by_level.csv")
    assert {"accuracy_lo", "tokens_hi", "after_answer_share"} <= set(by.columns)
    point = next(d for d in r.figures["accuracy_vs_length"].data if d.name == "System 2")
    assert point.error_y.arrayminus[0] == pytest.approx(row_s2(t).accuracy - row_s2(t).accuracy_lo)
    assert "after_answer" in r.figures


def row_s2(t):
    return t.loc["system2"]


def test_sampling_metrics_in_the_study_equal_those_of_its_responses(tmp_path):
    from l2s_kit.analysis.sampling import sampling_metrics
    from l2s_kit.study import run_study

    r = run_study(tmp_path / "runs", tmp_path / "out", n_per_level=2, progress=False,
                  grid=[("task_arithmetic", {"alpha": 0.3})],
                  n=4, temperature=0.6, ks=[1, 4])
    test = r.responses["test"]
    assert test.groupby(["model", "id"]).size().eq(4).all()
    want = sampling_metrics(test, [1, 4]).set_index("model")
    got = r.summary[r.summary["split"] == "test"].set_index("model")
    for c in ("avg@n", "pass@1", "pass@4", "maj@1", "maj@4"):
        assert got[c].to_dict() == pytest.approx(want.loc[got.index, c].to_dict()), c
    assert got["avg@n"].to_dict() == pytest.approx(got["accuracy"].to_dict())
    assert (got["pass@4"] >= got["pass@1"]).all()
    report = (tmp_path / "out" / "table1.md").read_text()
    assert "4 sample(s) per problem at temperature 0.6" in report
    assert "| model | avg@n | pass@1 | pass@4 | maj@1 | maj@4 |" in report


@pytest.mark.parametrize("argv, message", [
    (["--n", "4", "--temperature", "0.6", "--k", "1,8"], "ks: 8 is larger than n (4)"),
    (["--n", "4"], "n=4 asks for several samples per prompt, but temperature=0"),
    (["--n", "2", "--temperature", "0.5", "--k", "0"], "every k must be at least 1"),
])
def test_bad_sampling_arguments_are_refused_before_any_work(tmp_path, capsys, argv, message):
    from l2s_kit.cli import main

    rc = main(["study", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
               "--quiet", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_figures_tell_points_apart_and_keep_one_colour_per_model(tmp_path):
    import pandas as pd

    from l2s_kit.analysis import plots

    rows = [("system1", "System 1 (base)", "", 7, 20), ("system2", "System 2", "", 53, 100),
            ("ta a=0.3", "task_arithmetic", "alpha=0.3", 21, 100),
            ("ta a=0.5", "task_arithmetic", "alpha=0.5", 35, 90),
            ("ta a=0.7", "task_arithmetic", "alpha=0.7", 49, 70),
            ("ties", "ties", "k=0.8, alpha=1.0, flag=True", 30, 40),
            ("ties b", "ties", "k=0.5, alpha=1.0", 30.5, 41)]
    s = pd.DataFrame(rows, columns=["model", "method", "parameters", "mean_tokens", "accuracy"])
    s["selected"] = s["model"] == "ta a=0.3"
    fig = plots.frontier(s)
    ta = next(t for t in fig.data if t.name == "task_arithmetic")
    # the chosen one is named in a box; the others carry their setting; the two TIES points
    # crowd each other, so their settings stay in the hover text
    assert list(ta.text) == ["", "α 0.5", "α 0.7"]
    assert list(next(t for t in fig.data if t.name == "ties").text) == ["", ""]
    colors = plots.model_colors(s)
    assert colors["ta a=0.5"] == ta.marker.color and colors["system2"] == "#303030"
    level = pd.DataFrame([{"model": m, "level": lv, "mean_tokens": 10.0, "accuracy": a,
                           "reflection_ratio": 0.0} for m, a in (("system2", 100), ("ta a=0.5", 90))
                          for lv in (1, 2)])
    bars = plots.level_bars(level, colors=colors)
    assert {t.marker.color for t in bars.data if t.legendgroup == "ta a=0.5"} == {ta.marker.color}


def test_identical_points_are_one_marker_naming_every_model_it_stands_for():
    """Seven merges of seven methods on one point, six merges on System 1's point, two of one
    method on one point: every model is named by exactly one marker and no two markers sit on
    one spot (nothing hides another)."""
    from l2s_kit.analysis import plots

    rows = [("system1", "System 1 (base)", 7, 20), ("system2", "System 2", 53, 100)]
    rows += [(f"m{i}", f"method{i}", 21, 100) for i in range(7)]  # one point, 7 methods
    rows += [(f"low{i}", f"method{i}", 7, 20) for i in range(6)]  # on System 1's point
    rows += [("ta a", "ta", 30, 90), ("ta b", "ta", 30, 90), ("ta c", "ta", 40, 95)]
    s = pd.DataFrame(rows, columns=["model", "method", "mean_tokens", "accuracy"])
    s["selected"] = s["model"] == "m3"
    fig = plots.frontier(s)
    spots, named = [], []
    for t in fig.data:
        if t.mode == "lines":
            continue
        spots += list(zip(t.x, t.y))
        for h in t.hovertext:
            named += [n for n in h.split("<br>")]
    assert len(spots) == len(set(spots)) == 5  # System 1, System 2, the 7, ta ×2, ta c
    assert sorted(named) == sorted(s["model"])  # each model named once
    shared = next(t for t in fig.data if t.name == "several methods, same numbers")
    assert list(shared.text) == ["×7"]
    assert "System 1 (and 6 merges)" in next(t for t in fig.data if t.name == "System 1").text
    assert any("m3" in (a.text or "") for a in fig.layout.annotations)  # the chosen one named


def test_false_reflection_names_what_it_shows():
    import pandas as pd

    from l2s_kit.analysis import plots

    s = pd.DataFrame({"model": ["system2", "m"], "false_reflection": [0.1, 0.2],
                      "wrong_among_reflective": [0.3, 0.4]})
    fig = plots.false_reflection(s)
    assert {t.name for t in fig.data} == {"reflective and wrong (% of all responses)",
                                          "wrong among the reflective responses (%)"}
    assert set(fig.data[0].x) == {"System 2", "m"}
    assert fig.layout.yaxis.title.text == "% of responses"


def test_run_study_from_python_writes_its_own_record(tmp_path):
    """``run_study`` is the whole study: its folder holds ``run.json`` and ``metrics.json`` as
    ``l2s study``'s does, the record naming this call's settings and the pair by weights hash."""
    import json

    from l2s_kit.io import runs

    r = _study(tmp_path, [("task_arithmetic", {"alpha": 0.3})])
    record = json.loads((r.out / runs.RECORD).read_text())
    assert record["kind"] == "study" and record["status"] == "ok"
    assert record["parameters"]["grid"] == [["task_arithmetic", {"alpha": 0.3}]]
    assert record["parameters"]["tolerance"] == 3.0
    assert set(record["given"]) == {"workdir", "out", "n_per_level", "grid"}  # this call's
    from l2s_kit.study import StudySpec  # the record rebuilds the study's spec exactly

    assert StudySpec.from_dict(record["parameters"]) == StudySpec(
        workdir=str(tmp_path / "runs"), out=str(tmp_path / "out"), n_per_level=4,
        grid=[("task_arithmetic", {"alpha": 0.3})])
    assert record["files"]["html"] == "accuracy_vs_length.html"
    by_model = r.models.set_index("model")["weights_hash"]
    assert record["inputs"]["system1"] == f"weights:{by_model['system1']}"
    assert record["inputs"]["system2"] == f"weights:{by_model['system2']}"
    metrics = json.loads((r.out / runs.METRICS).read_text())["metrics"]
    accuracy = r.summary.set_index(["split", "model"]).loc[("test", "system2"), "accuracy"]
    assert metrics["test.system2.accuracy"] == pytest.approx(accuracy)
    assert runs.METRICS in record["files"]["other"]  # every file of the folder is listed
    # where the time went: each model's samples generated, seconds and tokens per second
    responses = pd.concat([r.responses["validation"], r.responses["test"]])
    for model, gen in record["generation"].items():
        assert gen["samples"] == (responses["model"] == model).sum()
        assert gen["seconds"] > 0 and gen["tokens_per_s"] == pytest.approx(
            responses.loc[responses["model"] == model, "n_tokens"].sum() / gen["seconds"],
            rel=0.01)
    assert "Generation: " in (r.out / "table1.md").read_text()
    again = _study(tmp_path, [("task_arithmetic", {"alpha": 0.3})], overwrite=True)  # reused
    record = json.loads((again.out / runs.RECORD).read_text())
    assert {g["samples"] for g in record["generation"].values()} == {0}  # all reused
    assert "every response was reused" in (again.out / "table1.md").read_text()


def test_figure_labels_name_parameters_without_a_table_of_names():
    """Greek-letter parameters are written as letters; a sensitivity line is a method and its
    other numeric settings, whatever the method's parameters are called."""
    import pandas as pd

    from l2s_kit.analysis import plots

    assert plots._compact("k=0.8, alpha=1.0, lambda=0.3, trim=global, beta2=4") == \
        "k 0.8 α 1.0 λ 0.3 beta2 4"
    s = pd.DataFrame({"method": ["ties"] * 4 + ["task_arithmetic"],
                      "parameters": ["k=0.5, alpha=0.3", "k=0.5, alpha=0.5", "k=0.8, alpha=0.3",
                                     "k=0.8, alpha=0.5, trim=global", "alpha=0.3"],
                      "k": [0.5, 0.5, 0.8, 0.8, None], "alpha": [0.3, 0.5, 0.3, 0.5, 0.3],
                      "accuracy": [10, 20, 30, 40, 50], "mean_tokens": [5, 4, 3, 2, 1]})
    fig = plots.sensitivity(s, "alpha")
    lines = {t.name: list(t.y) for t in fig.data if t.showlegend}
    assert lines == {"ties k=0.5": [10, 20], "ties k=0.8": [30, 40], "task_arithmetic": [50]}
    fig = plots.sensitivity(s, "k")
    assert {t.name for t in fig.data if t.showlegend} == {"ties alpha=0.3", "ties alpha=0.5"}


def test_the_report_says_when_the_share_after_the_answer_is_not_measured():
    from l2s_kit.study.report import _after_answer

    assert _after_answer(float("nan")).startswith("tokens after the answer: not measured")
    assert _after_answer(82.4) == "82% of tokens after the answer was first stated"
