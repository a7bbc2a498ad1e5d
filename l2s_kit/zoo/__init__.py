"""The built-in model family: a tiny System 1 / System 2 pair that shows the long-to-short effect.

``build_family()`` trains, on a CPU in a few minutes, two Qwen2-architecture checkpoints (real
tensor names, safetensors files, a Hugging Face tokenizer) on the chained-arithmetic task of
:mod:`l2s_kit.zoo.task`:

- ``system1``: pretrained on the task's text; prompted, it answers at once (and mostly wrongly
  beyond level 1), as a quick-thinking base model does.
- ``system2``: fine-tuned FROM ``system1`` (as DeepSeek-R1-Distill-Qwen-7B from Qwen2.5-Math-7B)
  to give its quick answer, then "Wait, let me double-check:" and the worked chain, then re-checks
  ("Let me verify", "To recap"), then the answer.

The L2S merge is ``system1`` as base and ``system2`` as the model. The default family ships with
the package (``l2s_kit/zoo/shipped/family-<spec hash>/``: both checkpoints and a ``manifest.json``
with the spec and each checkpoint's weights hash), so the demo, the notebooks and the tests run it
without training, and give the same numbers on every machine. ``build_family(root)`` trains a
family from scratch under ``root`` (``data/zoo`` from the command line, or ``$L2S_ZOO``), for
research on the family itself; a build appears complete or not at all.
"""

from l2s_kit.io.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "family": ("DEFAULT", "SHIPPED", "Family", "build_family", "default_root", "export_benchmark",
               "make_think_pair", "save_tokenizer", "shipped_family", "spec_hash"),
    "spec": ("FamilySpec",),
})
