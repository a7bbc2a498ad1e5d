"""Named settings of the methods, in one place: the paper's published presets (``preset:`` in a
recipe, ``l2s methods``) and the merges the study runs (on the built-in family and on a pair).
A method's own module declares what it is; this module says which of its settings are worth a
name.
"""

from __future__ import annotations

__all__ = ["GRID", "PAIR_GRID", "PRESETS"]

# The paper's published settings (its configuration table). ``trim: reference`` reproduces the
# paper's own TIES code; pass trim: topk for the exact-count rule.
PRESETS: dict[str, dict] = {
    **{f"ta-{s}": {"merge_method": "task_arithmetic", "parameters": {"alpha": 0.7}}
       for s in ("1.5b", "7b", "14b", "32b")},
    "ties-1.5b": {"merge_method": "ties", "parameters": {"k": 0.8, "alpha": 1.0, "trim": "reference"}},
    "ties-7b": {"merge_method": "ties", "parameters": {"k": 0.8, "alpha": 1.0, "trim": "reference"}},
    "ties-14b": {"merge_method": "ties", "parameters": {"k": 0.2, "alpha": 0.5, "trim": "reference"}},
    "ties-32b": {"merge_method": "ties", "parameters": {"k": 0.25, "alpha": 0.55, "trim": "reference"}},
    "ties-qwen3-8b": {"merge_method": "ties", "parameters": {"k": 0.7, "alpha": 0.7, "trim": "reference"}},
    "dare-1.5b": {"merge_method": "dare", "parameters": {"p": 0.3}},
    "dare-7b": {"merge_method": "dare", "parameters": {"p": 0.3}},
    "dare-14b": {"merge_method": "dare", "parameters": {"p": 0.4}},
    # AIM-Ties: the paper's ω on its TIES setting, calibrated on 100 s1K samples (question + short)
    **{f"aim-ties-{s}": {"merge_method": "aim", "parameters": {
        "omega": 0.4, "inner": "ties", "k": 0.8, "alpha": 1.0, "trim": "reference",
        "calib_source": "s1k", "calib_parts": "question+short", "calib_samples": 100}}
       for s in ("1.5b", "7b")},
    # Sens-Merging: the paper's α and T. Its System 1 calibration uses long answers, which the
    # shared s1K file lacks: these presets use short answers for both; give calib_source (a file
    # with long answers) and calib_parts_base: question+long to follow the paper.
    **{f"sens-{s}": {"merge_method": "sens_merging", "parameters": {
        "alpha": a, "temperature": t, "calib_source": "s1k", "calib_parts": "question+short",
        "calib_parts_base": "question+short", "calib_samples": 100}}
       for s, a, t in (("1.5b", 0.4, 3.0), ("7b", 0.7, 2.0), ("14b", 0.8, 6.0))},
    # FIM-TIES: FIM-Merging's stated setting (arXiv 2603.21705): keep 20% of each task vector at
    # 1.5B, 40% at 7B, gates at 0.7 α, System 1's Fisher on 8 random sequences of 64 tokens; the
    # map from Fisher scores to coefficients is the kit's (see the fim method)
    **{f"fim-ties-{s}": {"merge_method": "fim", "parameters": {
        "inner": "ties", "k": k, "alpha": 1.0, "gate_scale": 0.7, "fim_samples": 8,
        "fim_tokens": 64}}
       for s, k in (("1.5b", 0.8), ("7b", 0.6))},
}

# The merges of the study, every method of the paper: its settings for the 7B pair (TA α = 0.7,
# TIES k = 0.8 α = 1.0, DARE p = 0.3, AIM-Ties ω = 0.4, Sens-Merging α = 0.7 T = 2), then a
# sweep that reaches the small scales this family needs. AIM and Sens-Merging calibrate on the
# family's own task (100 samples); Twin and LoRE are the SVD-based methods.
GRID: list[tuple[str, dict]] = [
    ("average", {}),
    *[("task_arithmetic", {"alpha": a}) for a in (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.7)],
    *[("ties", {"k": k, "alpha": a}) for k in (0.5, 0.8) for a in (0.3, 0.5, 1.0)],
    *[("dare", {"p": 0.3, "alpha": a}) for a in (0.2, 0.3, 0.5, 1.0)],
    *[("dare_ties", {"p": 0.3, "alpha": a}) for a in (0.3, 0.5, 1.0)],
    *[("aim", {"omega": 0.4, "inner": "ties", "k": 0.8, "alpha": a}) for a in (0.5, 1.0)],
    *[("sens_merging", {"alpha": a, "temperature": 2.0}) for a in (0.2, 0.3, 0.7)],
    ("twin", {}),
    *[("lore", {"alpha": a, "tau": 0.05, "tau_relative": True}) for a in (0.2, 0.3, 0.7)],
]
# For a researcher's pair: the paper's settings for the 7B pair and a few around them (the
# calibrated methods need a calibration source for a real pair: add them with --grid).
PAIR_GRID: list[tuple[str, dict]] = [
    ("average", {}),
    *[("task_arithmetic", {"alpha": a}) for a in (0.5, 0.7, 1.0)],
    *[("ties", {"k": 0.8, "alpha": a}) for a in (0.7, 1.0)],
    *[("dare", {"p": 0.3, "alpha": a}) for a in (0.7, 1.0)],
    ("dare_ties", {"p": 0.3, "alpha": 1.0}),
]
