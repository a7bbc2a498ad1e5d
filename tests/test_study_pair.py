"""The study on a researcher's own pair: the family given by paths (``l2s zoo export`` + a
benchmark folder) gives the built-in study's numbers; merges in memory equal merges on disk; the
setup refuses half-given pairs, missing paths and leaking splits, naming the parameter; data
without levels falls back to views by dataset; a real benchmark is prompted as the paper did."""

from __future__ import annotations

import json

import pytest

from l2s_kit.cli import main
from l2s_kit.io import checkpoint_hash
from l2s_kit.study import SetupError, run_study, study_setup
from l2s_kit.study.setup import stratified_sample
from l2s_kit.study.spec import load_grid
from l2s_kit.zoo import export_benchmark

GRID = [("task_arithmetic", {"alpha": 0.2}), ("ties", {"k": 0.8, "alpha": 0.5})]
N = 4  # problems per level and split: 2 cores


@pytest.fixture(scope="module")
def exported(family, tmp_path_factory):
    return export_benchmark(tmp_path_factory.mktemp("bench") / "data", n_per_level=N)


@pytest.fixture(scope="module")
def both(family, exported, tmp_path_factory):
    """The built-in study (merges in memory) and the same problems through the real-pair path
    (the family given by paths, merges on disk)."""
    out = tmp_path_factory.mktemp("parity")
    default = run_study(out / "w1", out / "o1", n_per_level=N, grid=GRID, progress=False)
    setup = study_setup(str(family.system1), str(family.system2), benchmark="l2s_family",
                        data_dir=exported.parent, validation=str(exported / "validation.jsonl"))
    pair = run_study(out / "w2", out / "o2", setup=setup, grid=GRID, progress=False,
                     merge_in="disk")
    return default, pair


@pytest.mark.slow
def test_the_family_given_by_paths_gives_the_built_in_studys_numbers(both):
    default, pair = both
    assert set(default.models["merged_in"].dropna()) == {"memory"}
    assert set(pair.models["merged_in"].dropna()) == {"disk"}
    cols = ["split", "model", "n", "accuracy", "mean_tokens", "length_change", "reflection_ratio",
            "after_answer_share", "weights_hash", "selected"]
    a = default.summary[cols].sort_values(["split", "model"]).reset_index(drop=True)
    b = pair.summary[cols].sort_values(["split", "model"]).reset_index(drop=True)
    assert a.equals(b)
    assert (a["after_answer_share"] > 50).any()  # System 2's checks after its answer, measured
    assert default.table1.equals(pair.table1)
    # the same problems and the same responses, row by row
    for split in ("validation", "test"):
        ra = default.responses[split].sort_values(["model", "id"])
        rb = pair.responses[split].sort_values(["model", "id"])
        assert ra["response"].tolist() == rb["response"].tolist()
        assert ra["prompt"].tolist() == rb["prompt"].tolist()


@pytest.mark.slow
def test_in_memory_and_on_disk_merges_have_one_weights_hash(both, family):

    default, pair = both
    hashes = pair.models.set_index("model")
    for row in pair.models.itertuples():
        assert row.weights_hash == checkpoint_hash(row.folder)  # what the folder holds
    assert hashes.loc["system1", "weights_hash"] == family.manifest["weights_hash"]["system1"]
    assert default.models.set_index("model")["weights_hash"].equals(hashes["weights_hash"])
    # every response row names its model's weights
    r = pair.responses["test"]
    for model, h in hashes["weights_hash"].items():
        assert set(r.loc[r["model"] == model, "weights_hash"]) == {h}


