"""The notebooks: every one (found by glob) runs headless with the smoke parameters, and what it
produced is checked: files, figures with data, numbers equal to the package's, offline HTML that
draws in headless Chromium. Plus the runner's contract (failures, parameters, no overwrite)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from l2s_kit.notebooks import NotebookError, find_notebooks, notebook_parameters, run_notebooks
from l2s_kit.notebooks.render import PLOTLY_MIME, figures

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SMOKE = NOTEBOOKS / "params" / "smoke.yaml"
ALL = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


# ---- committed notebooks: clean, parameterized ------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_committed_notebook_has_no_outputs_and_one_commented_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{name}.ipynb cell {i} has outputs: strip them (jupyter nbconvert --clear-output)"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}.ipynb needs exactly one cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and "Question" in nb.cells[0].source
    lines = [ln for ln in tagged[0].source.splitlines() if ln.strip()]
    params = notebook_parameters(NOTEBOOKS / f"{name}.ipynb")
    assert len(params) == len(lines), f"{name}: a parameters line papermill cannot parse"
    assert all(p["help"] for p in params.values()), f"{name}: every parameter needs a comment"


def test_smoke_file_names_only_declared_parameters():
    import yaml

    declared = set().union(*(notebook_parameters(p) for p in NOTEBOOKS.glob("*.ipynb")))
    assert set(yaml.safe_load(SMOKE.read_text())) <= declared


# ---- every notebook, headless, with the smoke parameters --------------------------------------

@pytest.fixture(scope="module")
def smoke(family, tmp_path_factory):
    """All notebooks run once with smoke.yaml (family and workdir given as absolute paths)."""
    tmp = tmp_path_factory.mktemp("nb")
    params = {"family_root": str(family.root.parent.resolve()), "workdir": str(tmp / "work")}
    # A cell that has not finished in 5 minutes runs its notebook again in a new kernel, and a
    # second time fails it, instead of blocking the suite (the smoke cells take seconds; a reply
    # to a widget cell now and then never arrives: jupyter/nbclient#312).
    df = run_notebooks(parameters=params, parameters_file=SMOKE, run="smoke", notebooks=NOTEBOOKS,
                       out=tmp / "figures", progress=False, timeout=300)
    return df.set_index("notebook"), tmp


def executed(smoke, name) -> nbformat.NotebookNode:
    df, _ = smoke
    return nbformat.read(Path(df.loc[name, "folder"]) / f"{name}.ipynb", as_version=4)


def plotly_figs(smoke, name) -> list[dict]:
    return [f for _, f in figures(executed(smoke, name))]


@pytest.mark.slow
def test_every_notebook_runs_and_renders(smoke):
    df, _ = smoke
    assert sorted(df.index) == ALL  # found by glob, none left out
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["error"]].to_string()
    for name, r in df.iterrows():
        folder = Path(r["folder"])
        assert (folder / f"{name}.ipynb").is_file() and (folder / f"{name}.html").is_file()
        figs = plotly_figs(smoke, name)
        assert figs, f"{name} drew no plotly figure"
        for f in figs:  # every figure carries data
            assert any(t.get("y") or t.get("x") for t in f["data"]), f"{name}: an empty figure"
        pngs = sorted(folder.glob("*.png"))
        assert len(pngs) == len(figs) == r["pngs"]
        for p in pngs:
            head = p.read_bytes()[:24]
            assert head[:8] == b"\x89PNG\r\n\x1a\n"
            assert int.from_bytes(head[16:20], "big") == 2700  # 900 px wide at scale 3: print resolution
        nb = executed(smoke, name)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


def _y(fig: dict, name: str, axis: str = "y") -> list:
    """The values of trace ``name`` on the subplot with y axis ``axis`` (plotly JSON decoded)."""
    import plotly.graph_objects as go

    f = go.Figure(fig)
    return [list(t.y) for t in f.data if name in (t.name, t.legendgroup)
            and (t.yaxis or "y") == axis]


@pytest.mark.slow
def test_merge_explorer_numbers_match_the_package(smoke, family, tmp_path):
    import plotly.graph_objects as go
    import yaml

    from l2s_kit.study.explorer import Explorer

    grid = yaml.safe_load(SMOKE.read_text())["grid"]
    ex = Explorer(family, split="validation", n_per_level=4, workdir=tmp_path)  # fresh: no cache
    want = ex.sweep(grid).set_index("model")
    front = go.Figure(plotly_figs(smoke, "merge_explorer")[0])
    points = {}
    for t in front.data:
        if t.name != "Pareto front":
            points.update({h: (x, y) for h, x, y in zip(t.hovertext, t.x, t.y)})
    assert set(points) == set(want.index)
    for model, (x, y) in points.items():
        assert x == pytest.approx(want.loc[model, "mean_tokens"])
        assert y == pytest.approx(want.loc[model, "accuracy"])
    # the explorer widget is in the notebook, with its state saved for the HTML
    state = executed(smoke, "merge_explorer").metadata["widgets"]
    models = {m["model_name"] for m in state["application/vnd.jupyter.widget-state+json"]["state"].values()}
    assert {"FloatSliderModel", "DropdownModel", "OutputModel"} <= models


@pytest.mark.slow
def test_length_notebook_on_the_family_shows_s2_longer_on_harder_levels(smoke):
    panels = plotly_figs(smoke, "length_vs_difficulty")[0]
    s2_len = _y(panels, "system2", "y2")[0]
    s1_len = _y(panels, "system1", "y2")[0]
    assert s2_len == sorted(s2_len) and s2_len[-1] > s2_len[0]  # longer as problems get harder
    assert max(s1_len) < min(s2_len)
    assert _y(panels, "system2", "y3")[0] == [100.0] * 5  # every System 2 answer reflects


@pytest.mark.slow
def test_length_notebook_on_real_outputs_matches_the_reference_grades(family, shared_data, tmp_path):
    path = shared_data / "samples" / "math_cot_100.jsonl"
    df = run_notebooks(["length_vs_difficulty"], {"responses": str(path)}, run="real",
                       notebooks=NOTEBOOKS, out=tmp_path, progress=False, png=False)
    assert df.loc[0, "status"] == "ok", df.loc[0, "error"]
    nb = nbformat.read(Path(df.loc[0, "folder"]) / "length_vs_difficulty.ipynb", as_version=4)
    panels = figures(nb)[0][1]
    # by hand from the file: the toolkit's grades per level, and whitespace word counts
    acc, words = {}, {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        lv = int(r["level"].split()[-1])
        acc.setdefault(lv, []).extend(r["score"])
        words.setdefault(lv, []).extend(len(c.split()) for c in r["code"])
    assert _y(panels, "math_cot_100", "y")[0] == pytest.approx(
        [100 * sum(acc[k]) / len(acc[k]) for k in sorted(acc)])
    assert _y(panels, "math_cot_100", "y2")[0] == pytest.approx(
        [sum(words[k]) / len(words[k]) for k in sorted(words)])


@pytest.mark.slow
def test_reflection_notebook_counts_keywords_like_the_package(smoke, family, tmp_path):
    from l2s_kit.analysis import reflection
    from l2s_kit.study.explorer import Explorer

    ex = Explorer(family, split="test", n_per_level=4, workdir=tmp_path)
    df = ex.compare([("task_arithmetic", {"alpha": 0.2})])
    n = df.groupby("model").size()
    freq = reflection.keyword_frequency(df, ("model",))
    bars = [f for f in plotly_figs(smoke, "reflection_analysis")
            if "Keyword" in f["layout"]["title"]["text"]][0]
    import plotly.graph_objects as go

    for t in go.Figure(bars).data:
        got = dict(zip(t.x, t.y))
        want = freq[freq["model"] == t.legendgroup].set_index("keyword")["count"] * 100 / n[t.legendgroup]
        assert got == pytest.approx(want.to_dict())
    html = [o for c in executed(smoke, "reflection_analysis").cells for o in c.get("outputs", [])
            if "text/html" in o.get("data", {}) and "<mark>" in o["data"]["text/html"]]
    assert html, "no example response with highlighted keywords"


@pytest.mark.slow
def test_sensitivity_notebook_frontier_is_the_pareto_front(smoke):
    import plotly.graph_objects as go

    figs = {f["layout"]["title"]["text"]: go.Figure(f) for f in plotly_figs(smoke, "hyperparameter_sensitivity")}
    alpha = figs["Sensitivity to α"]
    # smoke: α ∈ {0.2, 0.5} for every method (TIES at k 0.8, DARE and DARE-TIES at p 0.3)
    assert sorted(t.name for t in alpha.data if t.yaxis in (None, "y")) == \
        ["dare p=0.3", "dare_ties p=0.3", "task_arithmetic", "ties k=0.8"]
    assert all(list(t.x) == [0.2, 0.5] for t in alpha.data)
    folder = Path(smoke[0].loc["hyperparameter_sensitivity", "folder"])
    assert (folder / "01-sensitivity-to-alpha.png").is_file()  # PNGs named after their titles
    front = [t for t in figs["Accuracy against length across methods"].data if t.name == "Pareto front"][0]
    xs, ys = list(front.x), list(front.y)
    assert xs == sorted(xs) and ys == sorted(ys) and len(set(ys)) == len(ys)  # strictly better


@pytest.mark.slow
def test_spectrum_notebook_numbers_match_the_package(smoke, family):
    import plotly.graph_objects as go

    from l2s_kit.analysis.spectrum import low_rank_verdict, matrix_summary, spectrum_values

    table = matrix_summary(spectrum_values(family.system1, family.system2, rank=0.1,
                                          progress=False), 0.1)  # the defaults
    verdict, sentence = low_rank_verdict(table)
    figs = [go.Figure(f) for f in plotly_figs(smoke, "task_vector_spectrum")]
    bars, curves, heat = figs
    assert sentence in " ".join(re.sub(r"<[^>]+>", " ", bars.layout.title.text).split())
    assert dict(zip(bars.data[0].x, bars.data[0].y)) == pytest.approx(
        dict(zip(verdict["module"], verdict["low_rank_share"] * 100)))
    assert len(curves.data) == len(table)  # a line per matrix, ending at the full energy
    assert all(t.y[-1] == pytest.approx(100, abs=1e-3) for t in curves.data)
    grid = table.dropna(subset=["layer"]).pivot_table(index="layer", columns="module",
                                                      values="effective_rank_frac")
    z = heat.data[0].z
    for i, layer in enumerate(heat.data[0].y):
        for j, module in enumerate(heat.data[0].x):
            assert z[i][j] == pytest.approx(grid.loc[int(layer), module])
    folder = Path(smoke[0].loc["task_vector_spectrum", "folder"])
    assert (folder / "01-is-the-task-vector-low-rank-enough-for-svd-merging.png").is_file()


@pytest.mark.slow
def test_spectrum_notebook_on_checkpoints_from_paths(tiny_pair, tmp_path):
    import plotly.graph_objects as go

    from l2s_kit.analysis.spectrum import low_rank_verdict, matrix_summary, spectrum_values

    base, model = tiny_pair
    params = {"base": str(base), "model": str(model), "rank": 4, "heatmap": "rank_90_frac",
              "family_root": str(tmp_path / "no-family")}  # never built: the paths are used
    df = run_notebooks(["task_vector_spectrum"], params, run="paths", notebooks=NOTEBOOKS,
                       out=tmp_path, progress=False, png=False)
    assert df.loc[0, "status"] == "ok", df.loc[0, "error"]
    nb = nbformat.read(Path(df.loc[0, "folder"]) / "task_vector_spectrum.ipynb", as_version=4)
    bars, _, heat = [go.Figure(f) for _, f in figures(nb)]
    verdict, _ = low_rank_verdict(matrix_summary(spectrum_values(base, model, rank=4,
                                                                  progress=False), 4))
    assert list(bars.data[0].y) == pytest.approx(list(verdict["low_rank_share"] * 100))
    assert "Rank for 90%" in heat.layout.title.text
    assert not (tmp_path / "no-family").exists()


@pytest.mark.slow
def test_study_notebook_writes_its_tables_into_the_run_folder(smoke):
    import yaml

    folder = Path(smoke[0].loc["study", "folder"])
    summary = pd.read_csv(folder / "summary.csv")
    grid = yaml.safe_load(SMOKE.read_text())["grid"]
    assert len(summary) == 2 * (2 + len(grid))  # validation and test, S1 + S2 + merges
    assert (folder / "table1.md").read_text().startswith("# L2S study")


# ---- the rendered HTML in a real (headless, offline) browser ----------------------------------

@pytest.mark.slow
def test_rendered_html_draws_figures_and_widgets_offline(smoke, chromium, offline_page):
    from playwright.sync_api import sync_playwright

    df, _ = smoke
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            for name, r in df.iterrows():
                page, outside, errors, _ = offline_page(browser, Path(r["html"]))
                n_figs = len(plotly_figs(smoke, name))
                page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {n_figs}",
                                       timeout=30_000)
                assert page.locator(".js-plotly-plot .main-svg").count() >= n_figs
                assert page.locator(".js-plotly-plot .scatterlayer .trace, "
                                    ".js-plotly-plot .barlayer .trace, "
                                    ".js-plotly-plot .boxlayer .trace").count() >= n_figs
                if name == "merge_explorer":
                    page.wait_for_selector(".widget-slider", timeout=30_000)
                    assert page.locator(".widget-dropdown").count() >= 1
                    assert page.locator(".widget-output .js-plotly-plot").count() == 1
                assert outside == [], f"{name}.html fetched {outside}"
                assert errors == [], f"{name}.html: {errors}"
                page.close()
        finally:
            browser.close()


@pytest.mark.slow
def test_method_families_notebook_draws_each_familys_front_and_the_search(smoke):
    import plotly.graph_objects as go
    import yaml

    figs = {f["layout"]["title"]["text"]: go.Figure(f) for f in plotly_figs(smoke, "method_families")}
    fronts = figs["Accuracy against length: the front of each method family"]
    families = yaml.safe_load(SMOKE.read_text())["families"]
    points = {t.name: set(zip(t.x, t.y)) for t in fronts.data if t.mode == "markers"
              or t.mode == "markers+text"}
    # System 1, System 2, and the points merges of several families share (one marker each)
    common = points["System 1"] | points["System 2"] | points.get("several methods, same numbers",
                                                                   set())
    for name in families:  # each family's front joins its own points (and the common ones)
        line = [t for t in fronts.data if t.name == f"{name}: front"][0]
        assert set(zip(line.x, line.y)) <= points.get(name, set()) | common
    search = [f for title, f in figs.items() if title.startswith("l2s tune ties: 4 trials")]
    assert search, list(figs)
    done = executed(smoke, "method_families")
    numbers = [o["data"]["application/vnd.l2s.metrics+json"] for c in done.cells
               for o in c.get("outputs", []) if "application/vnd.l2s.metrics+json" in o.get("data", {})]
    keys = numbers[0]["metrics"]
    for method in ("sens_merging", "acm", "fim"):  # each method's coefficient of every layer
        assert sum(k.startswith(f"layer coefficient.{method}/model.layers.") for k in keys) == 4
    bars = figs["System 2's coefficient per layer group (1: the inner merge unchanged)"]
    assert sorted(t.name for t in bars.data) == ["ACM (scale·c)", "FIM-Merging (α)",
                                                 "Sens-Merging (n·σ)"]
    acm = [t for t in bars.data if t.name.startswith("ACM")][0]
    assert list(acm.x) == ["model.embed_tokens", *[f"model.layers.{i}" for i in range(4)],
                           "model.norm"]  # the family ties its head: no group of its own
    assert sum(acm.y) / len(acm.y) == pytest.approx(1.0)


# ---- run records, the gallery, reruns compared -----------------------------------------------

@pytest.mark.slow
def test_every_run_records_its_parameters_inputs_and_key_numbers(smoke, family):
    from l2s_kit.io.identity import checkpoint_hash
    from l2s_kit.io.runs import read_record

    df, _ = smoke
    for name, r in df.iterrows():
        rec = read_record(r["folder"])
        assert rec["notebook"] == name and rec["run"] == "smoke" and rec["status"] == "ok"
        assert rec["code"]["version"] and rec["notebook_hash"] and rec["seconds"] > 0
        assert rec["parameters"]["family_root"] == str(family.root.parent.resolve())
        assert rec["metrics"], f"{name} recorded no key numbers"
        assert all(v is None or isinstance(v, float) for v in rec["metrics"].values())
    study = read_record(df.loc["study", "folder"])
    assert study["inputs"]["system2"] == f"weights:{checkpoint_hash(family.system2)}"
    assert study["inputs"]["data"].startswith("sha256:")
    summary = pd.read_csv(Path(df.loc["study", "folder"]) / "summary.csv")
    s2 = summary[(summary["split"] == "test") & (summary["model"] == "system2")].iloc[0]
    assert study["metrics"]["test.system2.accuracy"] == pytest.approx(s2["accuracy"], abs=1e-3)
    assert study["metrics"]["test.system2.mean_tokens"] == pytest.approx(s2["mean_tokens"], abs=1e-3)


@pytest.mark.slow
def test_gallery_opens_offline_and_its_links_draw_figures(smoke, chromium, offline_page):
    from playwright.sync_api import sync_playwright

    df, tmp = smoke
    index = tmp / "figures" / "index.html"
    text = index.read_text()
    for name in ALL:  # every notebook's run, with its thumbnail
        assert f'href="./{name}/smoke/{name}.html"' in text
        assert f'src="./{name}/smoke/01-' in text
    assert f"{len(ALL)} runs in {len(ALL)} notebooks and studies; 0 failed" in text
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page, outside, errors, _ = offline_page(browser, index)
            assert page.locator(".card").count() == len(ALL)
            thumbs = page.locator("img.thumb")
            page.evaluate("document.querySelectorAll('img.thumb').forEach(i => i.loading = 'eager')")
            page.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
            assert all(thumbs.nth(i).evaluate("i => i.naturalWidth") >= 2000
                       for i in range(thumbs.count()))  # print resolution, and they load
            page.click('a[href="./merge_explorer/smoke/merge_explorer.html"]')
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
            assert page.url.endswith("merge_explorer/smoke/merge_explorer.html")
            assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 1
            assert outside == [] and errors == []
        finally:
            browser.close()


@pytest.mark.slow
def test_a_rerun_is_compared_with_the_last_run(smoke, family, capsys):
    """Two more runs of the spectrum notebook: the same parameters (nothing moves), then another
    rank budget (compare names the parameter and a number that moved)."""
    from l2s_kit.cli import main

    df, tmp = smoke
    params = {"family_root": str(family.root.parent.resolve())}
    kw = dict(notebooks=NOTEBOOKS, out=tmp / "figures", progress=False, timeout=600, png=False)
    again = run_notebooks(["task_vector_spectrum"], params, run="again", **kw).iloc[0]
    assert again["status"] == "ok" and again["compared_with"] == "smoke"
    assert again["moved"] == 0 and not again["unexplained"]
    other = run_notebooks(["task_vector_spectrum"], {**params, "rank": 0.3}, run="rank",
                          **kw).iloc[0]
    assert other["compared_with"] == "again" and other["moved"] > 0 and not other["unexplained"]
    out = ["--out", str(tmp / "figures")]
    capsys.readouterr()
    assert main(["notebooks", "compare", "task_vector_spectrum", "smoke", "again", *out]) == 0
    assert "numbers: none moved" in capsys.readouterr().out
    assert main(["notebooks", "compare", "task_vector_spectrum", "again", "rank", *out]) == 1
    text = capsys.readouterr().out
    assert "rank: 0.1 → 0.3" in text and "energy_at_rank" in text
    assert "inputs: unchanged" in text and "code: unchanged" in text
    page = (tmp / "figures" / "index.html").read_text()
    assert "task_vector_spectrum <span" in page and "(3 runs)" in page
    assert "since again: " in page and "parameters: rank" in page


# ---- the runner's contract (tiny notebooks, no family) ----------------------------------------

def _notebook(path: Path, params: str, body: str) -> None:
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                               "language": "python"}})
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# test"), cell, new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def tiny_notebooks(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_nbs")
    _notebook(d / "a_fails.ipynb", "x = 1  # a number",
              "if x > 0:\n    raise ValueError(f'x is {x}')")
    _notebook(d / "b_ok.ipynb", "x = 1  # a number\nout_dir = '.'  # where files go",
              "import pathlib\npathlib.Path(out_dir, 'x.txt').write_text(str(x * 2))")
    return d


@pytest.mark.slow
def test_a_failing_notebook_keeps_its_copy_and_the_batch_goes_on(tiny_notebooks, tmp_path):
    from l2s_kit.cli import main

    df = run_notebooks(parameters={"x": 21}, notebooks=tiny_notebooks, out=tmp_path, run="r",
                       progress=False, png=False).set_index("notebook")
    assert df.loc["a_fails", "status"] == "failed" and "ValueError: x is 21" in df.loc["a_fails", "error"]
    failed = nbformat.read(tmp_path / "a_fails" / "r" / "a_fails.ipynb", as_version=4)
    errs = [o for c in failed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errs and errs[0].evalue == "x is 21"
    assert df.loc["b_ok", "status"] == "ok"
    assert (tmp_path / "b_ok" / "r" / "x.txt").read_text() == "42"  # out_dir = its run folder
    # the command line exits non-zero and names what failed
    code = main(["notebooks", "run", "--dir", str(tiny_notebooks), "--out", str(tmp_path),
                 "--run", "cli", "--no-png", "--quiet", "-p", "x", "0"])
    assert code == 0
    code = main(["notebooks", "run", "--dir", str(tiny_notebooks), "--out", str(tmp_path),
                 "--run", "cli2", "--no-png", "--quiet"])
    assert code == 1


def test_a_notebook_run_prints_no_kernel_start_up_warning(tiny_notebooks, tmp_path, capfd):
    df = run_notebooks(["b_ok"], notebooks=tiny_notebooks, out=tmp_path, run="quiet",
                       progress=False, png=False)
    assert df["status"].tolist() == ["ok"]
    err = capfd.readouterr().err  # the kernel process writes to the same stderr
    assert "IPKernelApp" not in err and "without encryption" not in err


def test_runner_refuses_unknown_parameters_and_existing_runs(tiny_notebooks, tmp_path):
    from l2s_kit.errors import OutputExistsError

    with pytest.raises(NotebookError, match="alpah.*declared: out_dir, x"):
        run_notebooks(parameters={"alpah": 1}, notebooks=tiny_notebooks, out=tmp_path)
    with pytest.raises(NotebookError, match="no notebook 'nope'.*a_fails, b_ok"):
        run_notebooks(["nope"], notebooks=tiny_notebooks, out=tmp_path)
    (tmp_path / "b_ok" / "r").mkdir(parents=True)
    (tmp_path / "b_ok" / "r" / "mine.txt").write_text("mine")  # a folder of the user's
    with pytest.raises(OutputExistsError, match=r"b_ok/r holds 1 file the kit did not write \(mine"):
        run_notebooks(["b_ok"], notebooks=tiny_notebooks, out=tmp_path, run="r", overwrite=True)
    # a section named after a notebook holds parameters for it alone
    f = tmp_path / "p.yaml"
    f.write_text("b_ok: {out_dir: x}\na_fails: {x: 1, out_dir: 2}\n")
    with pytest.raises(NotebookError, match="out_dir not declared by notebook 'a_fails'"):
        run_notebooks(parameters_file=f, notebooks=tiny_notebooks, out=tmp_path)


def test_find_notebooks_globs_the_folder(tiny_notebooks):
    assert list(find_notebooks(tiny_notebooks)) == ["a_fails", "b_ok"]
    assert set(find_notebooks(NOTEBOOKS)) == set(ALL) and len(ALL) >= 5


def test_setup_renderer_gives_plotly_json_and_offline_html():
    import plotly.express as px
    import plotly.io as pio

    from l2s_kit.notebooks import setup
    from l2s_kit.notebooks.render import PLOTLYJS_MARK, plotlyjs_once

    setup()
    bundle = pio.renderers["l2s"].to_mimebundle(px.bar(x=[1, 2], y=[3, 4]).to_dict())
    assert list(bundle[PLOTLY_MIME]["data"][0]["x"]) == [1, 2] or bundle[PLOTLY_MIME]["data"][0]["x"]
    html = bundle["text/html"]  # small: plotly.js is shown once by the set-up cell
    assert PLOTLYJS_MARK not in html and "Plotly.newPlot" in html
    assert "<script src" not in html and "cdn" not in html.lower()
    assert "window.define = undefined" in plotlyjs_once()  # loaded beside require.js


@pytest.mark.slow
def test_activation_notebook_numbers_match_the_package(smoke, family, tmp_path):
    import plotly.graph_objects as go
    import yaml

    from l2s_kit.study.calibration import calibration_grid, layer_coefficients_table
    from l2s_kit.study.explorer import Explorer

    p = yaml.safe_load(SMOKE.read_text())
    figs = {f["layout"]["title"]["text"]: go.Figure(f)
            for f in plotly_figs(smoke, "activation_merging")}
    # Sens-Merging's coefficients per layer: the package's table for the first Sens merge
    sens = next(q for m, q in p["compared"] if m == "sens_merging")
    want = layer_coefficients_table(family, "sens_merging", sens)
    bar = figs["Sens-Merging (n·σ): System 2's coefficient per layer"].data[0]
    assert list(bar.x) == list(want["group"]) and len(want) == 6  # embedding, 4 layers, norm
    assert list(bar.y) == pytest.approx(list(want["coefficient"]))
    # the calibration grid, re-evaluated here from scratch
    ex = Explorer(family, split="test", n_per_level=p["n_per_level"], workdir=tmp_path)
    nb = json.loads((NOTEBOOKS / "activation_merging.ipynb").read_text())
    params = next("".join(c["source"]) for c in nb["cells"]
                  if "parameters" in c["metadata"].get("tags", []))
    line = next(ln for ln in params.splitlines() if ln.startswith("calib_grid_merges = "))
    (method, aim), = json.loads(line.split(" = ", 1)[1].split("  #")[0])  # the notebook's own
    grid = calibration_grid(ex, [(method, aim)], parts=p["calib_parts"],
                            samples=p["calib_samples"])
    grid = grid.dropna(subset=["calibration_samples"])
    fig = figs["AIM: sensitivity to the calibration set"]
    lines = [t for t in fig.data if t.name == "aim question+short"]
    assert len(lines) == 2 and list(lines[0].x) == p["calib_samples"]
    assert list(lines[0].y) == pytest.approx(list(grid["accuracy"]))
    assert list(lines[1].y) == pytest.approx(list(grid["mean_tokens"]))


def test_a_cell_that_times_out_runs_the_notebook_again_once(monkeypatch, tmp_path, capsys):
    """A kernel's reply that never comes (seen now and then on a busy machine) costs one rerun in
    a new kernel, not the notebook; a second timeout is the notebook's error."""
    import papermill
    from nbclient.exceptions import CellTimeoutError

    from l2s_kit.notebooks import run as nbrun

    calls = []

    def flaky(src, dst, **kw):
        calls.append(kw["execution_timeout"])
        if len(calls) == 1:
            raise CellTimeoutError("Cell execution timed out")
        Path(dst).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    nb = tmp_path / "x.ipynb"
    assert nbrun._execute(nb, tmp_path / "out.ipynb", {}, False, 30, tmp_path) is None
    assert calls == [30, 30] and (tmp_path / "out.ipynb").read_text() == "{}"
    assert "x: a cell did not finish in 30 s; running the notebook again" in capsys.readouterr().err

    def stuck(src, dst, **kw):
        calls.append(kw["execution_timeout"])
        raise CellTimeoutError("Cell execution timed out")

    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", stuck)
    err = nbrun._execute(nb, tmp_path / "out.ipynb", {}, False, 30, tmp_path)
    assert calls == [30, 30] and err == ("a cell did not finish in 30 s, 2 times (Cell execution "
                                         "timed out)")


