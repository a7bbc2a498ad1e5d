"""Parameter types that several methods share, declared once: the allowed range, where to search
(the explorer's slider, ``l2s tune``'s default interval) and the help ``l2s methods`` prints."""

from __future__ import annotations

from typing import Annotated

from l2s_kit.merging.registry import Range, Search

Alpha = Annotated[float, Range(0.0, 10.0), Search(0.0, 1.5, 0.05),
                  "scale of the merged task vector (mergekit's lambda)"]
TrimRatio = Annotated[float, Range(0.0, 1.0, hi_open=True), Search(0.0, 0.95, 0.05),
                      "fraction of each task vector's entries dropped; 0.8 keeps 20%"]
DropRate = Annotated[float, Range(0.0, 1.0, hi_open=True), Search(0.0, 0.9, 0.05),
                     "DARE drop probability"]
Seed = Annotated[int, Range(0, 2**63 - 1), "seed of the method's random draws"]
