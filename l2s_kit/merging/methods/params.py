"""Parameter types that several methods share, declared once: the allowed range, where to search
(the explorer's slider, ``l2s tune``'s default interval), what mergekit calls it, and the help
``l2s methods`` prints; and the mergekit options the task-arithmetic family always has."""

from __future__ import annotations

from typing import Annotated

from l2s_kit.merging.registry import MergekitName, Range, Search


def one_minus(x: float) -> float:
    """1 − x, rounded to 12 digits (mergekit's density 0.2 is a trim ratio of 0.8, not 0.7999…)."""
    return round(1.0 - x, 12)


Alpha = Annotated[float, Range(0.0, 10.0), Search(0.0, 1.5, 0.05), MergekitName("lambda"),
                  "scale of the merged task vector (mergekit's lambda)"]
TrimRatio = Annotated[
    float, Range(0.0, 1.0, hi_open=True), Search(0.0, 0.95, 0.05),
    MergekitName("density", one_minus, "density {old} -> k = 1 - density = {new} (trim ratio)"),
    "fraction of each task vector's entries dropped; 0.8 keeps 20%"]
DropRate = Annotated[
    float, Range(0.0, 1.0, hi_open=True), Search(0.0, 0.9, 0.05),
    MergekitName("density", one_minus, "density {old} -> p = 1 - density = {new} (DARE drop rate)"),
    "DARE drop probability"]
Seed = Annotated[int, Range(0, 2**63 - 1), "seed of the method's random draws"]

# mergekit options that these methods always have, and why (see registry.Mergekit)
Normalize = Annotated[bool, "divide the agreeing task vectors by the sum of their weights (TIES' "
                      "disjoint mean); false sums them (mergekit's normalize)"]
NO_NORMALIZE = {"normalize": (False, "scale the weights or alpha instead")}
DARE_RESCALE = {"rescale": (True, "DARE rescales survivors by 1/(1-p)")}
