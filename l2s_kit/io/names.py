"""The tensor and module names of a Qwen2 / Llama-style decoder checkpoint, in one place: what the
merge engine, the calibration statistics, the synthetic pairs and the runner look for.

>>> layer(3)                     # "model.layers.3": decoder layer 3 (a layer group)
"""

from __future__ import annotations

EMBED = "model.embed_tokens.weight"  # the input embedding
LM_HEAD = "lm_head.weight"  # the output head (absent when tied to the embedding)
# embedding tensors of the decoders the engine knows (Qwen2 / Llama, GPT-2, BLOOM)
EMBED_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")
EMBED_MODULE = "model.embed_tokens"  # the input embedding as a module
NORM = "model.norm"  # the final norm (a module; its weight is NORM + ".weight")
HEAD = "lm_head"  # the output head as a module
LAYERS = "model.layers"  # the decoder layers' prefix


def layer(i: int) -> str:
    """The module name of decoder layer ``i``: ``model.layers.<i>``."""
    return f"{LAYERS}.{i}"

