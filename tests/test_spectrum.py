"""Task-vector spectra against torch.linalg.svd on matrices of known spectrum, the per-matrix
numbers by hand, the randomized path within its stated error, the verdict rule, tables, CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from l2s_kit.analysis.spectrum import (
    budget,
    load_table,
    low_rank_verdict,
    matrix_summary,
    parse_name,
    save_table,
    spectrum_values,
)
from l2s_kit.cli import main
from l2s_kit.errors import L2SError, OutputExistsError

Q = "model.layers.0.self_attn.q_proj.weight"
DOWN = "model.layers.1.mlp.down_proj.weight"


def spectrum(base, model, rank=0.1, **kw):
    """One row per matrix, as the CLI computes it."""
    return matrix_summary(spectrum_values(base, model, rank=rank, **kw), rank)


def known(m, n, spectrum_, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = len(spectrum_)
    u = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q
    return ((u * torch.tensor(spectrum_, dtype=torch.float64)) @ v.T).float()


@pytest.fixture(scope="module")
def pair():
    """State dicts: base random, the model's task vector of known spectrum per matrix."""
    g = torch.Generator().manual_seed(1)
    base = {Q: torch.randn(40, 30, generator=g), DOWN: torch.randn(30, 50, generator=g),
            "model.layers.0.input_layernorm.weight": torch.ones(30),
            "model.embed_tokens.weight": torch.randn(60, 30, generator=g)}
    deltas = {Q: known(40, 30, [4.0, 2.0, 1.0], seed=2),
              DOWN: known(30, 50, [0.9**j for j in range(30)], seed=3),
              "model.layers.0.input_layernorm.weight": torch.full((30,), 0.5),
              "model.embed_tokens.weight": known(60, 30, [3.0], seed=4)}
    return base, {n: base[n] + deltas[n] for n in base}, deltas


def test_parse_qwen2_and_llama_names():
    assert parse_name(Q) == (0, "q")
    assert parse_name("model.layers.27.mlp.gate_proj.weight") == (27, "gate")
    assert parse_name("model.layers.3.self_attn.o_proj.weight") == (3, "o")
    assert parse_name("model.layers.12.mlp.up_proj.weight") == (12, "up")
    assert parse_name("model.embed_tokens.weight") == (None, "embedding")
    assert parse_name("lm_head.weight") == (None, "head")
    assert parse_name("model.layers.2.post_attention_layernorm.weight") == (2, "other")


def test_budget_rule():
    assert budget(0.1, (3584, 18944)) == 358
    assert budget(0.1, (64, 128)) == 6
    assert budget(0.001, (64, 128)) == 1
    assert budget(64, (30, 40)) == 30 and budget(16, (3584, 3584)) == 16
    for bad in (0, -1, 1.5, "a"):
        with pytest.raises(L2SError, match="rank must be"):
            budget(bad, (10, 10))


def test_values_equal_torch_svd_and_skip_vectors(pair):
    base, model, deltas = pair
    v = spectrum_values(base, model, rank=2, progress=False)
    assert set(v["name"]) == {Q, DOWN, "model.embed_tokens.weight"}  # 2-D only
    for name, g in v.groupby("name"):
        expected = torch.linalg.svdvals(model[name] - base[name]).double().numpy()
        assert np.allclose(g.sort_values("index")["sigma"], expected, atol=1e-5), name
        assert (g["method"] == "exact").all() and (g["error_bound"] == 0).all()
    q = v[v["name"] == Q].sort_values("index")
    assert np.allclose(q["sigma"].iloc[:3], [4, 2, 1], atol=1e-5) and q["sigma"].iloc[3] < 1e-5
    assert q["layer"].iloc[0] == 0 and q["module"].iloc[0] == "q"