@pytest.mark.slow
def test_l2s_study_on_a_pair_from_the_command_line(family, exported, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("task_arithmetic: {alpha: [0.3]}\n")
    code = main(["study", "--base", str(family.system1), "--model", str(family.system2),
                 "--benchmark", "l2s_family", "--data-dir", str(exported.parent),
                 "--validation", "6", "--limit", "16", "--grid", str(grid), "--quiet",
                 "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o")])
    assert code == 0
    summary = __import__("pandas").read_csv(tmp_path / "o" / "summary.csv")
    n = summary.groupby("split")["n"].first()
    assert n["validation"] == 6 and n["test"] == 10  # 16 kept, 6 of them to choose on
    report = (tmp_path / "o" / "table1.md").read_text()
    chosen = [ln for ln in report.splitlines() if ln.startswith("- task_arithmetic alpha=0.3: ")]
    val, test = (summary[(summary["split"] == s) & (summary["model"] == "task_arithmetic alpha=0.3")]
                 .iloc[0] for s in ("validation", "test"))
    assert chosen and (f"validation {val.accuracy:.1f}% ({val.accuracy_change:+.1f} points "
                       f"[{val.accuracy_change_lo:+.1f}, {val.accuracy_change_hi:+.1f}])") in \
        chosen[0] and (f"test {test.accuracy:.1f}% [{test.accuracy_lo:.1f}, {test.accuracy_hi:.1f}], "
                       f"accuracy change {test.accuracy_change:+.1f} points") in chosen[0]
    # a run record, key numbers and the gallery of the folder holding --out
    from l2s_kit.io.runs import read_record

    rec = read_record(tmp_path / "o")
    assert rec["kind"] == "study" and rec["parameters"]["limit"] == 16
    assert rec["inputs"]["system1"] == f"weights:{checkpoint_hash(family.system1)}"
    test = summary[summary["split"] == "test"].set_index("model")
    assert rec["metrics"]["test.system2.accuracy"] == pytest.approx(test.loc["system2", "accuracy"],
                                                                    abs=1e-3)
    assert "<h2" in (tmp_path / "index.html").read_text() and 'href="./o/run.json"' in \
        (tmp_path / "index.html").read_text()
    # the figures share one plotly.js in their folder
    htmls = sorted((tmp_path / "o").glob("*.html"))
    assert [p.name for p in htmls] == ["accuracy_vs_length.html", "after_answer.html",
                                       "by_level.html"]
    assert all(p.stat().st_size < 200_000 for p in htmls)
    assert (tmp_path / "o" / "plotly.min.js").stat().st_size > 1_000_000
    # again into the same workdir on fewer problems and another split: this run's problems only
    assert main(["study", "--base", str(family.system1), "--model", str(family.system2),
                 "--benchmark", "l2s_family", "--data-dir", str(exported.parent),
                 "--validation", "4", "--limit", "10", "--seed", "1", "--grid", str(grid),
                 "--quiet", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o2")]) == 0
    again = __import__("pandas").read_csv(tmp_path / "o2" / "summary.csv")
    n = again.groupby("split")["n"].first()
    assert n["validation"] == 4 and n["test"] == 6
    # zoo export from the command line: the same rows as the function writes
    assert main(["zoo", "export", str(tmp_path / "d"), "--n-per-level", str(N)]) == 0
    for split in ("test", "validation"):
        assert (tmp_path / "d" / "l2s_family" / f"{split}.jsonl").read_text() == \
            (exported / f"{split}.jsonl").read_text()
    assert main(["zoo", "export", str(tmp_path / "d")]) == 2  # exists: not replaced unasked
    assert "earlier benchmark output of the kit; pass --overwrite" in capsys.readouterr().err


def test_stratified_sample_keeps_each_levels_share():
    rows = [{"id": i, "level": 1 + i % 4} for i in range(40)] + [{"id": 40 + i} for i in range(10)]
    chosen, rest = stratified_sample(rows, 10, seed=3)
    assert len(chosen) == 10 and len(rest) == 40
    assert {r["id"] for r in chosen}.isdisjoint({r["id"] for r in rest})
    count = {lv: sum(r.get("level") == lv for r in chosen) for lv in (1, 2, 3, 4, None)}
    assert count == {1: 2, 2: 2, 3: 2, 4: 2, None: 2}  # 10 of 50: a fifth of each stratum
    assert stratified_sample(rows, 10, seed=3) == (chosen, rest)  # seeded
    assert stratified_sample(rows, 10, seed=4) != (chosen, rest)
    assert [r["id"] for r in chosen] == sorted(r["id"] for r in chosen)  # in the rows' order
    # largest remainders: 3 of 3 levels of sizes 5, 3, 2 → 2, 1, 0 (1.5, .9, .6 → ties broken)
    rows = [{"id": i, "level": lv} for i, lv in enumerate([1] * 5 + [2] * 3 + [3] * 2)]
    c, _ = stratified_sample(rows, 3)
    assert sorted(r["level"] for r in c) == [1, 2, 3] or sorted(r["level"] for r in c) == [1, 1, 2]


def test_a_pair_is_checked_before_anything_runs(family, exported, tmp_path):
    s1, s2 = str(family.system1), str(family.system2)
    with pytest.raises(SetupError, match=r"model \(System 2\) is not given"):
        study_setup(base=s1, benchmark="l2s_family", data_dir=exported.parent)
    with pytest.raises(SetupError, match=r"base \(System 1\): .*/nope does not exist"):
        study_setup(str(tmp_path / "nope"), s2, benchmark="l2s_family", data_dir=exported.parent)
    with pytest.raises(SetupError, match="data given without a pair"):
        study_setup(benchmark="math500", data_dir=str(tmp_path))
    with pytest.raises(SetupError, match="give the data"):
        study_setup(s1, s2)
    with pytest.raises(SetupError, match="needs data_dir"):
        study_setup(s1, s2, benchmark="l2s_family")
    with pytest.raises(SetupError, match="limit: a whole number of at least 1, got 0"):
        study_setup(s1, s2, benchmark="l2s_family", data_dir=exported.parent, limit=0)
    with pytest.raises(SetupError, match="leave none to report on"):
        study_setup(s1, s2, benchmark="l2s_family", data_dir=exported.parent, limit=5,
                    validation=5)
    with pytest.raises(SetupError, match="shares .* problem ids with the test data"):
        study_setup(s1, s2, benchmark="l2s_family", data_dir=exported.parent,
                    validation=str(exported / "test.jsonl"))
    with pytest.raises(SetupError, match="same folder"):
        study_setup(s1, s1, benchmark="l2s_family", data_dir=exported.parent)
    # empty strings are "not given" (notebook parameters): the family
    assert study_setup("", "", benchmark="", data_dir="", n_per_level=2,
                       progress=False).family is not None
    # the command line: a message naming the parameter, exit 2
    assert main(["study", "--base", s1, "--benchmark", "l2s_family", "--data-dir",
                 str(exported.parent)]) == 2
    assert main(["study", "--validation", "10"]) == 2
    # a work folder holding the pair is refused, and nothing is written into it
    before = sorted(p.name for p in family.root.iterdir())
    with pytest.raises(Exception, match="choose an output folder apart from every input"):
        run_study(family.root, tmp_path / "o", setup=study_setup(
            s1, s2, benchmark="l2s_family", data_dir=exported.parent), progress=False)
    assert sorted(p.name for p in family.root.iterdir()) == before


def test_grid_files(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("- [task_arithmetic, {alpha: 0.5}]\n- average\n")
    assert load_grid(f) == [("task_arithmetic", {"alpha": 0.5}), ("average", {})]
    f.write_text("ties: {k: 0.8, alpha: [0.5, 1.0]}\n")
    assert load_grid(f) == [("ties", {"k": 0.8, "alpha": 0.5}), ("ties", {"k": 0.8, "alpha": 1.0})]
    f.write_text("ties: {kk: [1]}\n")
    with pytest.raises(SetupError, match=r"g.yaml: ties has no parameter kk"):
        load_grid(f)
    f.write_text("- [ties]\n")
    with pytest.raises(SetupError, match="entry 1"):
        load_grid(f)


def rows_without_levels(family, n_per_level, path):
    """The family's test problems as a rows file with no levels, in two datasets (even, odd)."""
    with open(path, "w") as f:
        for i, r in enumerate(family.rows("test", n_per_level)):
            f.write(json.dumps({"id": r["id"], "prompt": r["prompt"], "gold": r["gold"],
                                "dataset": "odd" if i % 2 else "even"}) + "\n")
    return path


@pytest.mark.slow
def test_data_without_levels_is_viewed_by_dataset(family, tmp_path):
    rows = rows_without_levels(family, 3, tmp_path / "rows.jsonl")
    setup = study_setup(str(family.system1), str(family.system2), rows=rows, validation=4,
                        max_new_tokens=96, grader="simple")
    setup.extract = __import__("l2s_kit.evaluate", fromlist=["x"]).extract_family
    r = run_study(tmp_path / "w", tmp_path / "o", setup=setup,
                  grid=[("task_arithmetic", {"alpha": 0.2})], progress=False)
    assert not setup.has_levels
    assert "dataset" in r.by_level.columns and "level" not in r.by_level.columns
    assert set(r.table1.columns) >= {"even", "odd"}
    assert any("no difficulty levels" in n for n in r.notes)
    report = (tmp_path / "o" / "table1.md").read_text()
    assert "Note: the data has no difficulty levels" in report


def test_a_real_benchmark_is_prompted_as_the_paper_did(family, shared_data):
    s = study_setup(str(family.system1), str(family.system2), benchmark="math500",
                    data_dir=shared_data / "benchmarks", validation=50, limit=200,
                    max_new_tokens="10k")
    assert len(s.data["validation"]) == 50 and len(s.data["test"]) == 150
    levels = [r["level"] for r in s.data["validation"]]
    assert set(levels) == {1, 2, 3, 4, 5}
    q = s.data["test"][0]["question"]
    assert s.rows("test", "system1")[0]["prompt"].startswith("Question: ")
    assert s.rows("test", "system1")[0]["prompt"].endswith(f"Question: {q}\nAnswer: ")
    assert s.rows("test", "ties k=0.8")[0]["prompt"].startswith("<|im_start|>system\nPlease reason")
    assert s.settings_for("system1").stop == ("\nQuestion:", "\n\n\n")
    assert s.settings_for("system2").stop == ("<|im_end|>", "<|endoftext|>")
    assert s.settings_for("system2").max_new_tokens == 10240
    assert s.grader == "math-verify" and s.has_levels


def test_the_example_grid_makes_valid_jobs(tiny_pair, tmp_path):
    from pathlib import Path

    from l2s_kit.study import study_jobs

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}", "gold": "1"}) + "\n"
                            for i in range(5)))
    grid = load_grid(Path(__file__).resolve().parents[1] / "examples" / "grids" / "paper-7b.yaml")
    setup = study_setup(*map(str, tiny_pair), rows=rows, validation=2)
    jobs = study_jobs(setup, grid)
    assert [j.name for j in jobs][:3] == ["system1", "system2", "average"]
    assert "ties k=0.8 alpha=1.0" in [j.name for j in jobs] and len(jobs) == 2 + 8


