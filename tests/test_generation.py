"""Generation as fast as the hardware allows: continuous batching (a row that ends leaves the
batch, a waiting prompt takes its place) gives exactly the outputs of static batches, greedy and
sampled; the batch is chosen for the device unless set by hand; an out-of-memory error halves it
instead of failing."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from l2s_kit.evaluate import FAMILY_SETTINGS, GenerationSettings, TransformersBackend
from l2s_kit.evaluate.backends import auto_batch_size, row_bytes
from l2s_kit.zoo import task


@pytest.fixture(scope="module")
def prompts():
    rows = task.rows("test", 12)  # every level: responses from 7 to 68 tokens
    return [r["prompt"] for r in rows]


@pytest.fixture(scope="module")
def backend(family):
    return TransformersBackend(family.system2, progress=False)


def both(backend, prompts, settings):
    out = {}
    for scheduler in ("static", "refill"):
        backend.scheduler = scheduler
        out[scheduler] = backend.generate(prompts, settings)
    backend.scheduler = "refill"
    return out["static"], out["refill"]


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_refill_gives_the_static_batches_greedy_outputs(backend, prompts, batch):
    settings = dataclasses.replace(FAMILY_SETTINGS, batch_size=batch)
    static, refill = both(backend, prompts, settings)
    assert refill == static
    assert len({g[0].n_tokens for g in refill}) == 5  # one length per level: 34 to 68
    assert all(g[0].text.endswith(".") and g[0].finish_reason == "stop" for g in refill)


def test_refill_decodes_in_fewer_steps_than_static_batches(backend, prompts):
    """Rows stopped at lengths drawn from a long-tailed distribution (reasoning responses): a
    static batch of 8 runs until its longest row ends, while with rows refilled the steps come
    down to about the tokens over the batch size."""
    import random

    from l2s_kit.evaluate.refill import RefillDecoder

    rng = random.Random(0)
    stop_at = [min(90, max(2, round(rng.lognormvariate(2.5, 0.8)))) for _ in prompts]
    decoder = RefillDecoder(backend.model, backend.tokenizer, 8,
                            choose=lambda logits, rows: logits.argmax(-1),
                            done=lambda r, ids: len(ids) >= stop_at[r])
    out = decoder.run(prompts, list(range(len(prompts))))
    assert [len(ids) for ids in out] == stop_at
    static_steps = sum(max(stop_at[k:k + 8]) - 1 for k in range(0, len(prompts), 8))
    assert decoder.steps < 0.75 * static_steps
    assert decoder.steps >= sum(n - 1 for n in stop_at) / 8
    # the family as it is: lengths grouped by level, as its prompts sort (little to win there)
    settings = dataclasses.replace(FAMILY_SETTINGS, batch_size=8)
    gens = backend.generate(prompts, settings)
    lengths = [g[0].n_tokens for g in gens]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    static_steps = sum(max(lengths[i] for i in order[k:k + 8]) for k in range(0, len(order), 8))
    assert backend.last_steps <= static_steps


def test_refill_gives_the_same_samples_with_stop_strings(backend, prompts):
    """Each sample's noise comes from its own seeded generator: the same samples whichever rows
    share its batch; a stop string ends a row where static batches end it."""
    settings = GenerationSettings(max_new_tokens=40, temperature=3.0, top_p=0.95, n=3, seed=7,
                                  stop=("double-check",), batch_size=4)
    static, refill = both(backend, prompts[:10], settings)
    assert refill == static
    stopped = [g for gens in refill for g in gens if g.text.endswith("double-check")]
    assert stopped and all(g.finish_reason == "stop" for g in stopped)
    assert len({g.text for gens in refill for g in gens}) > 10  # samples differ


def test_an_out_of_memory_error_halves_the_batch_and_changes_no_output(backend, prompts,
                                                                       monkeypatch):
    """A simulated out-of-memory error whenever more than 3 rows are decoded at once: the batch
    halves (16 → 8 → 4 → 2) with a warning, and the outputs are those of an unlimited batch."""
    settings = dataclasses.replace(FAMILY_SETTINGS, batch_size=16)
    expected = both(backend, prompts, settings)[0]
    forward = backend.model.forward
    seen = []

    def small_memory(*args, **kw):
        rows = (kw.get("input_ids") if "input_ids" in kw else args[0]).shape[0]
        seen.append(rows)
        if rows > 3:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return forward(*args, **kw)

    monkeypatch.setattr(backend.model, "forward", small_memory)
    for scheduler in ("refill", "static"):
        backend.scheduler = scheduler
        seen.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = backend.generate(prompts, settings)
        assert got == expected, scheduler
        assert max(seen) > 3 and any(r <= 2 for r in seen)
        assert any("out of memory" in str(w.message) for w in caught)
    backend.scheduler = "refill"


def test_out_of_memory_with_one_row_is_raised(backend, prompts, monkeypatch):
    def no_memory(*args, **kw):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(backend.model, "forward", no_memory)
    with pytest.raises(torch.OutOfMemoryError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend.generate(prompts[:2], dataclasses.replace(FAMILY_SETTINGS, batch_size=2))


def test_the_batch_is_chosen_from_free_memory_unless_set_by_hand(backend, prompts, monkeypatch):
    cfg = backend.model.config
    kv = cfg.num_key_value_heads
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    # by hand: keys and values of every layer at every token, plus the float32 logits twice
    assert row_bytes(cfg, 4, 100) == 2 * cfg.num_hidden_layers * kv * head_dim * 4 * 100 \
        + 8 * cfg.vocab_size
    import l2s_kit.evaluate.backends as backends

    longest = max(len(backend.tokenizer(p)["input_ids"]) for p in prompts[:10])
    per_row = row_bytes(cfg, 4, longest + 96)
    monkeypatch.setattr(backends, "_free_memory", lambda device: 20 * per_row)
    assert auto_batch_size(backend.model, longest, 96) == int(0.8 * 20)
    monkeypatch.setattr(backends, "_free_memory", lambda device: 10**15)
    assert auto_batch_size(backend.model, longest, 96) == backends.AUTO_CAP["cpu"]
    monkeypatch.setattr(backends, "_free_memory", lambda device: 0)
    assert auto_batch_size(backend.model, longest, 96) == 1
    monkeypatch.setattr(backends, "_free_memory", lambda device: 5 * per_row)
    settings = dataclasses.replace(FAMILY_SETTINGS, batch_size=None)
    backend.generate(prompts[:10], settings)
    assert backend.last_batch_size == 4
    backend.generate(prompts[:10], dataclasses.replace(settings, batch_size=3))
    assert backend.last_batch_size == 3  # by hand


def test_a_model_whose_cache_cannot_be_refilled_is_decoded_in_static_batches(family, prompts,
                                                                             monkeypatch):
    import l2s_kit.evaluate.refill as refill

    b = TransformersBackend(family.system1, progress=False)
    expected = both(b, prompts, FAMILY_SETTINGS)[0]
    monkeypatch.setattr(refill, "supports_refill", lambda cache: False)
    assert b.generate(prompts, FAMILY_SETTINGS) == expected
    assert b.scheduler == "static"


def test_batch_size_none_is_the_default_and_a_bad_one_is_named():
    from l2s_kit.errors import L2SError

    assert GenerationSettings().batch_size is None
    with pytest.raises(L2SError, match="batch_size=0 is invalid"):
        GenerationSettings(batch_size=0)
