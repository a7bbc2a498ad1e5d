"""Tidy tables from responses: accuracy and length by model / dataset / level, reflection, the
paper's Table 1, frontiers, and the spectrum of task vectors; intervals and paired tests
(:mod:`~l2s_kit.analysis.stats`), avg@n / pass@k / maj@k (:mod:`~l2s_kit.analysis.sampling`) and
where the length goes (:mod:`~l2s_kit.analysis.trace`).

>>> from l2s_kit.analysis import summarize, table1
>>> summarize(df, by=("model", "level"), reference="system2")
"""

from l2s_kit.io.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "outputs": ("AnalysisError", "length_column"),
    "samples": ("read_outputs", "read_samples"),
    "summary": ("SummaryError", "by_level", "format_table1", "full_summary", "level_or_dataset",
                "model_summary", "pareto_front", "shortest", "summarize", "table1"),
})