def test_auto_run_names_never_collide_within_a_second(tmp_path, monkeypatch):
    from l2s_kit.notebooks import run as run_mod

    monkeypatch.setattr(run_mod.time, "strftime", lambda fmt: "20260101-000000")
    a, ra = run_mod._auto_run_name(tmp_path, ["nb"])
    b, rb = run_mod._auto_run_name(tmp_path, ["nb"])  # a second run while the first holds its name
    assert (a, b) == ("20260101-000000", "20260101-000000-2")
    ra.rmdir()
    (tmp_path / "nb" / a).mkdir(parents=True)  # the first run's folder, published
    c, _ = run_mod._auto_run_name(tmp_path, ["nb"])
    assert c == "20260101-000000-3"


@pytest.mark.slow
def test_plain_papermill_and_nbconvert_draw_every_figure_offline(tmp_path, chromium, offline_page):
    """A scheduled job built on the standard tools, run from a folder outside the repository
    with no --cwd: `papermill` then `jupyter nbconvert --to html` (its own template, which loads
    require.js) gives a page whose every figure draws in headless Chromium with no network, and
    the notebook's relative workdir resolves from its own folder, not the caller's."""
    import subprocess
    import sys

    from playwright.sync_api import sync_playwright

    work = tmp_path / "elsewhere"
    work.mkdir()
    import shutil
    import uuid

    cache = f"test-papermill-{uuid.uuid4().hex[:8]}"
    params = (f"n_per_level: 4\nmerges: [[task_arithmetic, {{alpha: 0.2}}]]\n"
              f"workdir: ../data/runs/{cache}\n")
    # a notebook without widgets: plain papermill has no guard against the lost reply a widget
    # cell's burst of messages can leave it waiting for (docs/notebooks.md; the kit's runner has)
    run = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "length_vs_difficulty.ipynb"),
           "out.ipynb", "-y", params, "-k", "python3", "--no-progress-bar",
           "--execution-timeout", "300"]
    try:
        subprocess.run(run, cwd=work, check=True, capture_output=True, timeout=600)
        # a relative workdir resolves from notebooks/, as in JupyterLab: never from the caller's
        assert list((NOTEBOOKS.parent / "data" / "runs" / cache).rglob("*.jsonl"))
        assert not (tmp_path / "data").exists()
    finally:
        shutil.rmtree(NOTEBOOKS.parent / "data" / "runs" / cache, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "out.ipynb"],
                   cwd=work, check=True, capture_output=True, timeout=300)
    nb = nbformat.read(work / "out.ipynb", as_version=4)
    n_figures = len(figures(nb))
    assert n_figures >= 2
    from l2s_kit.cli import main  # the kit's own rendering of the same executed notebook

    assert main(["notebooks", "render", str(work / "out.ipynb"), "--out", str(work / "kit.html")]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            for page_file in ("out.html", "kit.html"):
                page, outside, errors, _ = offline_page(browser, work / page_file)
                page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg')"
                                       f".length >= {n_figures}", timeout=30_000)
                drawn = page.eval_on_selector_all(".plotly-graph-div", "ds => ds.filter(d => "
                                                  "d.querySelector('.main-svg')).length")
                # the kit's page also draws the widget's figure (its state is saved)
                assert (drawn == n_figures if page_file == "out.html" else drawn >= n_figures) \
                    and not [e for e in errors if "Plotly" in e], page_file
                assert outside == [] or page_file == "out.html"  # nbconvert's asks for require.js
        finally:
            browser.close()
    assert sorted(p.name for p in work.iterdir()) == ["kit.html", "out.html", "out.ipynb"]


