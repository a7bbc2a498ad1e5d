"""One table of choices (:mod:`l2s_kit.io.choices`): the command line offers exactly its names, and
every name is one the code carries out."""

from __future__ import annotations

import pytest

from l2s_kit.io import choices


def _options(command: str) -> dict[str, tuple]:
    from l2s_kit.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return {a.dest: tuple(a.choices) for a in sub._actions if a.choices}


@pytest.mark.parametrize("command, dest, table", [
    ("eval", "grader", "GRADERS"), ("eval", "backend", "BACKENDS"),
    ("study", "grader", "GRADERS"), ("study", "backend", "BACKENDS"),
    ("study", "runner", "RUNNERS"), ("study", "merge_in", "MERGE_IN"),
    ("tune", "objective", "OBJECTIVES"), ("tune", "sampler", "SAMPLERS"),
    ("tune", "grader", "GRADERS"), ("merge", "out_dtype", "DTYPES"),
    ("spectrum", "method", "SVD_ALGORITHMS"),
])
def test_the_command_line_offers_the_table(command, dest, table):
    assert _options(command)[dest] == getattr(choices, table)


def test_every_name_is_carried_out():
    import torch

    from l2s_kit.evaluate.grading import Grader
    from l2s_kit.io.dtypes import DTYPES
    from l2s_kit.merging.methods.lowrank import singular_values
    from l2s_kit.merging.recipe import load_recipe

    assert tuple(DTYPES) == choices.DTYPES
    for name in choices.GRADERS:
        grader = Grader(name)
        assert callable(grader.extractor) and hasattr(grader.open(), "__enter__")
    x = torch.arange(12.0).reshape(4, 3)
    exact = torch.linalg.svdvals(x)
    for name in choices.SVD_ALGORITHMS:
        assert torch.allclose(singular_values(x, method=name).S[:2], exact[:2], atol=1e-3), name
    with pytest.raises(Exception, match="out_dtype"):
        load_recipe({"merge_method": "task_arithmetic", "base_model": "a", "models": ["b"],
                     "out_dtype": "float8"}, check_paths=False)