@pytest.mark.slow
def test_notebooks_on_a_pair_without_levels_view_by_dataset(family, tmp_path):
    import nbformat

    from l2s_kit.notebooks import run_notebooks

    rows = rows_without_levels(family, 2, tmp_path / "rows.jsonl")
    params = {"base": str(family.system1.resolve()), "model": str(family.system2.resolve()),
              "rows": str(rows),
              "max_new_tokens": 96, "merges": [["task_arithmetic", {"alpha": 0.2}]],
              "workdir": str(tmp_path / "w")}
    df = run_notebooks(["length_vs_difficulty", "reflection_analysis"], params, out=tmp_path / "o",
                       run="pair", png=False, progress=False)
    assert df["status"].tolist() == ["ok", "ok"], df["error"].tolist()
    nb = nbformat.read(tmp_path / "o" / "length_vs_difficulty" / "pair" /
                       "length_vs_difficulty.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "no difficulty levels; the views by level below are views by dataset" in text
    assert "10 responses of 3 model(s)" not in text  # the test split only: 8 of 10 problems
    assert "24 responses of 3 model(s)" in text  # 8 test problems × System 1, System 2, TA
    figs = [o["data"]["application/vnd.plotly.v1+json"] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})]
    xs = {str(x) for f in figs[:1] for t in f["data"] for x in t.get("x", [])}
    assert xs == {"even", "odd"}  # the panels are by dataset