def test_summary_by_hand(pair):
    base, model, _ = pair
    t = matrix_summary(spectrum_values(base, model, progress=False), rank=1).set_index("name")
    q = t.loc[Q]  # σ = 4, 2, 1: energy 21
    assert q["energy"] == pytest.approx(21, abs=1e-4)
    assert q["energy_at_rank"] == pytest.approx(16 / 21, abs=1e-5)
    assert q["rank_90"] == 2 and q["rank_99"] == 3  # 16/21 = .76, 20/21 = .95, 21/21
    p = np.array([4, 2, 1]) / 7
    assert q["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), abs=1e-4)
    assert q["stable_rank"] == pytest.approx(21 / 16, abs=1e-5)
    assert q["rank_90_frac"] == pytest.approx(2 / 30)
    e = t.loc["model.embed_tokens.weight"]  # rank one
    assert e["rank_90"] == 1 and e["effective_rank"] == pytest.approx(1, abs=1e-4)
    d = t.loc[DOWN]  # σⱼ = 0.9^j: cumulative energy 1 − 0.81^r (over the 30 values)
    total = sum(0.81**j for j in range(30))
    r90 = next(r for r in range(1, 31) if sum(0.81**j for j in range(r)) / total >= 0.9)
    assert d["rank_90"] == r90 and d["layer"] == 1 and d["module"] == "down"


def test_randomized_path_within_its_stated_error():
    g = torch.Generator().manual_seed(5)
    base = {DOWN: torch.randn(300, 900, generator=g)}
    delta = known(300, 900, [0.95**j for j in range(300)], seed=6)
    v = spectrum_values(base, {DOWN: base[DOWN] + delta}, rank=10, k=30, method="randomized",
                        progress=False)
    assert len(v) == 30 and (v["method"] == "randomized").all()
    true = np.array([0.95**j for j in range(30)])
    err = np.abs(v.sort_values("index")["sigma"].to_numpy() - true)
    assert err.max() <= v["error_bound"].iloc[0] + 1e-5
    assert (err / true).max() < 1e-3
    assert v["energy"].iloc[0] == pytest.approx(sum(0.9025**j for j in range(300)), rel=1e-4)
    t = matrix_summary(v, rank=10).iloc[0]
    assert math.isnan(t["rank_99"])  # beyond the 30 values computed
    assert t["energy_at_rank"] == pytest.approx((1 - 0.9025**10) / (1 - 0.9025**300), abs=1e-4)
    # the exact path agrees on what both compute
    exact = matrix_summary(spectrum_values(base, {DOWN: base[DOWN] + delta}, rank=10,
                                      method="exact", progress=False), rank=10).iloc[0]
    assert exact["rank_90"] == t["rank_90"]
    assert exact["effective_rank"] == pytest.approx(t["effective_rank"], rel=0.02)  # geometric tail: exact here


def test_modules_and_layers_filters(pair):
    base, model, _ = pair
    assert set(spectrum_values(base, model, modules=["q"], progress=False)["name"]) == {Q}
    assert set(spectrum_values(base, model, layers=[1], progress=False)["name"]) == {DOWN}
    with pytest.raises(L2SError, match="unknown module type 'qq'"):
        spectrum_values(base, model, modules=["qq"], progress=False)


def test_verdict_rule():
    t = pd.DataFrame({"name": ["a", "b", "c"], "module": ["q", "q", "up"],
                      "params": [100, 100, 600], "energy_at_rank": [0.95, 0.5, 0.92],
                      "rank_90_frac": [0.05, 0.3, 0.08], "effective_rank_frac": [0.1, 0.4, 0.2],
                      "budget": [10, 10, 10], "budget_rule": "10% of min(m, n)",
                      "rows": [100, 100, 100], "cols": [100, 100, 100]})
    verdict, sentence = low_rank_verdict(t)
    v = verdict.set_index("module")
    assert v.loc["q", "low_rank_share"] == 0.5 and not v.loc["q", "low_rank"]
    assert v.loc["up", "low_rank_share"] == 1.0
    assert v.loc["all", "low_rank_share"] == pytest.approx(700 / 800) and v.loc["all", "low_rank"]
    assert sentence.startswith("Low-rank enough for SVD merging: 88% of the task vector's")
    _, s2 = low_rank_verdict(t, share_target=0.9)
    assert s2.startswith("Not low-rank enough")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip_and_are_not_overwritten(pair, tmp_path, suffix):
    base, model, _ = pair
    t = spectrum(base, model, progress=False)
    path = save_table(t, tmp_path / f"t{suffix}")
    back = load_table(path)
    pd.testing.assert_frame_equal(back, t, check_dtype=False)
    with pytest.raises(OutputExistsError):
        save_table(t, path)
    save_table(t.head(1), path, overwrite=True)
    assert len(load_table(path)) == 1


def test_spectrum_of_a_checkpoint_pair_with_mixed_ties(mixed_tie_pair):
    from l2s_kit.io import Checkpoint

    base, model = mixed_tie_pair
    t = spectrum(base, model, progress=False).set_index("name")
    assert "lm_head.weight" in t.index and t.loc["lm_head.weight", "module"] == "head"
    b, m = Checkpoint(base), Checkpoint(model)
    expected = torch.linalg.svdvals(m.read("lm_head.weight") - b.read("model.embed_tokens.weight"))
    assert t.loc["lm_head.weight", "sigma_1"] == pytest.approx(float(expected[0]), rel=1e-5)


def test_cli_spectrum(tiny_pair, tmp_path, capsys):
    base, model = tiny_pair
    out, values = tmp_path / "t.csv", tmp_path / "v.parquet"
    assert main(["spectrum", str(base), str(model), "--out", str(out), "--values", str(values),
                 "--rank", "4", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    t, v = load_table(out), load_table(values)
    assert (t["budget"] == 4).all() and set(t["name"]) == set(v["name"])
    expected = spectrum(base, model, rank=4, progress=False)
    assert np.allclose(t["energy_at_rank"], expected["energy_at_rank"])
    _, sentence = low_rank_verdict(expected)
    assert sentence in stdout
    assert main(["spectrum", str(base), str(model), "--out", str(out), "--quiet"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["spectrum", str(base), str(model), "--out", str(tmp_path / "x.csv"),
                 "--rank", "lots"]) == 2
    assert "--rank 'lots'" in capsys.readouterr().err


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_cli_spectrum_refuses_one_file_for_both_tables(tiny_pair, tmp_path, capsys, overwrite):
    base, model = tiny_pair
    same = tmp_path / "x.csv"
    assert main(["spectrum", str(base), str(model), "--out", str(same), "--values",
                 str(tmp_path / "." / "x.csv"), "--quiet", *overwrite]) == 2
    assert f"--values {same} is --out" in capsys.readouterr().err
    assert not same.exists()
