"""Run records, comparing runs, the gallery, and figures that read without the code: on hand-made
run folders and tables (the real notebook runs are checked in test_notebooks.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from l2s_kit.analysis import pareto_front, plots
from l2s_kit.cli import main
from l2s_kit.io import runs
from l2s_kit.notebooks.gallery import MARK, find_runs, write_gallery

# ---- key numbers -------------------------------------------------------------------------------

def test_flatten_names_each_number_by_row_and_column():
    t = pd.DataFrame({"model": ["system2", "ta"], "accuracy": [100.0, 97.5],
                      "mean_tokens": [53, float("nan")], "method": ["System 2", "ta"]})
    got = runs.flatten(t.set_index("model"))
    assert got == {"system2.accuracy": 100.0, "system2.mean_tokens": 53.0,
                   "ta.accuracy": 97.5, "ta.mean_tokens": None}  # text left out, NaN → None
    two = t.set_index(["model", "method"])[["accuracy"]]
    assert runs.flatten(two) == {"system2/System 2.accuracy": 100.0, "ta/ta.accuracy": 97.5}
    assert runs.flatten(two["accuracy"]) == {"system2/System 2": 100.0, "ta/ta": 97.5}
    nested = runs.flatten({"a": {"b": 1, "c": True}, "s": pd.Series({"x": 2.5}), "t": "text"})
    assert nested == {"a.b": 1.0, "a.c": 1.0, "s.x": 2.5}
    with pytest.raises(TypeError, match="metrics"):
        runs.flatten([1, 2])


def test_the_notebooks_helper_shows_a_table_and_is_found_in_the_executed_notebook():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    m = runs.metrics({"accuracy": 97.5}, inputs={"data": "sha256:" + "ab" * 32})
    bundle = m._repr_mimebundle_()
    assert bundle[runs.METRICS_MIME] == {"metrics": {"accuracy": 97.5},
                                         "inputs": {"data": "sha256:" + "ab" * 32}}
    assert "| accuracy | 97.5 |" in bundle["text/markdown"]
    cell = new_code_cell("x")
    cell.outputs = [new_output("display_data", data={runs.METRICS_MIME: bundle[runs.METRICS_MIME],
                                                     "text/plain": "t"})]
    other = new_code_cell("y")
    other.outputs = [new_output("display_data", data={runs.METRICS_MIME: {"metrics": {"n": 3}}})]
    got = runs.collect(new_notebook(cells=[cell, other]))
    assert got == {"metrics": {"accuracy": 97.5, "n": 3}, "inputs": {"data": "sha256:" + "ab" * 32}}


def test_fingerprints_follow_the_bytes_not_the_names(tiny_pair, tmp_path):
    base, _ = tiny_pair
    from l2s_kit.io.identity import checkpoint_hash

    assert runs.fingerprint(base) == f"weights:{checkpoint_hash(base)}"
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "test.jsonl").write_text('{"id": 1}\n')
    first = runs.fingerprint(d)
    (d / ".cache").write_text("not data")  # hidden files do not count
    assert runs.fingerprint(d) == first
    (d / "sub" / "test.jsonl").write_text('{"id": 2}\n')
    assert runs.fingerprint(d) != first
    f = d / "sub" / "test.jsonl"
    import hashlib

    assert runs.fingerprint(f) == "sha256:" + hashlib.sha256(b'{"id": 2}\n').hexdigest()
    assert runs.rows_fingerprint([{"id": 1, "a": 2}]) == runs.rows_fingerprint([{"a": 2, "id": 1}])
    with pytest.raises(runs.RunError, match="does not exist"):
        runs.fingerprint(tmp_path / "nope")


# ---- comparing runs ----------------------------------------------------------------------------

def _run(root: Path, notebook: str, run: str, *, started: str, parameters=None, inputs=None,
         metrics=None, status="ok", comparison=None, pngs=(), html=None) -> Path:
    folder = root / notebook / run
    folder.mkdir(parents=True)
    runs.write_json({"kind": "notebook", "notebook": notebook, "run": run, "status": status,
                     "error": None if status == "ok" else "cell 3: ValueError: x",
                     "started": started, "seconds": 12.0,
                     "parameters": parameters or {}, "given": parameters or {},
                     "code": {"version": "0.1.0", "commit": "c" * 40, "dirty": False},
                     "notebook_hash": "n" * 64, "inputs": inputs or {},
                     "files": {"html": html, "notebook": f"{notebook}.ipynb", "pngs": list(pngs),
                               "other": []},
                     "comparison": comparison}, folder / runs.RECORD)
    runs.write_json({"metrics": metrics or {}}, folder / runs.METRICS)
    return folder


def test_compare_names_changed_parameters_inputs_and_numbers_beyond_the_tolerance(tmp_path):
    a = _run(tmp_path, "nb", "a", started="2026-01-01T00:00:00", parameters={"alpha": 0.2, "n": 4},
             inputs={"system2": "weights:aa"},
             metrics={"acc": 90.0, "tokens": 100.0, "same": 1.0, "gone": 2.0})
    b = _run(tmp_path, "nb", "b", started="2026-01-02T00:00:00", parameters={"alpha": 0.5, "n": 4},
             inputs={"system2": "weights:aa"},
             metrics={"acc": 90.05, "tokens": 120.0, "same": 1.0, "new": 3.0})
    c = runs.compare_runs(a, b)
    assert c.parameters == [("alpha", 0.2, 0.5)] and c.inputs == []
    # 90 → 90.05 is within rtol 1e-3 (0.09); 100 → 120 is not
    assert c.numbers[["name", "a", "b", "change"]].values.tolist() == [["tokens", 100.0, 120.0, 20.0]]
    assert c.added == ["new"] and c.removed == ["gone"] and c.moved and not c.unexplained
    text = c.format()
    assert "alpha: 0.2 → 0.5" in text and "tokens: 100 → 120 (+20)" in text
    tight = runs.compare_runs(a, b, rtol=0, atol=1e-6)
    assert set(tight.numbers["name"]) == {"acc", "tokens"}
    assert runs.moved(None, 1.0) and not runs.moved(None, None) and not runs.moved(1.0, 1.0)


def test_cli_compare_exit_codes(tmp_path, capsys):
    same = dict(parameters={"alpha": 0.2}, inputs={"data": "sha256:d"}, metrics={"acc": 90.0})
    _run(tmp_path, "nb", "a", started="2026-01-01T00:00:00", **same)
    _run(tmp_path, "nb", "b", started="2026-01-02T00:00:00", **same)
    _run(tmp_path, "nb", "c", started="2026-01-03T00:00:00",
         **{**same, "metrics": {"acc": 80.0}})
    out = ["--out", str(tmp_path)]
    assert main(["notebooks", "compare", "nb", "a", "b", *out]) == 0
    assert "numbers: none moved" in capsys.readouterr().out
    assert main(["notebooks", "compare", "nb", "b", "c", *out]) == 1
    text = capsys.readouterr().out
    assert "acc: 90 → 80 (-10)" in text and "while parameters and inputs did not" in text
    # a run folder by path works too; a missing run is a clear error, exit 2
    assert main(["notebooks", "compare", "nb", str(tmp_path / "nb" / "a"), "c", *out]) == 1
    capsys.readouterr()
    assert main(["notebooks", "compare", "nb", "a", "zzz", *out]) == 2
    err = capsys.readouterr().err
    assert "zzz" in err and "run.json" in err and "Traceback" not in err


def test_previous_run_is_the_latest_ok_run_started_before(tmp_path):
    _run(tmp_path, "nb", "1", started="2026-01-01T00:00:00")
    _run(tmp_path, "nb", "2", started="2026-01-02T00:00:00")
    _run(tmp_path, "nb", "3", started="2026-01-03T00:00:00", status="failed")
    assert runs.previous_run(tmp_path / "nb", {"run": "4", "started": "2026-01-04"})["run"] == "2"
    assert runs.previous_run(tmp_path / "nb", {"run": "2", "started": "2026-01-02T00:00:00"})["run"] == "1"
    assert runs.previous_run(tmp_path / "nb", {"run": "0", "started": "2025"}) is None


# ---- the gallery -------------------------------------------------------------------------------

def test_gallery_lists_every_run_with_relative_links_and_flags_unexplained_moves(tmp_path):
    fig = plots.accuracy_vs_length(pd.DataFrame({"model": ["system1", "system2", "ta"],
                                                 "method": ["s1", "s2", "ta"],
                                                 "accuracy": [20.0, 100.0, 95.0],
                                                 "mean_tokens": [4.0, 50.0, 30.0]}))
    a = _run(tmp_path, "nb", "a", started="2026-01-01T00:00:00", metrics={"acc": 90.0},
             html="nb.html", pngs=["01-figure.png"])
    plots.save_figure(fig, a / "nb.html")
    (a / "01-figure.png").write_bytes(b"\x89PNG")
    _run(tmp_path, "nb", "b", started="2026-01-02T00:00:00", metrics={"acc": 80.0},
         comparison={"compared_with": "a", "parameters_changed": [], "inputs_changed": [],
                     "code_changed": [], "numbers_moved": 1, "unexplained": True})
    _run(tmp_path, "other", "x", started="2026-01-01T00:00:00", status="failed")
    study = tmp_path / "study"
    study.mkdir()
    runs.write_json({"kind": "study", "run": "study", "status": "ok", "started": "2026-01-05",
                     "seconds": 3.0, "files": {"html": None, "pngs": [], "other": ["table1.md"]}},
                    study / runs.RECORD)
    (study / "table1.md").write_text("# L2S study\n\n| model | acc |\n|---|---:|\n| s2 | 100 |\n")
    page = write_gallery(tmp_path)
    text = page.read_text()
    assert MARK in text
    assert [r["path"] for r in find_runs(tmp_path)] == ["nb/b", "nb/a", "other/x", "study"]
    assert "4 runs in 3 notebooks and studies; 1 failed; 1 whose numbers moved" in text
    assert 'href="./nb/a/nb.html"' in text and 'src="./nb/a/01-figure.png"' in text
    assert "numbers moved, inputs and parameters did not" in text  # run b's badge
    assert "<td>s2</td>" in text and ">100</td>" in text  # Table 1 of the study as a table
    assert "cell 3: ValueError: x" in text
    import re

    for link in re.findall(r'(?:href|src)="([^"#]+)"', text):  # every link opens from the folder
        assert (tmp_path / link).exists(), link
    # one plotly.js for the folder, loaded by the figure's HTML by relative path
    assert (a / "plotly.min.js").is_file() and (a / "nb.html").stat().st_size < 100_000
    assert 'src="plotly.min.js"' in (a / "nb.html").read_text()


def test_the_gallery_of_a_missing_folder_is_refused(tmp_path, capsys):
    assert main(["notebooks", "gallery", "--out", str(tmp_path / "nope")]) == 2
    assert "is not a folder of runs" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_a_foreign_index_html_is_left_alone(tmp_path, capsys):
    (tmp_path / "index.html").write_text("<html>mine</html>")
    _run(tmp_path, "nb", "a", started="2026-01-01T00:00:00")
    assert write_gallery(tmp_path) is None
    assert (tmp_path / "index.html").read_text() == "<html>mine</html>"
    assert "left alone" in capsys.readouterr().err


# ---- figures that read alone -------------------------------------------------------------------

def _summary(n_methods: int = 26) -> pd.DataFrame:
    rows = [{"model": "system1", "method": "System 1 (base)", "accuracy": 15.0, "mean_tokens": 4.0,
             "selected": False},
            {"model": "system2", "method": "System 2", "accuracy": 100.0, "mean_tokens": 54.0,
             "selected": False}]
    for i in range(n_methods):
        rows.append({"model": f"m{i} a=0.2", "method": f"m{i}", "accuracy": 50 + i,
                     "mean_tokens": 10.0 + i, "selected": i in (3, 7)})
    rows.append({"model": "twin", "method": "twin", "accuracy": 100.0, "mean_tokens": 54.0,
                 "selected": True})  # the same results as System 2
    return pd.DataFrame(rows)


def test_frontier_draws_the_front_names_the_chosen_and_never_reuses_a_look():
    s = _summary()
    fig = plots.frontier(s, title="t")
    traces = {t.name: t for t in fig.data}
    front = pareto_front(s)
    assert list(traces["Pareto front"].x) == front["mean_tokens"].tolist()
    looks = [(t.marker.color, t.marker.symbol) for t in fig.data
             if t.name not in ("Pareto front", "System 1", "System 2")]
    # 27 methods, 27 looks; twin answers as System 2 does, so it is drawn as System 2's point
    assert len(looks) == 26 and len(set(looks)) == 26
    assert list(traces["System 2"].text) == ["System 2 (and 1 merge)"]
    assert len({c for c, _ in looks[:23]}) == 23  # the first 23: all colours distinct
    assert traces["System 1"].marker.symbol == "diamond" and traces["System 2"].marker.symbol == "star"
    assert traces["System 2"].marker.size > traces["m0"].marker.size
    assert fig.data[-1].name == "System 2"  # drawn on top of the merges
    labels = [a.text for a in fig.layout.annotations]
    assert labels == ["m3 a=0.2", "m7 a=0.2", "twin<br><i>(same as System 2)</i>"]
    assert tuple(fig.layout.yaxis.range) == (7.0, 104)  # labels do not stretch the axis


def test_level_bars_draw_identical_models_once_under_all_their_names():
    rows = []
    for m, tokens in (("system1", 4), ("system2", 50), ("ties k=0.5", 50), ("ta", 30), ("dare", 30)):
        for lv in (1, 2):
            rows.append({"model": m, "level": lv, "accuracy": 100.0 if tokens > 4 else 10.0,
                         "mean_tokens": tokens + lv, "mean_keywords": tokens / 10})
    fig = plots.level_bars(pd.DataFrame(rows))
    names = [t.name for t in fig.data if t.showlegend]
    assert names == ["System 1", "System 2 = ties k=0.5", "ta = dare"]
    assert len(fig.data) == 9  # 3 entries × 3 panels
    assert list(fig.data[0].x) == ["level 1", "level 2"] and list(fig.data[0].y) == [5, 6]
    assert fig.layout.barmode == "group"
    assert [a.text for a in fig.layout.annotations] == [
        "mean length (tokens)", "accuracy (%)", "reflection keywords per response"]


def test_styles_are_distinct_and_references_grey():
    look = plots.styles(["system2", *[f"m{i}" for i in range(60)], "system1"])
    assert len(set(look.values())) == 62
    assert look["system1"][0] == "#9e9e9e" and look["system2"][1] == "star"


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb")),
                         ids=lambda p: p.stem)
def test_every_notebook_ends_by_recording_its_key_numbers_and_inputs(path):
    last = nbformat.read(path, as_version=4).cells[-1]
    assert last.cell_type == "code" and "l2s_kit.notebooks.metrics(" in last.source
    assert "inputs=" in last.source


@pytest.mark.parametrize("damage", [
    ("metrics.json", "{not json"), ("metrics.json", "[]"), ("metrics.json", '{"metrics": [1]}'),
    ("run.json", "[1, 2]"), ("run.json", "\xff garbage")])
def test_a_damaged_run_file_is_named_skipped_by_listings_and_one_line_for_compare(
        tmp_path, capsys, damage):
    same = dict(parameters={"alpha": 0.2}, inputs={"data": "sha256:d"}, metrics={"acc": 90.0})
    _run(tmp_path, "nb", "a", started="2026-01-01T00:00:00", **same)
    _run(tmp_path, "nb", "b", started="2026-01-02T00:00:00", **same)
    name, text = damage
    bad = tmp_path / "nb" / "b" / name
    bad.write_bytes(text.encode("latin-1"))
    # listings leave it out: the previous run, the gallery
    assert runs.previous_run(tmp_path / "nb", {"run": "c", "started": "2026-01-03"})["run"] == "a"
    assert [r["run"] for r in find_runs(tmp_path)] == ["a"]
    assert main(["notebooks", "compare", "nb", "a", "b", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: " in err and "damaged" in err and "Traceback" not in err
