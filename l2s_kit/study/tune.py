"""Choose a merge automatically: search a method's parameters on the validation split.

>>> r = tune("ties", trials=30)                      # the built-in family
>>> r = tune("ties", setup=study_setup(base, model, benchmark="math500", data_dir=...),
...          objective="pareto", space={"k": (0.5, 0.95), "alpha": (0.3, 1.5)})
>>> r.trials, r.chosen, r.test                        # DataFrames

The search is Optuna's (TPE, multivariate, seeded; NSGA-II with ``sampler="nsga2"``), started
(``warm_start``) from the study grid's settings of the method (the paper's), over the method's
float parameters, each in the range given in ``space`` (default: the method's own range,
capped as the explorer's sliders are) on a 0.01 grid; a parameter named in ``schedules`` becomes a
layer schedule, its first-layer and last-layer values searched separately (``alpha: [a, b]``).

Objectives:

- ``"shortest"``: the shortest merge (mean generated tokens) whose accuracy is within
  ``tolerance`` points of System 2, as the study chooses on its grid. Infeasible trials are told
  to Optuna as constraint violations (the number of points they miss by).
- ``"pareto"``: accuracy (up) and mean tokens (down) together; the result is the Pareto front.

Every candidate is first evaluated on a small informative subset of the validation problems
(``subset``, default a quarter, at least 10): the problems System 1 gets wrong and System 2 gets
right (where a merge shows whether it kept System 2's reasoning) and as many others, each half
stratified by level. Its numbers on the subset are estimates for the whole split, each half
weighted by its share of the split (the subset over-represents the hard half). Only promising candidates are promoted to the whole validation split
(a two-rung successive halving): with ``"shortest"``, those within the tolerance on the subset
(give or take one problem) and shorter there than the best merge found so far was; with
``"pareto"``, those not dominated on the subset by an earlier candidate by more than the
tolerance. Responses are kept in the explorer's resumable files, and the study
in an Optuna SQLite file in ``workdir``: a search that is killed goes on where it stopped, and
evaluations it already made cost nothing. Every trial is kept in ``trials.csv`` (parameters,
recipe hash, rung, accuracy, length, state), and the chosen merges are evaluated once on test.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from l2s_kit.analysis import summarize
from l2s_kit.errors import L2SError
from l2s_kit.io.choices import OBJECTIVES, SAMPLERS
from l2s_kit.study.explorer import Explorer, model_name
from l2s_kit.study.setup import REFERENCE

GRID = 0.01


class TuneError(L2SError, ValueError):
    """A search cannot run as asked (names the parameter)."""


@dataclass
class TuneResult:
    method: str
    objective: str
    tolerance: float
    trials: pd.DataFrame                 # one row per trial (every rung's numbers; ``within``:
                                         # promoted and within the tolerance of System 2)
    chosen: pd.DataFrame                 # the chosen merge(s) on validation
    test: pd.DataFrame                   # System 1, System 2 and the chosen merge(s) on test
    reference: dict = field(default_factory=dict)  # System 2's validation accuracy and length
    files: list[Path] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        """Problems generated for the search (subset rungs and whole-split rungs together)."""
        return int(self.trials["problems"].sum()) if len(self.trials) else 0


def search_space(method: str, space: dict | None, schedules=()) -> dict[str, tuple[float, float]]:
    """name → (low, high) of every searched parameter; a scheduled parameter ``x`` becomes
    ``x@first`` and ``x@last``."""
    from l2s_kit.merging import get_method

    m = get_method(method)
    params = m.accepts()
    floats = {k: p for k, p in params.items() if p.type is float}
    if space:
        unknown = sorted(set(space) - set(floats))
        if unknown:
            raise TuneError(f"space: {method} has no float parameter {unknown[0]!r}; its float "
                            f"parameters: {', '.join(floats) or 'none'}")
    out = {}
    for k, p in floats.items():
        if space is not None and k not in space:
            continue
        lo, hi = (space or {}).get(k) or _default_range(k, p)
        lo, hi = float(lo), float(hi)
        for v in (lo, hi):
            p.check(v, f"space.{k}")
        if not lo < hi:
            raise TuneError(f"space.{k}: the low end {lo} must be below the high end {hi}")
        if k in schedules:
            if k in m.unscheduled:
                raise TuneError(f"schedules: {method}'s {k!r} cannot be a layer schedule")
            out[f"{k}@first"] = out[f"{k}@last"] = (lo, hi)
        else:
            out[k] = (lo, hi)
    bad = sorted(set(schedules) - set(floats))
    if bad:
        raise TuneError(f"schedules: {bad[0]!r} is not a float parameter of {method}")
    if not out:
        raise TuneError(f"{method} has no float parameter to search; give space")
    return out


def _default_range(name: str, p) -> tuple[float, float]:
    if p.search is not None:  # where the method says to look
        lo, hi = p.search.lo, p.search.hi
    else:
        r = p.range
        lo = r.lo if r is not None and r.lo is not None else 0.0
        hi = r.hi if r is not None and r.hi is not None else 1.0
    if p.range is not None and p.range.hi_open and hi >= p.range.hi:
        hi = p.range.hi - GRID
    if p.range is not None and p.range.lo_open and lo <= p.range.lo:
        lo = p.range.lo + GRID
    return lo, hi


def merge_params(values: dict) -> dict:
    """Trial values → merge parameters (``x@first``/``x@last`` → ``x: [first, last]``)."""
    out = {}
    for k, v in values.items():
        name, _, end = k.partition("@")
        if end:
            out.setdefault(name, [None, None])[0 if end == "first" else 1] = v
        else:
            out[name] = v
    return out


def _gap(explorer: Explorer) -> set[str]:
    """Ids of the problems System 1 gets wrong and System 2 right (majority of samples)."""
    def correct(model):
        df = explorer.responses(model)
        return df.groupby(df["id"].astype(str))["correct"].mean().to_dict()

    s1, s2 = correct("system1"), correct("system2")
    return {str(r["id"]) for r in explorer.rows
            if s1.get(str(r["id"]), 0) < 0.5 <= s2.get(str(r["id"]), 0)}


def subset_weights(explorer: Explorer, ids: list[str],
                   gap: set[str] | None = None) -> dict[str, float]:
    """id → weight such that Σ weight · correct estimates the whole split's accuracy from the
    subset: each stratum (System 2's own problems ``gap``, the rest) weighs its share of the
    split."""
    gap = _gap(explorer) if gap is None else gap
    n = len(explorer.rows)
    n_gap = len(gap)
    sub_gap = [i for i in ids if i in gap]
    sub_rest = [i for i in ids if i not in gap]
    out = {}
    for part, share in ((sub_gap, n_gap / n), (sub_rest, (n - n_gap) / n)):
        for i in part:
            out[i] = share / len(part)
    return out


def informative_subset(explorer: Explorer, fraction: float, seed: int = 0,
                       gap: set[str] | None = None) -> list[str]:
    """Ids of about ``fraction`` of the split's problems (at least 10): half where System 1 is
    wrong and System 2 right, half from the rest, each half stratified by level (when the data
    has levels)."""
    from l2s_kit.study.setup import stratified_sample

    rows = list(explorer.rows)
    n = max(10, round(fraction * len(rows)))
    if n >= len(rows):
        return [str(r["id"]) for r in rows]
    gap_ids = _gap(explorer) if gap is None else gap
    gap = [r for r in rows if str(r["id"]) in gap_ids]
    rest = [r for r in rows if str(r["id"]) not in gap_ids]
    take = min(len(gap), n // 2)
    chosen = stratified_sample(gap, take, seed)[0] if take else []
    chosen += stratified_sample(rest, n - len(chosen), seed)[0]
    return [str(r["id"]) for r in chosen]


def start_points(method: str, setup, ranges: dict) -> list[dict]:
    """The study grid's settings of ``method`` (the family's ``GRID``, a pair's ``PAIR_GRID``: the
    paper's settings) inside the searched ranges, as trial values: where the search starts."""
    from l2s_kit.merging.methods.settings import GRID, PAIR_GRID

    grid = GRID if getattr(setup, "family", None) is not None else PAIR_GRID
    out = []
    for m, params in grid:
        if m != method:
            continue
        values = {}
        for k, (lo, hi) in ranges.items():
            name, _, end = k.partition("@")
            v = params.get(name)
            if v is None or not lo <= v <= hi:
                break
            values[k] = v
        else:
            if values not in out:
                out.append(values)
    return out


def _summary(df: pd.DataFrame, weights: dict[str, float] | None = None) -> dict:
    """Accuracy (%), mean tokens and problems of responses; with ``weights`` (a subset's), the
    accuracy and length are estimates for the whole split (see :func:`subset_weights`)."""
    if weights is None:  # one model's responses: the summary every table gives
        s = summarize(df, by=["model"]).iloc[0]
        return {"accuracy": float(s["accuracy"]), "mean_tokens": float(s["mean_tokens"]),
                "problems": int(df["id"].nunique())}
    per = df.groupby(df["id"].astype(str))[["correct", "n_tokens"]].mean()
    w = per.index.map(weights).to_numpy(dtype=float)
    return {"accuracy": 100.0 * float((per["correct"] * w).sum() / w.sum()),
            "mean_tokens": float((per["n_tokens"] * w).sum() / w.sum()),
            "problems": len(per)}


def _check_settings(objective: str, sampler: str, trials: int, subset: float) -> None:
    if objective not in OBJECTIVES:
        raise TuneError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if sampler not in SAMPLERS:
        raise TuneError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if trials < 1:
        raise TuneError(f"trials must be at least 1, got {trials}")
    if not 0 < subset <= 1:
        raise TuneError(f"subset is a fraction of the validation problems in (0, 1], got {subset}")


def _open_study(db: Path, key: str, objective: str, sampler: str, seed: int):
    """The Optuna study in ``db`` (resumed when it exists), and whether trials carry their own
    constraint (``Trial.set_constraint``, Optuna >= 5; else the samplers' constraints_func)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the accuracy deficit is the constraint
    per_trial = hasattr(optuna.trial.Trial, "set_constraint")
    kw = {} if per_trial else {"constraints_func": lambda t: (t.user_attrs.get("deficit", 0.0),)}
    if objective == "shortest":
        samp = (optuna.samplers.TPESampler(seed=seed, multivariate=True, **kw)
                if sampler == "tpe" else optuna.samplers.NSGAIISampler(seed=seed, **kw))
        study = optuna.create_study(
            study_name=key, storage=f"sqlite:///{db}", load_if_exists=True, sampler=samp,
            direction="minimize")
    else:
        samp = (optuna.samplers.TPESampler(seed=seed, multivariate=True) if sampler == "tpe"
                else optuna.samplers.NSGAIISampler(seed=seed))
        study = optuna.create_study(study_name=key, storage=f"sqlite:///{db}",
                                    load_if_exists=True, sampler=samp,
                                    directions=["maximize", "minimize"])
    _seed_per_trial(samp, seed)
    _rerun_killed_trials(study)
    return study, per_trial


def _done(study) -> int:
    """Trials whose result counts (complete or pruned)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _seed_per_trial(sampler, seed: int) -> None:
    """Each trial draws from a stream fixed by (seed, trials done before it), not by what this
    process drew before: a search stopped and resumed suggests what an uninterrupted one does."""
    from l2s_kit.io.seeds import seed_from

    before = sampler.before_trial

    def before_trial(study, trial):
        s = seed_from(seed, "trial", _done(study)) % 2**32
        for owner in (sampler, getattr(sampler, "_random_sampler", None)):
            rng = getattr(getattr(owner, "_rng", None), "rng", None)
            if rng is not None:
                rng.seed(s)
        return before(study, trial)

    sampler.before_trial = before_trial


def _rerun_killed_trials(study) -> None:
    """A trial that an interruption stopped (failed, or left running by a killed process: a
    search runs one trial at a time, so any running trial found on opening is one) is queued to
    be tried again, unless its parameters have a result or wait already."""
    from optuna.trial import TrialState

    stopped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
        stopped.append(t.params or t.system_attrs.get("fixed_params") or {})  # enqueued: fixed
    have = [t.params for t in study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING))]
    for params in stopped:
        if params and params not in have:
            study.enqueue_trial(params)
            have.append(params)


