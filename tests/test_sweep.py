"""Sweeps of recipes × datasets on the built-in family: the local runner against evaluating each
merge by hand, and the Ray runner (a local Ray on this machine's CPUs) against the local runner."""

from __future__ import annotations

import pytest

from l2s_kit.analysis import summarize
from l2s_kit.evaluate import GenerationSettings, evaluate, extract_family
from l2s_kit.merging import load_recipe
from l2s_kit.study.sweep import SweepError, run_sweep, sweep_jobs

SETTINGS = GenerationSettings(max_new_tokens=96, batch_size=64)  # the study's, greedy


@pytest.fixture(scope="module")
def grid(family):
    pair = {"base_model": str(family.system1), "models": [str(family.system2)]}
    recipes = {"ta-0.2": {"merge_method": "task_arithmetic", "parameters": {"alpha": 0.2}, **pair},
               "ties-7b": {"preset": "ties-7b", **pair}}
    datasets = {"validation": family.rows("validation", 2), "test": family.rows("test", 2)}
    return recipes, datasets


def test_sweep_jobs_are_checked_first(family, grid, tmp_path):
    recipes, datasets = grid
    with pytest.raises(SweepError, match="no config.json"):
        sweep_jobs(models={"s2": tmp_path})
    with pytest.raises(Exception, match="unknown preset"):
        sweep_jobs({"bad": {**recipes["ta-0.2"], "preset": "ties-9b"}})
    jobs = sweep_jobs(recipes, models={"system2": family.system2})
    with pytest.raises(SweepError, match="runner 'dask'"):
        run_sweep(jobs, datasets, tmp_path, runner="dask")
    with pytest.raises(SweepError, match="reference 'system1' is not a job"):
        run_sweep(jobs, datasets, tmp_path, reference="system1")


@pytest.mark.slow
def test_local_sweep_equals_merging_and_evaluating_by_hand(family, grid, tmp_path):
    recipes, datasets = grid
    jobs = sweep_jobs(recipes, models={"system2": family.system2})
    r = run_sweep(jobs, datasets, tmp_path / "sweep", settings=SETTINGS, extract=extract_family,
                  reference="system2", progress=False)
    assert r.jobs["name"].tolist() == ["system2", "ta-0.2", "ties-7b"]
    assert len(r.responses) == 3 * 20  # 3 models × (10 validation + 10 test problems)
    # a merge of the sweep is the recipe's merge: evaluate it by hand and compare
    import l2s_kit

    by_hand = l2s_kit.merge(load_recipe(recipes["ta-0.2"]), tmp_path / "by-hand", progress=False)
    rows = [{**row, "dataset": "test"} for row in datasets["test"]]
    hand = evaluate(by_hand, rows, tmp_path / "hand.jsonl", settings=SETTINGS,
                    model_name="ta-0.2", extract=extract_family, progress=False)
    mine = r.responses[(r.responses["model"] == "ta-0.2") & (r.responses["dataset"] == "test")]
    assert mine["response"].tolist() == hand["response"].tolist()
    assert mine["recipe_hash"].iloc[0] == load_recipe(recipes["ta-0.2"]).hash
    # the tables are the package's summaries of the gathered responses
    expect = summarize(r.responses, ("model", "dataset"), reference="system2")
    assert r.summary.equals(expect)
    s2 = expect[(expect["model"] == "system2") & (expect["dataset"] == "test")]
    assert r.table1.loc[("system2", "accuracy"), "test"] == s2["accuracy"].iloc[0]
    assert list(r.table1.columns[:2]) == ["validation", "test"]
    # a second run reuses merges and responses
    again = run_sweep(jobs, datasets, tmp_path / "sweep", settings=SETTINGS, extract=extract_family,
                      reference="system2", progress=False)
    assert again.responses.equals(r.responses)


@pytest.mark.slow
def test_ray_sweep_equals_local_sweep(family, grid, tmp_path):
    import ray  # noqa: F401  (installed by the set-up, extra "cluster": no skip)

    recipes, datasets = grid
    jobs = sweep_jobs(recipes)  # 2 merges, 2 datasets of 10 problems: small for 2 cores
    local = run_sweep(jobs, datasets, tmp_path / "local", settings=SETTINGS,
                      extract=extract_family, progress=False)
    remote = run_sweep(jobs, datasets, tmp_path / "ray", runner="ray", settings=SETTINGS,
                       extract=extract_family, progress=False)
    assert remote.jobs["folder"].str.startswith(str((tmp_path / "ray").resolve())).all()
    cols = ["model", "dataset", "id", "response", "n_tokens", "answer", "correct", "recipe_hash"]
    assert remote.responses[cols].equals(local.responses[cols])
    assert remote.summary.equals(local.summary)
