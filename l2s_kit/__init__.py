"""l2s_kit: long-to-short LLM reasoning through model merging.

Merge a quick-thinking (System 1) checkpoint with a slow-thinking (System 2) one, then measure and
look inside the result. The most used entry points are re-exported here::

    import l2s_kit
    out = l2s_kit.merge("recipe.yaml", out="merged/")          # streamed, on disk
    sd = l2s_kit.merge_in_memory(recipe)                         # small models, state dict
"""

from l2s_kit.errors import L2SError
from l2s_kit.merging import (
    MergeResult,
    Recipe,
    list_methods,
    load_recipe,
    merge,
    merge_in_memory,
)
from l2s_kit.version import __version__

__all__ = [
    "__version__",
    "L2SError",
    "MergeResult",
    "Recipe",
    "list_methods",
    "load_recipe",
    "merge",
    "merge_in_memory",
]