class _Trials:
    """One trial: the merge tried on the informative subset first, then (if promising) on the
    whole validation split; its numbers kept as the trial's user attributes."""

    def __init__(self, study, val: Explorer, method: str, ranges: dict, ids, weights: dict,
                 floor: float, objective: str, tolerance: float, per_trial: bool):
        self.study, self.val, self.method, self.ranges = study, val, method, ranges
        self.ids, self.weights, self.floor = ids, weights, floor
        self.objective, self.tolerance, self.per_trial = objective, tolerance, per_trial
        self.slack = 100.0 * max(weights.values())  # one subset problem, in accuracy points

    def penalized(self, s: dict) -> float:  # length, plus 10 tokens per point missed
        return s["mean_tokens"] + 10.0 * max(0.0, self.floor - s["accuracy"])

    def promising(self, sub: dict) -> bool:
        """Worth the whole split: its accuracy estimated from the subset within the tolerance
        (give or take one problem) and shorter on the subset than the best merge found so far
        was there."""
        if sub["accuracy"] < self.floor - self.slack:
            return False
        best = [x.user_attrs["subset"] for x in self.study.get_trials(deepcopy=False)
                if "full" in x.user_attrs and x.user_attrs["full"]["accuracy"] >= self.floor]
        return not best or sub["mean_tokens"] < min(b["mean_tokens"] for b in best)

    def __call__(self, t) -> float | tuple[float, float]:
        import optuna

        values = {k: round(t.suggest_float(k, lo, hi, step=GRID), 6)
                  for k, (lo, hi) in self.ranges.items()}
        params = merge_params(values)
        t.set_user_attr("model", model_name(self.method, params))
        t.set_user_attr("recipe_hash", self.val.recipe(self.method, **params).hash)
        sub = _summary(self.val.responses(self.method, subset=self.ids, **params), self.weights)
        t.set_user_attr("subset", sub)
        if self.objective == "shortest":
            t.report(self.penalized(sub), step=1)
            if not self.promising(sub):
                t.set_user_attr("deficit", max(0.0, self.floor - sub["accuracy"]))
                raise optuna.TrialPruned()
        else:
            done = [x.user_attrs["subset"] for x in self.study.get_trials(deepcopy=False)
                    if x.number != t.number and "subset" in x.user_attrs]
            if any(d["accuracy"] - self.tolerance > sub["accuracy"] and
                   d["mean_tokens"] < sub["mean_tokens"] for d in done):
                raise optuna.TrialPruned()
        full = _summary(self.val.responses(self.method, **params))
        t.set_user_attr("full", full)
        deficit = max(0.0, self.floor - full["accuracy"])
        t.set_user_attr("deficit", deficit)
        if self.per_trial and self.objective == "shortest":
            t.set_constraint("accuracy_deficit", deficit)
        if self.objective == "shortest":
            return full["mean_tokens"]
        return full["accuracy"], full["mean_tokens"]


