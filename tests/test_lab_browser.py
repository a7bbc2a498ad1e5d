"""The merge explorer in a real JupyterLab and a real browser (Playwright, system Chromium):
run the notebook, move the α slider, and see the figure change."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "merge_explorer.ipynb"
SCREENSHOT = ROOT / "figures" / "jupyterlab" / "merge_explorer.png"
# a small grid, so that "Run All Cells" reaches the widget quickly; the widget starts at α 0.2
SMALL = {"n_per_level": 10, "grid": [["task_arithmetic", {"alpha": 0.5}]], "alpha": 0.2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path, family):
    """JupyterLab on loopback, with throw-away settings, serving a copy of the merge explorer (so
    nothing it saves touches the committed notebook) beside the built-in family; yields
    (URL, token)."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), SMALL)  # as papermill -p
    nbformat.write(nb, root / "notebooks" / NOTEBOOK.name)
    (root / "data").mkdir()
    (root / "data" / "zoo").symlink_to(family.root.parent.resolve())  # the notebook's ../data/zoo
    settings = tmp_path / "jupyterlab_settings_dir"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "get notified about news?" popup
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, **{k: str(tmp_path / k.lower()) for k in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")}}
    log_path = tmp_path / "lab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", "--allow-root"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _api(url, token, "status") is not None, 90,
              lambda: "JupyterLab did not start:\n" + log_path.read_text()[-3000:],
              alive=proc)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _api(url: str, token: str, path: str):
    """GET /api/<path> as JSON, or None while the server does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/api/{path}?token={token}", timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _wait(ready, seconds: float, message, alive=None) -> None:
    start = time.monotonic()
    while not ready():
        assert alive is None or alive.poll() is None, message()
        assert time.monotonic() - start < seconds, message()
        time.sleep(0.5)


def _kernel_idle(url: str, token: str) -> bool:
    """Whether the notebook's kernel has started and is idle (the server's own record)."""
    sessions = _api(url, token, "sessions") or []
    return any(s["path"].endswith(NOTEBOOK.name) and s.get("kernel")
               and s["kernel"].get("execution_state") == "idle" for s in sessions)


def _figure_state(page) -> tuple[str, str]:
    """(title, the merge's length line) of the plotly figure inside the explorer's Output."""
    fig = page.locator(".widget-output .js-plotly-plot").first
    title = fig.locator(".gtitle").text_content()  # SVG text: no inner_text
    # subplot 2 (mean length); traces: System 1, System 2, the merge → the third line
    lines = fig.locator(".subplot.x2y2 .scatterlayer .trace path.js-line")
    return title, lines.nth(2).get_attribute("d")


@pytest.mark.slow
def test_merge_explorer_slider_redraws_the_figure_in_jupyterlab(lab, family, chromium):
    from playwright.sync_api import expect, sync_playwright

    url, token = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/notebooks/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _wait(lambda: _kernel_idle(url, token), 120,
                  lambda: f"the notebook's kernel did not start: {_api(url, token, 'sessions')}")
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            figure = page.locator(".widget-output .js-plotly-plot .gtitle")
            expect(figure).to_contain_text("alpha=0.2", timeout=120_000)
            before = _figure_state(page)

            handle = page.locator(".widget-slider .noUi-handle").first
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")  # one step each (0.05): α 0.2 → 0.35
            expect(figure).to_contain_text("alpha=0.35", timeout=60_000)
            page.wait_for_timeout(500)
            after = _figure_state(page)
            assert after[0] != before[0]
            assert after[1] != before[1], "the merge's length line did not change with α"
            status = page.locator(".widget-html-content").filter(has_text="accuracy").first
            expect(status).to_contain_text("task_arithmetic alpha=0.35")

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".widget-vbox").first.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
