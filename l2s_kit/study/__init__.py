"""The main job for a pair: merge by a grid of methods, evaluate on validation and test, choose
each method's setting on validation, report on test; the explorer and its widget for interactive
work; sweeps run locally or as Ray tasks.

- ``spec``: what a study is asked to do, one typed object from every face (``StudySpec``)
- ``setup``: what a study runs on: a pair, its problems split into validation and test, prompts,
  settings, extractor, grader (``study_setup``; the built-in family when nothing is given)
- ``run``: the study (``l2s study``, ``make demo``) of any setup
- ``runner``: one merge-then-evaluate job (in memory or on disk), run locally or as Ray tasks
- ``explorer``: merge in memory and evaluate, for notebooks and grids (``Explorer``)
- ``widget``: the explorer's ipywidgets control panel
- ``calibration``: calibration grids of activation-based merges
- ``sweep``: recipes × datasets as merge-then-evaluate jobs, locally or on Ray
"""

from l2s_kit.io.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "report": ("print_result", "report"),
    "result": ("StudyResult",),
    "run": ("run_study", "study_jobs"),
    "setup": ("StudySetup", "build_setup", "family_setup", "pair_setup", "study_setup"),
    "spec": ("SetupError", "StudySpec", "load_grid", "param_grid"),
})
