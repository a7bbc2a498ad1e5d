"""The study's report says what it found, first: the merge chosen, or plainly that none was, with
every method tried and why it was not chosen."""

from __future__ import annotations


def _study(tmp_path, grid):
    from l2s_kit.study import run_study

    return run_study(tmp_path / "runs", tmp_path / "out", n_per_level=4, grid=grid, progress=False)


def test_no_merge_chosen_is_said_at_the_top_and_the_front_is_still_drawn(tmp_path):
    # α = 0.1 is too close to System 1: it answers at once, far below System 2
    r = _study(tmp_path, [("task_arithmetic", {"alpha": 0.1})])
    report = (tmp_path / "out" / "table1.md").read_text().splitlines()
    assert report[2].startswith("**No merge was chosen**: none came within 3 points")
    assert "- none" in report
    missed = [ln for ln in report if ln.startswith("- task_arithmetic: task_arithmetic alpha=0.1")]
    assert len(missed) == 1 and "outside the tolerance" in missed[0]
    fig = r.figures["accuracy_vs_length"]
    merges = [t for t in fig.data if t.name == "task_arithmetic"]
    assert len(merges) == 1 and list(merges[0].hovertext) == ["task_arithmetic alpha=0.1"]
    assert "Pareto front" in {t.name for t in fig.data}
    assert not r.summary["selected"].any()


def test_a_chosen_merge_is_said_at_the_top(tmp_path):
    r = _study(tmp_path, [("task_arithmetic", {"alpha": a}) for a in (0.1, 0.3)])
    first = (tmp_path / "out" / "table1.md").read_text().splitlines()[2]
    t = r.summary[(r.summary["split"] == "test") & r.summary["selected"]].iloc[0]
    assert first.startswith("**Found**: 1 of the methods have a merge within 3 points")
    assert f"the shortest, {t.model}, answers the test split at {t.accuracy:.1f}%" in first


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

    from l2s_kit import plots
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
    assert len(calls) == 2 * 2  # two figures, each tried twice
    for name in ("summary.csv", "by_level.csv", "models.csv", "table1.md", "run.json",
                 "accuracy_vs_length.html", "by_level.html"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.png")) and not [p for p in out.iterdir() if p.name.startswith(".")]
    assert "figures incomplete: 2 PNG(s) missing" in err
    assert f"{out / 'accuracy_vs_length.png'}: PNG export failed 2 times (RuntimeError: " \
           "JavascriptError: ReferenceError: kaleido_scopes is not defined)" in err
    assert "make them again (the merges and responses are reused): l2s study" in err
    assert "Traceback" not in err


def test_a_legend_joins_models_only_when_every_number_is_equal():
    import pandas as pd

    from l2s_kit import plots

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
