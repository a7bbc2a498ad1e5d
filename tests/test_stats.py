"""Numbers a reviewer would accept: intervals (coverage by simulation), paired tests (McNemar
against its exact binomial form), pass@k against enumerating every subset, maj@k and avg@n on a
hand-made file, where the length goes on hand-written responses, and the choice's stability
against the study's own rule run on each resample."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from l2s_kit.analysis import format_table1, stats, table1, trace
from l2s_kit.analysis.sampling import majority, parse_k, pass_at_k, sampling_metrics


def _rows(model, correct, tokens, answers=None, samples=1):
    """Responses of ``model``: problem i has ``samples`` rows from correct[i] / tokens[i]."""
    out = []
    for i, (c, t) in enumerate(zip(correct, tokens)):
        cs = c if isinstance(c, (list, tuple)) else [c] * samples
        ts = t if isinstance(t, (list, tuple)) else [t] * len(cs)
        for j, (cj, tj) in enumerate(zip(cs, ts)):
            a = answers[i][j] if answers else str(int(cj))
            out.append({"model": model, "dataset": "d", "id": i, "sample": j, "correct": bool(cj),
                        "n_tokens": float(tj), "answer": a, "gold": "1", "response": f"the answer is {a} ."})
    return out


# ---- pass@k, maj@k, avg@n ---------------------------------------------------------------------

def test_pass_at_k_equals_the_share_of_k_subsets_with_a_correct_sample():
    for n in range(1, 7):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute), (n, c, k)
    with pytest.raises(ValueError, match="k=5 must be between 1 and the number of samples n=4"):
        pass_at_k(4, 1, 5)


def test_majority_vote_skips_missing_answers_and_breaks_ties_by_the_first_given():
    assert majority(["1", "2", "2", None], [False, True, True, False]) is True
    assert majority(["5", "6", "5", "6"], [False, True, False, True]) is False  # tie: "5" first
    assert majority(["6", "5", "5 ", "6"], [True, False, False, True]) is True  # "6" first
    assert majority([" $7$ ", "7", "8"], [True, True, False]) is True  # compared normalized
    assert majority([None, None], [False, False]) is False


def test_sampling_metrics_by_hand_on_a_small_file():
    # problem 0: answers 1 2 2 – (right: 2); problem 1: 5 6 5 6 (right: 6), a tie won by 5
    rows = _rows("m", [[0, 1, 1, 0], [0, 1, 0, 1]], [10, 10],
                 answers=[["1", "2", "2", None], ["5", "6", "5", "6"]])
    m = sampling_metrics(pd.DataFrame(rows), [1, 2, 4]).iloc[0]
    assert (m.problems, m.samples) == (2, 4)
    assert m["avg@n"] == 50.0
    assert m["pass@1"] == 50.0
    assert m["pass@2"] == pytest.approx(100 * (1 - 1 / 6))  # 1 − C(2,2)/C(4,2) on both
    assert m["pass@4"] == 100.0
    assert m["maj@1"] == 0.0                                 # "1" and "5": both wrong
    assert m["maj@2"] == 0.0                                 # ties: "1", "5" given first
    assert m["maj@4"] == 50.0                                # "2" wins, "5" wins the tie
    with pytest.raises(ValueError, match="k=8 is larger than the samples per problem .n=4"):
        sampling_metrics(pd.DataFrame(rows), [8])
    with pytest.raises(ValueError, match="no column 'answer'"):
        sampling_metrics(pd.DataFrame(rows).drop(columns="answer"), [1])


def test_parse_k():
    assert parse_k("4,1, 4") == [1, 4]
    for bad in ("1,x", "0", ""):
        with pytest.raises(ValueError, match="--k"):
            parse_k(bad)


# ---- intervals ----------------------------------------------------------------------------------

def test_wilson_interval_covers_a_known_proportion_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    p, n = 0.3, 50
    hits = [stats.wilson(int(k), n) for k in rng.binomial(n, p, 4000)]
    coverage = np.mean([lo <= 100 * p <= hi for lo, hi in hits])
    assert 0.93 <= coverage <= 0.97
    assert all(math.isnan(v) for v in stats.wilson(0, 0))  # nothing to say about no problems


def test_bootstrap_interval_of_mean_tokens_covers_the_true_mean():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        tokens = rng.exponential(100, 80)
        df = pd.DataFrame(_rows("m", [1] * 80, tokens))
        ci = stats.intervals(df, seed=trial).iloc[0]
        covered += ci.tokens_lo <= 100 <= ci.tokens_hi
    assert 0.88 <= covered / 200 <= 0.99


def test_intervals_say_which_kind_and_keep_a_problems_samples_together():
    greedy = stats.intervals(pd.DataFrame(_rows("m", [1, 1, 0, 1], [5, 6, 7, 8]))).iloc[0]
    assert greedy.accuracy_interval == "wilson"
    assert (greedy.accuracy_lo, greedy.accuracy_hi) == pytest.approx(stats.wilson(3, 4))
    # 4 samples of each of 2 problems: the bootstrap resamples 2 problems, not 8 samples, so its
    # values are the means of whole problems only (0, 50 or 100 with one right, one wrong)
    sampled = pd.DataFrame(_rows("m", [[1, 1, 1, 1], [0, 0, 0, 0]], [5, 5]))
    ci = stats.intervals(sampled).iloc[0]
    assert ci.accuracy_interval == "bootstrap"
    assert (ci.accuracy_lo, ci.accuracy_hi) == (0.0, 100.0)


# ---- paired comparison ------------------------------------------------------------------------

def test_mcnemar_equals_the_exact_binomial_test_on_discordant_pairs():
    from scipy.stats import binomtest

    # 7 problems only the model gets right, 2 only the reference, 11 both, 5 neither
    a = [1] * 7 + [0] * 2 + [1] * 11 + [0] * 5
    b = [0] * 7 + [1] * 2 + [1] * 11 + [0] * 5
    p = stats.mcnemar_p(pd.DataFrame({"correct": a, "correct_ref": b}))
    assert p == pytest.approx(binomtest(2, 9, 0.5).pvalue)
    assert p == pytest.approx(2 * (1 + 9 + 36) / 512)
    assert stats.mcnemar_p(pd.DataFrame({"correct": [1, 0], "correct_ref": [1, 0]})) == 1.0


def test_paired_comparison_on_the_same_problems():
    n = 60
    ref = _rows("system2", [1] * n, [100 + i % 7 for i in range(n)])
    short = _rows("short", [1] * n, [50 + i % 5 for i in range(n)])
    worse = _rows("worse", [1] * 30 + [0] * 30, [100 + i % 7 for i in range(n)])
    p = stats.verdicts(stats.paired(pd.DataFrame(ref + short + worse), "system2")).set_index("model")
    s = p.loc["short"]
    true = (np.mean([50 + i % 5 for i in range(n)]) / np.mean([100 + i % 7 for i in range(n)]) - 1)
    assert s.length_change == pytest.approx(100 * true)
    assert s.length_change_lo < s.length_change < s.length_change_hi < 0 and s.shorter
    assert (s.accuracy_change, s.mcnemar_p, s.accuracy_drop) == (0.0, 1.0, False)
    w = p.loc["worse"]
    assert w.accuracy_change == -50.0 and w.accuracy_change_hi < 0
    assert w.mcnemar_p == pytest.approx(2 * 0.5 ** 30) and w.accuracy_drop
    assert not w.shorter and w.n_paired == n
    with pytest.raises(ValueError, match="reference model 'nope' is not in the responses"):
        stats.paired(pd.DataFrame(ref), "nope")


def test_choice_stability_equals_the_studys_rule_run_on_each_resample():
    from l2s_kit.analysis import model_summary
    from l2s_kit.study.run import choose_on_validation

    rng = np.random.default_rng(3)
    n = 25
    rows = _rows("system2", [1] * n, [40] * n)
    names = ["ta a=0.2", "ta a=0.3", "ta a=0.4"]
    for name, p_ok, tok in zip(names, (0.9, 0.96, 1.0), (20, 22, 30)):
        rows += _rows(name, list(rng.random(n) < p_ok), list(tok + rng.integers(0, 6, n)))
    val = pd.DataFrame(rows)
    cands = pd.DataFrame({"method": ["ta"] * 3, "model": names})
    summary = model_summary(val, reference="system2").merge(cands, on="model")
    chosen = choose_on_validation(summary, 3.0)
    got = stats.choice_stability(val, cands, chosen, "system2", 3.0, resamples=40, seed=7)
    # the same resamples, drawn as the function draws them, through the study's own rule
    draw = np.random.default_rng(7)
    same = 0
    for _ in range(40):
        idx = draw.integers(0, n, n)
        parts = [val[val["id"] == i].assign(id=k) for k, i in enumerate(idx)]
        res = pd.concat(parts, ignore_index=True)
        s = model_summary(res, reference="system2").merge(cands, on="model")
        pick = choose_on_validation(s, 3.0)
        same += bool(len(pick)) and pick["model"].iloc[0] == chosen["model"].iloc[0]
    assert got["stability"].iloc[0] == same / 40
    assert 0 < same < 40  # a case where the choice really moves


# ---- Table 1 with its intervals ------------------------------------------------------------------

def test_table1_shows_half_the_interval_beside_each_number():
    df = pd.DataFrame(_rows("system2", [1, 1, 1, 0], [10, 12, 14, 16])
                      + _rows("m", [1, 0, 1, 0], [5, 6, 7, 8]))
    t = table1(df, reference="system2", uncertainty=True)
    lo, hi = stats.wilson(2, 4)
    assert t.loc[("m", "accuracy ±"), "d"] == pytest.approx((hi - lo) / 2)
    text = format_table1(t)
    assert f"| m | accuracy (%) | 50.0 ±{(hi - lo) / 2:.1f} | 50.0 |" in text
    assert "±" not in text.split("\n")[0]  # no rows of their own
    assert len(text.splitlines()) == 2 + 4


# ---- where the length goes ---------------------------------------------------------------------

def test_where_the_length_goes_in_hand_written_responses():
    think = "<think>so the answer is 4. Wait, check: the answer is 4.</think> The answer is 4."
    n = float(len(think))  # one token a character: positions are exact
    r = trace.response_trace(think, n, "4", "stop")
    assert r["think_opened"] and r["think_closed"] and r["truncated"] is False
    assert r["tokens_in_think"] == think.index("</think>") + len("</think>")
    assert r["tokens_after_think"] == n - r["tokens_in_think"]
    assert r["tokens_to_answer"] == len("<think>so the answer is 4")
    assert r["tokens_after_answer"] == n - len("<think>so the answer is 4")
    # a prompt-opened block cut off by the budget; the right answer never stated
    cut = "so the answer is 5. Wait"
    r = trace.response_trace(cut, 24.0, "4", "length")
    assert r["truncated"] is True and not r["think_opened"]
    assert math.isnan(r["tokens_to_answer"]) and r["tokens_after_answer"] == 0
    r = trace.response_trace("hmm </think> \\boxed{4}", 22.0, "4", None)
    assert r["think_opened"] and r["tokens_after_think"] == 22 - len("hmm </think>")
    assert math.isnan(r["truncated"])


def test_the_share_of_tokens_after_the_answer_by_model():
    from l2s_kit.zoo import task

    p = task.sample(__import__("random").Random(0), "test", 3)
    df = pd.DataFrame([{"model": m, "response": text, "n_tokens": len(text.split()),
                        "gold": str(p.answer), "finish_reason": "stop"}
                       for m, text in (("system2", task.reflective(p)), ("merge", task.worked(p)),
                                       ("system1", task.direct(p)))])
    s = trace.summary(trace.annotate(df, candidates=task.candidates)).set_index("model")
    # System 2 states the answer at the end of its chain, then checks it: most of its tokens
    assert s.loc["system2", "after_answer_share"] > s.loc["merge", "after_answer_share"] > 0
    assert s.loc["system1", "answer_found_rate"] in (0.0, 100.0)
    assert s["truncation_rate"].eq(0).all() and s["think_closure_rate"].isna().all()


def test_think_tokens_by_group():
    a = "<think>abcd</think>ef"  # 21 characters and 21 tokens: 19 up to the end of </think>
    df = pd.DataFrame([{"model": "m", "response": a, "n_tokens": 21.0, "gold": "9",
                        "finish_reason": "stop"},
                       {"model": "m", "response": "<think>abc", "n_tokens": 10.0, "gold": "9",
                        "finish_reason": "length"}])
    s = trace.summary(df).iloc[0]
    assert s.mean_tokens_in_think == (round(21 * 19 / 21) + 10) / 2
    assert s.think_closure_rate == 50.0 and s.truncation_rate == 50.0
    # neither states any answer: not measured (NaN), never 0
    assert math.isnan(s.answer_found_rate) and math.isnan(s.after_answer_share)
