"""A command run without the optional extra it needs says which extra to install, in one line,
with exit code 2 and no traceback (the extra's module blocked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from l2s_kit.errors import EXTRAS, missing_extra

BLOCKED = """
import sys
sys.modules[{module!r}] = None  # as if the extra were not installed
from l2s_kit.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("module, extra, argv", [
    ("papermill", "notebooks", ["notebooks", "run", "study", "--out", "{tmp}/nb"]),
    ("plotly", "notebooks", ["study", "--out", "{tmp}/s"]),
    ("optuna", "tune", ["tune", "--method", "ties", "--workdir", "{tmp}/w", "--out", "{tmp}/o"]),
])
def test_a_missing_extra_is_one_clear_line(tmp_path, module, extra, argv):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    p = subprocess.run([sys.executable, "-c", BLOCKED.format(module=module, argv=argv)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: l2s {argv[0]}: this needs {module}")
    assert f"pip install 'l2s_kit[{extra}]'" in line


def test_only_modules_of_extras_are_reported_as_missing_extras():
    assert missing_extra(ModuleNotFoundError("x", name="optuna.samplers")).endswith(
        "pip install 'l2s_kit[tune]'")
    assert missing_extra(ModuleNotFoundError("x", name="torch")) is None  # a broken install
    assert missing_extra(ImportError("cannot import name 'x'")) is None
    # every extra of pyproject.toml is in the table
    from pathlib import Path

    import tomllib

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = set(declared["project"]["optional-dependencies"]) - {"all", "dev"}
    assert extras == set(EXTRAS)
