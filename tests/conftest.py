"""Shared fixtures: tiny Qwen2 checkpoint pairs built on the fly (never downloaded), and the
public reference data (real benchmarks and model outputs), which the repository does not ship.

Tests that read the reference data ask for the ``shared_data`` fixture. Where the data is missing
they do not run, and the session ends by saying which did not and how to point them at the data
(``L2S_SHARED_DATA``); under CI (``CI=true``) missing data fails them instead, so CI always runs
them."""

from __future__ import annotations

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning, so the suite shares the
# machine with another job (make demo) instead of stealing its cores (l2s_kit.io.runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from l2s_kit.io import reference_data_dir  # noqa: E402
from l2s_kit.zoo.synthetic import make_pair  # noqa: E402

_NOT_RUN: list[str] = []  # real-data tests skipped for want of the data


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(base, model) folders: tied embeddings, one safetensors file each."""
    return make_pair(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, delta_std=0.02)


@pytest.fixture(scope="session")
def sharded_pair(tmp_path_factory):
    """(base, model): sharded (index + several files), untied lm_head, model with 3 extra rows."""
    return make_pair(tmp_path_factory.mktemp("sharded"), "tiny", seed=1, delta_std=0.02,
                     base_tied=False, model_tied=False, extra_rows=3, shard_size=20_000)


@pytest.fixture(scope="session")
def mixed_tie_pair(tmp_path_factory):
    """(base, model): base ties lm_head to the embedding, model stores its own (as 1.5B pairs do)."""
    return make_pair(tmp_path_factory.mktemp("mixed"), "tiny", seed=2, delta_std=0.02,
                     base_tied=True, model_tied=False, shard_size=30_000)


_MISSING = "reference data not found"


@pytest.fixture(scope="session")
def shared_data():
    """The reference data folder: $L2S_SHARED_DATA, else ../shared/data beside the repository."""
    path = reference_data_dir()
    if not (path / "benchmarks").is_dir():
        why = (f"{_MISSING} at {path}; set L2S_SHARED_DATA to the folder holding benchmarks/, "
               "samples/ and calibration/")
        if _in_ci():
            pytest.fail(f"{why} (CI=true: real-data tests must run)", pytrace=False)
        pytest.skip(why)
    return path


def pytest_runtest_logreport(report):
    if report.skipped and _MISSING in str(report.longrepr):
        _NOT_RUN.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if _NOT_RUN:
        tr = terminalreporter
        tr.section("real-data tests that did not run")
        tr.write_line(f"{len(_NOT_RUN)} tests need the public reference data (real benchmarks, "
                      f"model outputs, s1K) and found none at {reference_data_dir()}:")
        for nodeid in _NOT_RUN:
            tr.write_line(f"  {nodeid}")
        tr.write_line("To run them: L2S_SHARED_DATA=/path/to/data make test (the folder holding "
                      "benchmarks/, samples/ and calibration/; see docs/setup.md).")


@pytest.fixture(scope="session")
def family():
    """The default built-in family, as shipped with the package (never trained by the tests)."""
    from l2s_kit.zoo import build_family

    return build_family(progress=False)


@pytest.fixture(scope="session")
def chromium():
    """The system Chromium (Debian's package, installed by scripts/setup.sh)."""
    import os
    import shutil

    path = os.environ.get("L2S_CHROMIUM") or shutil.which("chromium")
    assert path, ("no Chromium found: run scripts/setup.sh (it installs Debian's chromium) or set "
                  "L2S_CHROMIUM to a Chromium binary")
    return path


@pytest.fixture(scope="session")
def offline_page():
    """``open(browser, path)`` -> (page, outside, errors, dialogs): a page on the file ``path``
    with every request outside the file refused and recorded, its script errors and the
    messages of any dialog (alert, confirm) it opened, each dismissed."""
    def open_page(browser, path):
        page = browser.new_page()
        outside, errors, dialogs = [], [], []

        def route(r):
            if r.request.url.startswith(("file:", "data:")):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(f"{page.url}: {d.message}"), d.dismiss()))
        page.goto(path.as_uri())
        return page, outside, errors, dialogs
    return open_page


@pytest.fixture(scope="session", autouse=True)
def stats_cache(tmp_path_factory):
    """Calibration statistics go to a temporary cache, never into the (shared) family's folders."""
    import os

    old = os.environ.get("L2S_CACHE")
    os.environ["L2S_CACHE"] = str(tmp_path_factory.mktemp("l2s_cache"))
    yield os.environ["L2S_CACHE"]
    if old is None:
        os.environ.pop("L2S_CACHE", None)
    else:
        os.environ["L2S_CACHE"] = old
