"""Training the built-in family: System 1 is pretrained on the task's text, System 2 fine-tuned from it.

Everything is seeded (model init, data stream, dropout-free training) and runs with a fixed number
of CPU threads, so a build repeats bit for bit on the same machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch

from l2s_kit.zoo import task


@dataclass(frozen=True)
class FamilySpec:
    """Sizes and training settings of a family (the defaults are the built-in family)."""

    # model (Qwen2 architecture)
    hidden: int = 128                 # hidden size
    layers: int = 4                   # decoder layers
    heads: int = 4                    # attention heads
    kv_heads: int = 2                 # key/value heads (grouped-query attention, as Qwen2.5)
    mlp: int = 512                    # MLP intermediate size
    # System 1: pretraining on the task's text
    base_steps: int = 1000            # optimizer steps
    base_lr: float = 2e-3             # peak learning rate (warm-up, then cosine to 10%)
    direct_share: float = 0.45        # documents that answer a prompt ("Q … A") directly
    worked_share: float = 0.30        # unprompted worked chains; the rest: reflective text
    prompted_reflective: float = 0.8  # share of reflective documents that follow a "Q" prompt
    recheck_rate: float = 0.03        # share of reflective documents with closing re-checks
    # System 2: fine-tuned from System 1 on reflective answers (loss on the answer only)
    s2_steps: int = 300               # optimizer steps
    s2_lr: float = 5e-4               # peak learning rate
    batch: int = 32                   # sequences per step
    seed: int = 0                     # init, data and split sampling
    threads: int = 2                  # torch CPU threads (results repeat for a fixed count)

    def to_dict(self) -> dict:
        return asdict(self)


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
    p = task.sample(rng, "train", rng.choice(task.LEVELS))
    expr = p.prompt.removeprefix("Q ")
    r = rng.random()
    if r < spec.direct_share:
        head, body = p.prompt, task.direct(p)
    elif r < spec.direct_share + spec.worked_share:
        head, body = expr, task.worked(p)
    else:  # reflective text: a random guess, the re-derivation, rarely re-checks
        guess = p.answer if rng.random() < 0.3 else rng.randrange(10)
        lines = task.rechecks(p)[: rng.randint(1, p.level)] if rng.random() < spec.recheck_rate else []
        head = p.prompt if rng.random() < spec.prompted_reflective else expr
        body = " ".join([f"{guess} . Wait , let me double-check : Let's compute : {p.chain_text} .",
                         *lines, f"So the answer is {p.answer} ."])
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
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, batches, steps: int, lr: float, desc: str, progress: bool = True) -> list[float]:
    """AdamW on the masked next-token loss; ``batches(step)`` gives (ids, loss mask)."""
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        ids, mask = batches(step)
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
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
    model.eval()
    return losses


@torch.inference_mode()
def direct_guesses(model, probs: list[task.Problem]) -> list[int]:
    """The model's direct answer (argmax over the digits after ``A``) for each problem."""
    ids = torch.tensor([task.encode(p.prompt + " ") for p in probs])  # the space is a token
    digits = torch.tensor([task.token_id(str(d)) for d in range(10)])
    logits = model(input_ids=ids).logits[:, -1, digits]
    return logits.argmax(-1).tolist()


def train_system1(spec: FamilySpec, progress: bool = True):
    torch.set_num_threads(spec.threads)
    model = new_model(spec)
    rng = random.Random(f"{spec.seed}|pretrain")
    docs = [[pretrain_document(rng, spec) for _ in range(spec.batch)] for _ in range(spec.base_steps)]
    losses = train(model, lambda s: _batch(docs[s]), spec.base_steps, spec.base_lr,
                   "System 1 (pretraining)", progress)
    return model, losses


def train_system2(system1, spec: FamilySpec, progress: bool = True):
    """Fine-tune a copy of ``system1`` to answer reflectively, starting from its own quick guess."""
    import copy

    torch.set_num_threads(spec.threads)
    rng = random.Random(f"{spec.seed}|system2")
    probs = [task.sample(rng, "train", rng.choice(task.LEVELS))
             for _ in range(spec.s2_steps * spec.batch)]
    guesses = []
    for i in range(0, len(probs), 1024):
        guesses += direct_guesses(system1, probs[i: i + 1024])
    docs = []
    for p, g in zip(probs, guesses):
        docs.append(_document(p.prompt, f"{p.prompt} {task.reflective(p, g)}"))
    model = copy.deepcopy(system1)
    torch.manual_seed(spec.seed + 1)
    losses = train(model, lambda s: _batch(docs[s * spec.batch: (s + 1) * spec.batch]),
                   spec.s2_steps, spec.s2_lr, "System 2 (fine-tuning)", progress)
    return model, losses
