"""The environment files agree with each other and with what is installed, and a real pip
resolution of environment.yml's pip section stays on the CPU build of PyTorch."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
GPU_PACKAGE = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")


def environment_pip_lines() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip section"
    return [str(line) for line in sections[0]]


def extras(spec: str) -> set[str]:
    m = re.fullmatch(r"\.\[([^\]]*)\]", spec)
    assert m, f"expected .[extras], got {spec!r}"
    return {e.strip() for e in m.group(1).split(",")}


def constraint_pins() -> dict[str, Requirement]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    return pins


def pinned_torch() -> Version:
    req = constraint_pins()["torch"]
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"torch is not pinned with ==: {req}"
    return Version(specs[0].version)


def test_environment_installs_same_extras_as_setup_script():
    lines = environment_pip_lines()
    args = [a for line in lines for a in shlex.split(line)]
    assert "-c" in args and args[args.index("-c") + 1] == "constraints.txt"
    assert "-e" in args
    env_extras = extras(args[args.index("-e") + 1])

    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [shlex.split(line) for line in setup.splitlines()
                if re.search(r"pip install .*-e ", line) and not line.lstrip().startswith("#")]
    assert len(installs) == 1, installs
    cmd = installs[0]
    assert cmd[cmd.index("-c") + 1] == "constraints.txt"
    assert extras(cmd[cmd.index("-e") + 1]) == env_extras
    assert env_extras == {"all", "dev"}


def test_environment_python_meets_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Requirement(f"python{requires}").specifier.contains(py.split("=", 1)[1])


def test_constraints_pin_installed_torch():
    import torch

    assert Version(torch.__version__) == pinned_torch(), (
        f"constraints.txt pins torch=={pinned_torch()}, but torch {torch.__version__} is installed"
    )
    assert pinned_torch().local == "cpu", "the pin must name the CPU build (+cpu)"


def test_pyproject_torch_requirement_admits_pin():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_reqs = [Requirement(d) for d in deps if canonicalize_name(Requirement(d).name) == "torch"]
    assert len(torch_reqs) == 1
    assert torch_reqs[0].specifier.contains(pinned_torch(), prereleases=True), (
        f"pyproject.toml requires {torch_reqs[0]}, which excludes the pinned {pinned_torch()}"
    )


def _pypi_only_env() -> dict[str, str]:
    """The environment of a fresh machine: no pip config files, no local indexes or wheels."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.mark.slow
@pytest.mark.parametrize("pip_config", ["this-machine", "pypi-only"])
def test_pip_resolution_stays_on_cpu_torch(tmp_path, pip_config):
    """``pip install --dry-run`` of environment.yml's pip section (network access to PyPI).

    ``this-machine`` uses the pip configuration in force here (a local wheel folder holds the CPU
    build); ``pypi-only`` ignores pip config files and local wheel folders, as on a machine that
    only reaches PyPI: there the pin must make pip stop, never fall back to a CUDA build.
    """
    report = tmp_path / "report.json"
    pip_args = [a for line in environment_pip_lines() for a in shlex.split(line)]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
           "--report", str(report), *pip_args]
    env = _pypi_only_env() if pip_config == "pypi-only" else None
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - start
    print(f"pip resolution ({pip_config}) took {elapsed:.0f} s")
    if pip_config == "pypi-only" and proc.returncode != 0:
        # PyPI has no +cpu build: the pin must stop pip rather than let a CUDA build in
        assert f"torch=={pinned_torch()}" in proc.stdout + proc.stderr, proc.stderr[-3000:]
        return
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    installs = {canonicalize_name(i["metadata"]["name"]): i
                for i in json.loads(report.read_text())["install"]}
    gpu = sorted(n for n in installs if GPU_PACKAGE.match(n))
    assert gpu == [], (
        f"resolving environment.yml ({pip_config}) would install GPU packages {gpu}; torch from "
        f"{installs['torch']['download_info']['url']}"
    )
    assert Version(installs["torch"]["metadata"]["version"]) == pinned_torch()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in ci_commands

    readme_path = ROOT / "README.md"
    assert readme_path.exists(), "README.md is missing (it should give `make test` as the test command)"
    readme = readme_path.read_text()
    code = "\n".join(re.findall(r"```[^\n]*\n(.*?)```", readme, flags=re.S))
    code += "\n" + "\n".join(re.findall(r"`([^`\n]+)`", readme))
    assert re.search(r"^\s*(\$ )?make test\b", code, flags=re.M), "README gives no `make test`"
    assert re.search(r"^\s*(\$ )?make demo\b", code, flags=re.M), "README gives no `make demo`"

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:", makefile, flags=re.M)
    assert re.search(r"^demo:", makefile, flags=re.M)
