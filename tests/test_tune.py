"""`l2s tune`: the search space, the informative subset, a real search on the family (its numbers
equal the explorer's, its choice is the shortest feasible trial, it resumes), and the CLI."""

from __future__ import annotations

import pandas as pd
import pytest

from l2s_kit.analysis import pareto_front
from l2s_kit.cli import main
from l2s_kit.study.explorer import Explorer
from l2s_kit.study.tune import (
    TuneError,
    informative_subset,
    merge_params,
    search_space,
    start_points,
    subset_weights,
    tune,
)

N = 8  # problems per level of the family's splits


def test_search_space_defaults_ranges_and_schedules():
    assert search_space("ties", None) == {"k": (0.0, 0.95), "alpha": (0.0, 1.5)}
    assert search_space("ties", {"k": (0.5, 0.9)}) == {"k": (0.5, 0.9)}
    assert search_space("task_arithmetic", None, ("alpha",)) == {
        "alpha@first": (0.0, 1.5), "alpha@last": (0.0, 1.5)}
    assert merge_params({"alpha@first": 0.2, "alpha@last": 0.9, "k": 0.8}) == {
        "alpha": [0.2, 0.9], "k": 0.8}
    with pytest.raises(TuneError, match="has no float parameter 'p'"):
        search_space("ties", {"p": (0.1, 0.5)})
    with pytest.raises(Exception, match="out of range"):
        search_space("ties", {"k": (0.5, 1.5)})
    with pytest.raises(TuneError, match="low end"):
        search_space("ties", {"k": (0.9, 0.5)})
    with pytest.raises(TuneError, match="cannot be a layer schedule"):
        search_space("sens_merging", {"temperature": (1.0, 3.0)}, ("temperature",))


def test_a_search_starts_from_the_grids_settings_inside_its_ranges(family):
    from l2s_kit.merging.methods.settings import GRID, PAIR_GRID
    from l2s_kit.study.setup import family_setup

    fam = family_setup(family, 4)
    ties = [{"k": p["k"], "alpha": p["alpha"]} for m, p in GRID if m == "ties"]
    assert start_points("ties", fam, search_space("ties", None)) == ties
    assert start_points("ties", fam, search_space("ties", {"k": (0.6, 0.9), "alpha": (0, 1)})) == \
        [t for t in ties if t["k"] == 0.8]
    pair = type("Pair", (), {"family": None})()  # a researcher's pair: the paper's settings
    assert start_points("task_arithmetic", pair, search_space("task_arithmetic", None)) == \
        [{"alpha": p["alpha"]} for m, p in PAIR_GRID if m == "task_arithmetic"]
    flat = [{"alpha@first": p["alpha"], "alpha@last": p["alpha"]} for m, p in GRID
            if m == "task_arithmetic"]  # a schedule starts flat, at the grid's values
    assert start_points("task_arithmetic", fam, search_space("task_arithmetic", None, ("alpha",))) == flat


@pytest.fixture(scope="module")
def searched(family, tmp_path_factory):
    work = tmp_path_factory.mktemp("tune")
    r = tune("ties", trials=6, n_per_level=N, workdir=work, out=work / "out", progress=False)
    return r, work