def test_jupyter_saves_the_committed_notebooks_without_outputs(tmp_path):
    """jupyter_server_config.py (read when JupyterLab starts in the repository): a save of a
    notebook of notebooks/ writes no outputs, whatever the open notebook shows; other notebooks
    are saved as they are. Checked through jupyter_server's own contents manager."""
    import shutil

    from jupyter_server.services.contents.filemanager import FileContentsManager
    from traitlets.config import Config

    config = Config()
    ns = {"get_config": lambda: config, "__file__": str(ROOT / "jupyter_server_config.py")}
    exec(compile((ROOT / "jupyter_server_config.py").read_text(), "jupyter_server_config.py",
                 "exec"), ns)
    hook = config.FileContentsManager.pre_save_hook
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOKS / "merge_explorer.ipynb", root / "notebooks")
    ns["COMMITTED"] = str(root / "notebooks")  # the same hook, for a copy of the repository
    cm = FileContentsManager(root_dir=str(root), pre_save_hook=hook)
    for path in ("notebooks/merge_explorer.ipynb", "elsewhere.ipynb"):
        model = cm.get("notebooks/merge_explorer.ipynb")
        code = next(c for c in model["content"]["cells"] if c["cell_type"] == "code")
        code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]
        code["execution_count"] = 3
        cm.save(model, path)
    saved = nbformat.read(root / "notebooks" / "merge_explorer.ipynb", as_version=4)
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
               for c in saved.cells if c.cell_type == "code")
    kept = nbformat.read(root / "elsewhere.ipynb", as_version=4)
    assert any(c.get("outputs") for c in kept.cells if c.cell_type == "code")
