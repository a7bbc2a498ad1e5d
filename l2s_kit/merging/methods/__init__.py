"""The merge methods, one module per family, built from shared primitives.

- ``params``: parameter types several methods share (``alpha``, ``k``, ``p``, ``seed``), each
  with its range and where to search it
- ``sparsify``: trim, DARE drop masks, sign election, disjoint mean (the task-vector primitives)
- ``lowrank``: exact and randomized SVD, truncation, singular value thresholding
- ``task_vector``: Average, Task Arithmetic, TIES, DARE, DARE-TIES
- ``svd``: Twin-Merging, LoRE-Merging
- ``activation``: AIM, Sens-Merging (calibration statistics from :mod:`l2s_kit.merging.calibration`)
- ``layer_adaptive``: ACM, FIM-Merging (per-layer scales of another merge, from mutual information
  or a data-free Fisher)
- ``mergekit_family``: DELLA, Model Breadcrumbs, SCE, SLERP, NuSLERP, Model Stock (mergekit's
  conventions)
- ``mergekit_more``: NearSwap, Multi-SLERP, Karcher mean, Arcee Fusion, RAM, RAM+ (mergekit's
  conventions)

Importing this package registers every family with :mod:`l2s_kit.merging.registry`;
``l2s_kit.merging`` imports it, so any entry point sees every method.
"""

from l2s_kit.merging.methods import (  # noqa: F401  (register)
    activation,
    layer_adaptive,
    mergekit_family,
    mergekit_more,
    svd,
    task_vector,
)
