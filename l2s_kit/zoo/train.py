"""Training the built-in family: System 1 is pretrained on the task's text, System 2 fine-tuned from it.

Everything is seeded (model init, data stream, dropout-free training) and runs with a fixed number
of CPU threads, so a build repeats bit for bit on the same machine.
"""

from __future__ import annotations

import math
import random

import torch

from l2s_kit.io import seeds
from l2s_kit.zoo import task
from l2s_kit.zoo.spec import FamilySpec


def new_model(spec: FamilySpec):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(spec.seed)
    pad, eos = task.token_id(task.PAD), task.token_id(task.EOS)
    cfg = Qwen2Config(vocab_size=task.tokenizer().get_vocab_size(), hidden_size=spec.hidden,
                      num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                      num_key_value_heads=spec.kv_heads, intermediate_size=spec.mlp,
                      max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, bos_token_id=eos,
                      eos_token_id=eos, pad_token_id=pad,
                      attn_implementation="eager")
    return Qwen2ForCausalLM(cfg)


def pretrain_document(rng: random.Random, spec: FamilySpec) -> tuple[list[int], int]:
    """One pretraining document and the index where its loss starts (after ``A``)."""
    p = task.sample(rng, "train", rng.choices(task.LEVELS, spec.level_weights)[0])
    prompted = rng.random() < spec.prompted_share
    head = p.prompt if prompted else p.prompt.removeprefix("Q ").removesuffix(" A")
    if prompted and rng.random() < spec.direct_share:
        body = task.direct(p)
    elif rng.random() < spec.reflect_rate[p.level - 1]:
        n = rng.randint(1, p.level) if rng.random() < spec.recheck_rate else 0
        body = task.reflective(p, n)
    else:
        body = task.worked(p)
    return _document(head, f"{head} {body}")


def _document(prefix: str, text: str) -> tuple[list[int], int]:
    """Token ids of ``text`` (which starts with ``prefix``) + EOS, and where the loss starts."""
    ids = task.encode(text) + [task.token_id(task.EOS)]
    start = len(task.encode(prefix))
    assert ids[:start] == task.encode(prefix), (prefix, text)
    return ids, start


def _batch(docs: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(d) for d, _ in docs)
    ids = torch.full((len(docs), n), task.token_id(task.PAD))
    mask = torch.zeros((len(docs), n), dtype=torch.bool)
    for i, (d, start) in enumerate(docs):
        ids[i, : len(d)] = torch.tensor(d)
        mask[i, start: len(d)] = True
    return ids, mask


def _lr(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over 5% of ``steps``, then cosine down to 10% of ``peak``."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, batches, lr_at, steps: int, desc: str, progress: bool = True,
          done=None) -> list[float]:
    """AdamW on the masked next-token loss for up to ``steps`` steps: ``batches(step)`` gives
    (ids, loss mask), ``lr_at(step)`` the learning rate; ``done(step)``, if given, is asked after
    each step and ends the training when true."""
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=lr_at(0), betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        ids, mask = batches(step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(input_ids=ids).logits[:, :-1]
        target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 target.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if done is not None and done(step):
            break
    bar.close()
    model.eval()
    return losses


def by_length(docs: list, size: int, rng: random.Random) -> list[list]:
    """``docs`` in batches of ``size`` documents of similar length, the batches in random order:
    the same documents as random batches, without computing on padding (about half the cost)."""
    order = sorted(range(len(docs)), key=lambda i: (len(docs[i][0]), i))
    batches = [[docs[i] for i in order[j: j + size]] for j in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


@torch.inference_mode()
def chain_skill(model, probs: list[task.Problem]) -> float:
    """The share of ``probs`` whose worked answer the model writes right once started: every token
    after "Q … A Let's compute :" is its greedy choice given the right text before it."""
    was_training = model.training
    model.eval()
    docs = [_document(f"{p.prompt} Let's compute :", f"{p.prompt} {task.worked(p)}") for p in probs]
    ids, mask = _batch(docs)
    pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
    ok = ((pred == ids[:, 1:]) | ~mask[:, 1:]).all(-1)
    model.train(was_training)
    return ok.float().mean().item()


def train_system1(spec: FamilySpec, progress: bool = True):
    """Pretrain System 1 until it works chains, then decay its learning rate.

    The chain skill appears suddenly, after a number of steps that varies with the seed and the
    machine; so the learning rate stays at its peak (after a warm-up) until ``chain_skill`` on
    training problems reaches ``base_skill`` (checked every ``base_check`` steps), then decays
    over ``base_cooldown`` steps. Returns the model, its losses and the steps taken."""
    torch.set_num_threads(spec.threads)
    model = new_model(spec)
    rng = seeds.rng(spec.seed, "pretrain")
    probe_rng = seeds.rng(spec.seed, "probe")
    probe = [task.sample(probe_rng, "train", lv) for lv in task.LEVELS for _ in range(40)]
    chunk: dict[int, list] = {}

    def batches(step):
        c = step // spec.base_check
        if c not in chunk:
            chunk.clear()
            docs = [pretrain_document(rng, spec) for _ in range(spec.batch * spec.base_check)]
            chunk[c] = by_length(docs, spec.batch, rng)
        return _batch(chunk[c][step % spec.base_check])

    warm, stop = 50, [None]

    def lr_at(step):
        if step < warm:
            return spec.base_lr * (step + 1) / warm
        if stop[0] is None or step < stop[0]:
            return spec.base_lr
        t = (step - stop[0]) / spec.base_cooldown
        return spec.base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    def done(step):
        if stop[0] is None and (step + 1) % spec.base_check == 0 and (
                chain_skill(model, probe) >= spec.base_skill
                or step + 1 + spec.base_cooldown >= spec.base_steps):
            stop[0] = step + 1
        return stop[0] is not None and step + 1 >= stop[0] + spec.base_cooldown

    losses = train(model, batches, lr_at, spec.base_steps, "System 1 (pretraining)", progress, done)
    return model, losses


def train_system2(system1, spec: FamilySpec, progress: bool = True):
    """Fine-tune a copy of ``system1`` to answer reflectively (loss on the answer only)."""
    import copy

    torch.set_num_threads(spec.threads)
    rng = seeds.rng(spec.seed, "system2")
    probs = [task.sample(rng, "train", rng.choice(task.LEVELS))
             for _ in range(spec.s2_steps * spec.batch)]
    docs = [_document(p.prompt, f"{p.prompt} {task.reflective(p)}") for p in probs]
    model = copy.deepcopy(system1)
    torch.manual_seed(spec.seed + 1)
    batches = by_length(docs, spec.batch, rng)
    losses = train(model, lambda s: _batch(batches[s]), lambda s: _lr(s, spec.s2_steps, spec.s2_lr),
                   spec.s2_steps, "System 2 (fine-tuning)", progress)
    return model, losses
