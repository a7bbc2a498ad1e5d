"""What defines a family: its model sizes and training settings (the defaults are the built-in
family), with no torch needed to read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FamilySpec:
    """Sizes and training settings of a family (the defaults are the built-in family)."""

    # model (Qwen2 architecture)
    hidden: int = 128                 # hidden size
    layers: int = 4                   # decoder layers
    heads: int = 4                    # attention heads
    kv_heads: int = 2                 # key/value heads (grouped-query attention, as Qwen2.5)
    mlp: int = 512                    # MLP intermediate size
    # System 1: pretraining on the task's text. Its greedy choices are set by these shares, so
    # that the merge's behaviour follows from the design, not from one training run: prompted,
    # it prefers answering at once by a small margin (log 0.65/0.35), and after a worked chain it
    # prefers concluding to reflecting by a large one (log 0.998/0.002 at level 1, log 0.88/0.12 at
    # level 5, so that merges drop reflection on easy problems first).
    base_steps: int = 4000            # optimizer steps at most (it stops once chains are learnt)
    base_check: int = 250             # steps between checks of the chain skill
    base_skill: float = 0.9           # chain skill that ends the learning rate's plateau
    base_cooldown: int = 250          # steps of learning-rate decay after it
    base_lr: float = 2e-3             # peak learning rate (50 warm-up steps, then flat)
    prompted_share: float = 0.4       # documents that follow a prompt "Q … A"; the rest: bare chains
    direct_share: float = 0.65        # prompted documents answered at once; the rest: worked
    reflect_rate: tuple[float, ...] = (0.002, 0.005, 0.02, 0.06, 0.12)  # worked documents with a
    #                                   double-check, by level (reflection grows with difficulty)
    level_weights: tuple[float, ...] = (1, 2, 3, 4, 5)  # pretraining problems by level
    recheck_rate: float = 0.3         # reflective documents with closing re-checks
    # System 2: fine-tuned from System 1 on reflective answers (loss on the answer only)
    s2_steps: int = 300               # optimizer steps
    s2_lr: float = 1.5e-3             # peak learning rate
    batch: int = 32                   # sequences per step
    seed: int = 0                     # init, data and split sampling
    threads: int = 2                  # torch CPU threads (results repeat for a fixed count)

    def to_dict(self) -> dict:
        return asdict(self)