def tune(method: str, *, setup=None, space: dict | None = None, schedules=(),
         objective: str = "shortest", tolerance: float = 3.0, trials: int = 30,
         subset: float = 0.25, sampler: str = "tpe", seed: int = 0, warm_start: bool = True,
         workdir: str | os.PathLike = "data/runs/tune", out: str | os.PathLike | None = None,
         n_per_level: int = 20, progress: bool = True, overwrite: bool = False) -> TuneResult:
    """Search ``method``'s parameters on the validation split of ``setup`` (default: the
    built-in family, ``n_per_level`` problems per level); see the module docstring. ``out``
    (the tables) holds this run's files only: an earlier tune's folder is replaced, one holding
    anything else refused before any work unless ``overwrite``."""
    import transformers

    transformers.logging.disable_progress_bar()
    _check_settings(objective, sampler, trials, subset)
    if out is not None:
        from l2s_kit.io import check_results_folder

        check_results_folder(out, "tune", overwrite)  # before any work
    ranges = search_space(method, space, tuple(schedules))
    workdir = Path(workdir)
    val = Explorer(setup, split="validation", n_per_level=n_per_level, workdir=workdir)
    from l2s_kit.io import check_apart

    pair = {"System 1": val.setup.system1, "System 2": val.setup.system2}
    for folder in (workdir, out):  # nothing is written into, around or over the pair
        if folder is not None:
            check_apart(folder, pair)
    ref_df = val.responses(REFERENCE)
    ref = _summary(ref_df)
    gap = _gap(val)  # read System 1's and System 2's responses once
    ids = informative_subset(val, subset, seed, gap)
    weights = subset_weights(val, ids, gap)
    floor = {"full": ref["accuracy"] - tolerance}

    key = hashlib.sha256(json.dumps([val.setup.name, str(val.out), method, ranges, objective,
                                     tolerance, subset, sampler, seed, warm_start], sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    db = workdir / val.setup.name / f"tune-{method}-{key}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    study, per_trial = _open_study(db, key, objective, sampler, seed)
    run_trial = _Trials(study, val, method, ranges, ids, weights, floor["full"], objective,
                        tolerance, per_trial)
    if warm_start and not study.get_trials(deepcopy=False):
        for params in start_points(method, val.setup, ranges)[:trials]:
            study.enqueue_trial(params)
    left = trials - _done(study)
    if left > 0:
        study.optimize(run_trial, n_trials=left, show_progress_bar=progress)
    table = trials_table(study, ranges, len(ids), len(val.rows))
    table["within"] = table["accuracy"].ge(floor["full"])  # NaN (not promoted): False
    chosen = choose(table, objective, floor["full"])
    merges = [(method, merge_params({k: r[k] for k in ranges})) for _, r in chosen.iterrows()]
    test = Explorer(val.setup, split="test", workdir=workdir).sweep(merges) if merges else \
        pd.DataFrame()
    val.close()
    result = TuneResult(method, objective, tolerance, table, chosen, test,
                        {"accuracy": ref["accuracy"], "mean_tokens": ref["mean_tokens"]})
    if out is not None:
        result.files = write(result, Path(out), overwrite)
    return result


def trials_table(study, ranges: dict, n_subset: int, n_full: int) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished():
            continue
        sub, full = t.user_attrs.get("subset") or {}, t.user_attrs.get("full") or {}
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "model": t.user_attrs.get("model"),
            "recipe_hash": t.user_attrs.get("recipe_hash"),
            **{k: None if t.params.get(k) is None else round(t.params[k], 6) for k in ranges},
            "rung": "validation" if full else "subset",
            "subset_accuracy": sub.get("accuracy"), "subset_mean_tokens": sub.get("mean_tokens"),
            "accuracy": full.get("accuracy"), "mean_tokens": full.get("mean_tokens"),
            "started": t.datetime_start, "seconds": (t.datetime_complete - t.datetime_start
                                                     ).total_seconds() if t.datetime_complete else None})
    seen: set = set()  # a setting tried again costs nothing: its responses are kept
    for r in sorted(rows, key=lambda r: r["trial"]):
        rungs = ["subset"] + (["validation"] if r["rung"] == "validation" else [])
        r["problems"] = sum((n_subset if rung == "subset" else n_full - n_subset)
                            for rung in rungs if (r["model"], rung) not in seen)
        seen.update((r["model"], rung) for rung in rungs)
    return pd.DataFrame(rows, columns=["trial", "state", "model", "recipe_hash", *ranges, "rung",
                                       "subset_accuracy", "subset_mean_tokens", "accuracy",
                                       "mean_tokens", "problems", "started", "seconds"])


def choose(table: pd.DataFrame, objective: str, floor: float) -> pd.DataFrame:
    """The shortest feasible merge (``shortest``) or the Pareto front (``pareto``) among trials
    evaluated on the whole validation split."""
    from l2s_kit.analysis import pareto_front, shortest

    full = table[table["accuracy"].notna()] if len(table) else table
    if not len(full):
        return full
    if objective == "shortest":
        return shortest(full[full["accuracy"] >= floor])
    return pareto_front(full.drop_duplicates("model"))


def write(r: TuneResult, out: Path, overwrite: bool = False) -> list[Path]:
    """The search's tables in ``out`` (trials.csv, chosen.csv, test.csv), which then holds them
    only (:func:`l2s_kit.io.results_folder`)."""
    from l2s_kit.io import results_folder
    from l2s_kit.study.run import _write_csv

    names = ("trials", r.trials), ("chosen", r.chosen), ("test", r.test)
    with results_folder(out, "tune", overwrite) as folder:
        for name, df in names:
            _write_csv(df, folder / f"{name}.csv")
    return [out / f"{name}.csv" for name, _ in names]
