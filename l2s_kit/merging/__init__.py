"""Merging: recipes, the registry of methods, and the streaming engine.

>>> from l2s_kit.merging import merge
>>> merge("recipe.yaml", out="merged/")      # -> Path("merged")

Importing any part of :mod:`l2s_kit.merging` registers every method family (their modules are
in :mod:`l2s_kit.merging.methods`); the other names load on first use.
"""

from l2s_kit.io.lazy import lazy_exports
from l2s_kit.merging import methods  # noqa: F401  (registers every method family)

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "run": ("MERGE_INFO", "MergeResult", "merge", "merge_in_memory", "merge_key",
            "merge_once", "merged_config", "pair_check_notes", "read_merge_info", "recipe_inputs"),
    "engine": ("merge_state_dicts", "plan_merge"),
    "recipe": ("ModelSpec", "Recipe", "load_recipe"),
    "methods.settings": ("GRID", "PAIR_GRID", "PRESETS"),
    "registry": ("get_method", "list_methods", "merge_method", "methods_table"),
})
