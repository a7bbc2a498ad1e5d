"""The built-in family's task: chained arithmetic mod 10, difficulty = number of operations.

A problem is a start digit and 1–5 one-token operations applied left to right, mod 10, written in
five fixed slots (unused slots are ``_``)::

    Q 3 +5 *2 +7 _ _ _ _ A      (level 3: ((3 + 5) * 2 + 7) mod 10 = 3)

Fixed slots matter: every step of a worked chain reads its operation at a fixed distance, which
makes the task learnable by a ~1M-parameter transformer in minutes on a CPU.

Response formats (the family's vocabulary of behaviours):

- **direct** (System 1): ``The answer is 7 .`` — at once: right at level 1, a guess beyond.
- **worked**: ``Let's compute : 3 8 6 3 . So the answer is 3 .`` — the chain of running results.
- **reflective** (System 2): the worked chain, a double-check, one re-check per operation, the
  answer::

      Let's compute : 3 8 6 3 . Wait , let me double-check : 3 . Let me verify : 3 .
      To recap : 3 . Let me verify : 3 . So the answer is 3 .

  The checks restate the worked answer: dropping them is free, as much of a reasoning model's
  double-checking is. Every format ends with "the answer is", which the family's extractor reads.

Splits are decided by a hash of the problem, so train / validation / test never share a problem,
whatever the seeds and sizes.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass

from l2s_kit.io import seeds

LEVELS = (1, 2, 3, 4, 5)
SLOTS = 5
OPS: tuple[str, ...] = tuple(f"+{d}" for d in range(1, 10)) + tuple(f"*{d}" for d in range(2, 10))
EMPTY = "_ _"  # two tokens, as an operation (" +", "5") is
PAD, EOS = "<|endoftext|>", "<|im_end|>"  # as Qwen2.5's chat models
# Qwen2's pre-tokenizer: real Qwen2 checkpoints load with it whatever their tokenizer.json says.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
               r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
DATASET = "chain"
BENCHMARK = "l2s_family"  # the task written out as a benchmark folder (l2s zoo export)
SPLITS = {"test": (0, 20), "validation": (20, 30), "train": (30, 100)}  # hash buckets of 100


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[str, ...]

    @property
    def level(self) -> int:
        return len(self.ops)

    @property
    def chain(self) -> list[int]:
        """Running results after each operation."""
        out, x = [], self.start
        for op in self.ops:
            d = int(op[1:])
            x = (x + d) % 10 if op[0] == "+" else (x * d) % 10
            out.append(x)
        return out

    @property
    def chain_text(self) -> str:
        """The worked chain as written: the start, then each running result."""
        return " ".join(map(str, [self.start, *self.chain]))

    @property
    def answer(self) -> int:
        return self.chain[-1]

    @property
    def key(self) -> str:
        return " ".join([str(self.start), *self.ops])

    @property
    def prompt(self) -> str:
        slots = [*self.ops, *[EMPTY] * (SLOTS - self.level)]
        return " ".join(["Q", str(self.start), *slots, "A"])

    @property
    def split(self) -> str:
        bucket = int.from_bytes(hashlib.sha256(self.key.encode()).digest()[:4], "little") % 100
        return next(s for s, (lo, hi) in SPLITS.items() if lo <= bucket < hi)


# ---- response formats -----------------------------------------------------------------------

def direct(p: Problem) -> str:
    """System 1's answer: at once, right at level 1, a guess beyond."""
    return f"The answer is {p.answer} ."


def worked(p: Problem) -> str:
    """The worked answer: the chain of running results, then the answer."""
    return f"Let's compute : {p.chain_text} . So the answer is {p.answer} ."


def double_check(p: Problem) -> str:
    """The reflection that opens System 2's checks: it restates the worked answer."""
    return f"Wait , let me double-check : {p.answer} ."


def rechecks(p: Problem) -> list[str]:
    """System 2's closing re-checks: one per operation, alternating phrases (restating only)."""
    phrases = ("Let me verify", "To recap")
    return [f"{phrases[i % 2]} : {p.answer} ." for i in range(p.level)]


def reflective(p: Problem, n_rechecks: int | None = None) -> str:
    """System 2's answer: the worked chain, the double-check, ``n_rechecks`` re-checks (one per
    operation by default), the answer."""
    lines = rechecks(p)[: p.level if n_rechecks is None else n_rechecks]
    return " ".join([f"Let's compute : {p.chain_text} .", double_check(p), *lines,
                     f"So the answer is {p.answer} ."])


def candidates(text: str) -> list[tuple[int, str]]:
    """The answers a family response states on its way, as (the character offset where each
    ends, the answer): the last number of every clause that ends with " ." (the worked chain's
    result, each check's restatement, the final answer)."""
    out = []
    for m in re.finditer(r"(\d+) \.(?= |$)", text):
        out.append((m.end(1), m.group(1)))
    return out


# ---- sampling ---------------------------------------------------------------------------------

def random_problem(rng: random.Random, level: int) -> Problem:
    return Problem(rng.randrange(10), tuple(rng.choice(OPS) for _ in range(level)))


def sample(rng: random.Random, split: str, level: int) -> Problem:
    """A random problem of ``level`` from ``split`` (rejection sampling on the hash bucket)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    while True:
        p = random_problem(rng, level)
        if p.split == split:
            return p


def problems(split: str, n_per_level: int, seed: int = 0,
             levels: tuple[int, ...] = LEVELS) -> list[Problem]:
    """Up to ``n_per_level`` distinct problems per level from ``split`` (level 1 has only
    ~170 problems in all, so its evaluation splits are smaller)."""
    rng = seeds.rng(seed, split)
    out = []
    for level in levels:
        if level == 1:  # enumerate: the space is small
            pool = [Problem(s, (op,)) for s in range(10) for op in OPS]
            pool = [p for p in pool if p.split == split]
            rng.shuffle(pool)
            out += pool[:n_per_level]
            continue
        seen: dict[str, Problem] = {}
        tries = 0
        while len(seen) < n_per_level and tries < 100 * n_per_level:
            p = sample(rng, split, level)
            seen.setdefault(p.key, p)
            tries += 1
        out += seen.values()
    return out


def rows(split: str, n_per_level: int, seed: int = 0, levels: tuple[int, ...] = LEVELS) -> list[dict]:
    """Evaluation rows (``id, dataset, level, prompt, gold``) for ``l2s_kit.evaluate``."""
    return [{"id": f"{DATASET}-{split}-{p.key.replace(' ', '')}", "dataset": DATASET,
             "level": p.level, "prompt": p.prompt, "gold": str(p.answer), "split": split}
            for p in problems(split, n_per_level, seed, levels)]


@functools.cache
def tokenizer():
    """The family's tokenizer: byte-level BPE with Qwen2's pre-tokenizer, as real Qwen2.5 models.

    Trained (deterministically) on every response format of the task, so each word, each
    punctuation mark and each digit is one token (digits are split one by one, as in Qwen2.5;
    the space before a digit is a token of its own).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    corpus = []
    for _ in range(400):
        p = random_problem(rng, rng.choice(LEVELS))
        corpus += [p.prompt, direct(p), " " + direct(p), worked(p), reflective(p), " " + reflective(p)]
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=1, show_progress=False,
                                  special_tokens=[PAD, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return tok


def encode(text: str) -> list[int]:
    """Token ids of ``text`` under the family's tokenizer."""
    return tokenizer().encode(text).ids


def decode(ids: list[int]) -> str:
    return tokenizer().decode(ids, skip_special_tokens=True)


def token_id(token: str) -> int:
    return tokenizer().token_to_id(token)