@pytest.mark.slow
def test_the_subset_holds_the_problems_only_system2_solves(family, searched):
    _, work = searched
    ex = Explorer(family, n_per_level=N, workdir=work)
    ids = informative_subset(ex, 0.25)
    assert len(ids) == max(10, round(0.25 * len(ex.rows)))
    s1 = ex.responses("system1").assign(id=lambda d: d["id"].astype(str)).set_index("id")["correct"]
    s2 = ex.responses("system2").assign(id=lambda d: d["id"].astype(str)).set_index("id")["correct"]
    gap = set(s1.index[~s1.astype(bool) & s2.astype(bool)])
    assert len(set(ids) & gap) == min(len(gap), len(ids) // 2)
    # the subset's estimate of the whole split: each half weighs its share of the split
    w = subset_weights(ex, ids)
    assert sum(w.values()) == pytest.approx(1.0)
    assert sum(v for i, v in w.items() if i in gap) == pytest.approx(len(gap) / len(ex.rows))


@pytest.mark.slow
def test_a_search_records_every_trial_and_chooses_the_shortest_feasible(family, searched):
    r, work = searched
    t = r.trials
    assert len(t) == 6 and set(t["state"]) <= {"complete", "pruned"}
    assert (t["rung"] == "validation").sum() >= 1
    full = t[t["rung"] == "validation"]
    # every promoted trial's numbers are the explorer's for that merge
    ex = Explorer(family, n_per_level=N, workdir=work)
    want = ex.sweep([("ties", {"k": k, "alpha": a}) for k, a in zip(full["k"], full["alpha"])])
    want = want.iloc[2:].set_index("model")
    for _, row in full.iterrows():
        assert row["accuracy"] == pytest.approx(want.loc[row["model"], "accuracy"])
        assert row["mean_tokens"] == pytest.approx(want.loc[row["model"], "mean_tokens"])
    ok = full[full["accuracy"] >= r.reference["accuracy"] - 3.0]
    assert r.chosen["model"].tolist() == ok.sort_values("mean_tokens")["model"].head(1).tolist()
    assert r.test["model"].tolist()[:2] == ["system1", "system2"]
    assert r.test["model"].tolist()[2:] == r.chosen["model"].tolist()
    assert pd.read_csv(work / "out" / "trials.csv")["trial"].tolist() == list(range(6))
    # pruned trials cost the subset only
    assert set(t.loc[t["state"] == "pruned", "problems"]) <= {t["problems"].min()}


@pytest.mark.slow
def test_a_search_resumes_where_it_stopped(family, searched):
    r, work = searched
    again = tune("ties", trials=8, n_per_level=N, workdir=work, progress=False)
    assert len(again.trials) == 8
    first = again.trials.head(6)[["trial", "model", "accuracy"]]
    pd.testing.assert_frame_equal(first.reset_index(drop=True),
                                  r.trials[["trial", "model", "accuracy"]].reset_index(drop=True))


@pytest.mark.slow
def test_a_pareto_search_returns_the_front_of_its_trials(family, tmp_path):
    r = tune("task_arithmetic", trials=5, objective="pareto", schedules=["alpha"], n_per_level=N,
             workdir=tmp_path, progress=False)
    full = r.trials[r.trials["rung"] == "validation"].drop_duplicates("model")
    assert sorted(r.chosen["model"]) == sorted(pareto_front(full)["model"])
    assert all(m.startswith("task_arithmetic alpha=[") for m in r.trials["model"])


def test_cli_tune_refuses_bad_input(family, capsys):
    assert main(["tune", "--method", "ties", "--space", "k=high"]) == 2
    assert "--space 'k=high': give NAME=LOW:HIGH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse's own check of the choices
        main(["tune", "--method", "ties", "--objective", "longest"])
    assert e.value.code == 2
    assert main(["tune", "--method", "ties", "--subset", "0"]) == 2
    assert "subset is a fraction" in capsys.readouterr().err


def test_tune_writes_nothing_into_the_pair(family, capsys):
    before = sorted(p.name for p in family.system2.iterdir())
    assert main(["tune", "--method", "ties", "--trials", "1", "--n-per-level", "4",
                 "--out", str(family.system2 / "tune"), "--quiet"]) == 2
    assert "System 2" in capsys.readouterr().err
    assert sorted(p.name for p in family.system2.iterdir()) == before


@pytest.mark.slow
def test_a_search_stopped_mid_trial_reruns_that_trial_and_chooses_as_if_never_stopped(
        family, searched, tmp_path, monkeypatch):
    """Trial 4 of 6 is interrupted (Ctrl-C, or a process killed while it ran); the resumed search
    tries it again and ends with the trials and the choice of the uninterrupted one."""
    import optuna

    from l2s_kit.study import tune as tune_mod

    whole, _ = searched
    judge = tune_mod._Trials.promising
    calls = []

    def stop_in_the_fourth(self, sub):  # after its parameters were drawn and tried on the subset
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return judge(self, sub)

    monkeypatch.setattr(tune_mod._Trials, "promising", stop_in_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        tune("ties", trials=6, n_per_level=N, workdir=tmp_path, progress=False)
    monkeypatch.setattr(tune_mod._Trials, "promising", judge)
    db = next(tmp_path.rglob("tune-ties-*.db"))
    study = optuna.load_study(study_name=db.stem.split("-")[-1], storage=f"sqlite:///{db}")
    stopped = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert [(t.number, t.params) for t in stopped] == [(3, {"k": 0.8, "alpha": 0.3})]
    again = tune("ties", trials=6, n_per_level=N, workdir=tmp_path, progress=False)
    kept = again.trials[again.trials["state"] != "fail"]
    assert sorted(kept["model"]) == sorted(whole.trials["model"])
    assert "ties k=0.8 alpha=0.3" in set(kept["model"])  # the stopped trial's, rerun
    assert again.chosen["model"].tolist() == whole.chosen["model"].tolist()