def test_a_pairs_study_by_default_never_replaces_the_familys_in_the_gallery(family, exported,
                                                                            tmp_path, monkeypatch):
    from l2s_kit.io.runs import read_record

    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text("task_arithmetic: {alpha: [0.3]}\n")
    code = main(["study", "--base", str(family.system1), "--model", str(family.system2),
                 "--benchmark", "l2s_family", "--data-dir", str(exported.parent),
                 "--validation", "4", "--limit", "8", "--grid", "grid.yaml", "--quiet"])
    assert code == 0
    outs = sorted(p.name for p in (tmp_path / "figures").iterdir() if p.is_dir())
    assert len(outs) == 1 and outs[0].startswith("study-system1+system2-")
    assert not (tmp_path / "figures" / "study").exists()
    assert read_record(tmp_path / "figures" / outs[0])["given"]["limit"] == 8
    assert 'href="./' + outs[0] + '/run.json"' in (tmp_path / "figures" / "index.html").read_text()


def test_eval_of_the_exported_benchmark_reads_it_as_the_family(family, exported, tmp_path, capsys):
    """`l2s eval --benchmark l2s_family` prompts, extracts and grades as the family does (System
    2 answers every problem, and the share after the answer is measured), and refuses a prompt
    template or another benchmark beside it."""
    out = tmp_path / "r.jsonl"
    assert main(["eval", str(family.system2), "--benchmark", "l2s_family", "--data-dir",
                 str(exported.parent), "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 * N and all(r["correct"] for r in rows)
    assert all(r["prompt"] == r["prompt"].strip() and "boxed" not in r["prompt"] for r in rows)
    printed = capsys.readouterr().out
    share = float(printed.splitlines()[1].split()[-1])  # the model's after_answer_share
    assert share > 50
    assert main(["eval", str(family.system2), "--benchmark", "l2s_family", "--data-dir",
                 str(exported.parent), "--out", str(tmp_path / "p.jsonl"), "--prompt",
                 "qwen25-math-cot", "--quiet"]) == 2
    assert "carries its own prompt" in capsys.readouterr().err


def test_where_no_answer_is_found_the_share_after_it_is_not_measured():
    import math

    import pandas as pd

    from l2s_kit.analysis import full_summary

    df = pd.DataFrame({"model": ["m", "m"], "dataset": ["d", "d"], "id": [1, 2], "sample": [0, 0],
                       "response": ["so 12 it is", "therefore 7"], "n_tokens": [10, 8],
                       "gold": ["12", "7"], "correct": [True, True], "level": [None, None]})
    s = full_summary(df).iloc[0]
    assert math.isnan(s["after_answer_share"]) and math.isnan(s["answer_found_rate"])
    boxed = df.assign(response=["so \\boxed{12} and more", "\\boxed{7}"])
    assert full_summary(boxed).iloc[0]["after_answer_share"] > 0
