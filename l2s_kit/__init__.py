"""l2s_kit: long-to-short LLM reasoning through model merging.

Merge a quick-thinking (System 1) checkpoint with a slow-thinking (System 2) one, then measure and
look inside the result. The most used entry points are handed on here::

    import l2s_kit
    out = l2s_kit.merge("recipe.yaml", out="merged/")          # streamed, on disk
    sd = l2s_kit.merge_in_memory(recipe)                         # small models, state dict

They load on first use (PEP 562), so ``import l2s_kit.analysis`` or ``import l2s_kit.analysis.plots``
does not load torch and the merge methods.
"""

from l2s_kit.errors import L2SError
from l2s_kit.io.lazy import lazy_exports
from l2s_kit.version import __version__

__getattr__, __dir__, _handed = lazy_exports(__name__, {
    "merging": ("MergeResult", "Recipe", "list_methods", "load_recipe", "merge", "merge_in_memory"),
})
__all__ = ["__version__", "L2SError", *_handed]
