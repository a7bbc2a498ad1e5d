"""Seeds derived from names, in one place: the same on every machine, whatever order things are
read or batched in (DARE masks per tensor block, sampling per prompt, synthetic weights)."""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def seed_from(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (sha256 of ``"p1|p2|..."``, first 8 bytes, little-endian)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def rng(*parts: object) -> random.Random:
    """Python's ``random.Random`` seeded with the text ``"p1|p2|..."`` (its string seeding hashes
    the text with SHA-512: the same stream on every machine and Python 3 version)."""
    return random.Random("|".join(map(str, parts)))


def generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`seed_from` of ``parts``."""
    import torch

    return torch.Generator(device).manual_seed(seed_from(*parts))
