"""The main job for a pair: merge by a grid of methods, evaluate on validation and test, choose
each method's setting on validation, report on test; the explorer and its widget for interactive
work; sweeps run locally or as Ray tasks.

- ``family``: the study on the built-in family (``l2s study``, ``make demo``)
- ``explorer``: merge in memory and evaluate, for notebooks and grids (``Explorer``, ``param_grid``)
- ``widget``: the explorer's ipywidgets control panel
- ``calibration``: calibration grids of activation-based merges
- ``sweep``: recipes × datasets as merge-then-evaluate jobs, locally or on Ray
"""

from l2s_kit.study.family import GRID, StudyResult, print_result, run_study

__all__ = ["GRID", "StudyResult", "print_result", "run_study"]
