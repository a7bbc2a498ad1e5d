"""Nothing in a shared page runs: the gallery, a rendered notebook and the study's report and
HTML figures, made with hostile model, run and folder names, are opened in headless Chromium,
every link is clicked, and no script of those names may run (no dialog opens). No absolute path
of the machine (the home, the temporary folder) appears in them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from l2s_kit.evaluate import FAMILY_SETTINGS, evaluate
from l2s_kit.notebooks import run_notebooks
from l2s_kit.notebooks.gallery import write_gallery
from l2s_kit.study import run_study
from l2s_kit.zoo import task

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HOSTILE_MODEL = '<img src=x onerror=alert(11)>"><script>alert(12)</script>'
HOSTILE_FOLDER = "javascript:alert(3)"


@pytest.fixture(scope="module")
def pages(tmp_path_factory, family):
    """A figures folder holding a study whose folder name is a script URL and a notebook run
    over responses of a model whose name is markup; a home folder under the temporary one."""
    tmp = tmp_path_factory.mktemp("hostile")
    home = tmp / "home"
    home.mkdir()
    old_home = os.environ["HOME"]
    os.environ["HOME"] = str(home)  # so that the home folder is a path the pages could leak
    try:
        figures = home / "figures"
        rows = [r for r in task.rows("test", 2, 0)]
        responses = home / "responses.jsonl"
        evaluate(family.system2, rows, responses, settings=FAMILY_SETTINGS, progress=False,
                 model_name=HOSTILE_MODEL)
        run_study(home / "runs", figures / HOSTILE_FOLDER, n_per_level=2, progress=False,
                  grid=[("task_arithmetic", {"alpha": 0.3})])
        df = run_notebooks(["length_vs_difficulty"], {"responses": str(responses)}, run="r",
                           notebooks=NOTEBOOKS, out=figures, progress=False, png=False)
        assert df.loc[0, "status"] == "ok", df.loc[0, "error"]
        write_gallery(figures)
    finally:
        os.environ["HOME"] = old_home
    return figures, home


@pytest.mark.slow
def test_no_script_runs_in_any_shared_page_and_every_link_is_clicked(pages, chromium,
                                                                     offline_page):
    from playwright.sync_api import sync_playwright

    figures, _ = pages
    index = figures / "index.html"
    html_pages = [index, *figures.rglob("*.html")]
    dialogs, outside, clicked = [], [], 0

    def visit(path):
        page, away, _, seen = offline_page(browser, path)
        page.wait_for_load_state("load")
        outside.extend(away)
        return page, seen
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            for page_path in dict.fromkeys(html_pages):
                page, seen = visit(page_path)
                page.wait_for_timeout(300)  # an onerror handler runs once the image fails
                hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)")
                page.close()
                dialogs += seen
                for i, href in enumerate(hrefs):
                    page, seen = visit(page_path)
                    link = page.locator("a[href]").nth(i)
                    if link.is_visible():
                        link.click(modifiers=[], no_wait_after=True)
                    else:  # inside a folded <details>: follow it as a click would
                        page.evaluate("a => a.click()", link.element_handle())
                    page.wait_for_timeout(200)
                    clicked += 1
                    assert not href.lower().startswith("javascript:"), href
                    page.close()
                    dialogs += seen
        finally:
            browser.close()
    assert dialogs == []
    assert clicked >= 5  # the gallery's links to both runs, their figures and tables
    assert outside == []


def test_the_names_are_shown_as_text(pages):
    figures, _ = pages
    gallery = (figures / "index.html").read_text()
    assert 'href="./javascript%3Aalert%283%29/' in gallery
    nb = json.loads(next(figures.glob("length_vs_difficulty/r/*.ipynb")).read_text())
    metrics = [o for c in nb["cells"] for o in c.get("outputs", [])
               if "application/vnd.l2s.metrics+json" in o.get("data", {})]
    md = "".join(metrics[0]["data"]["text/markdown"])
    assert "&lt;img src=x onerror=alert(11)&gt;" in md and "<img" not in md


def test_no_absolute_path_of_the_machine_in_what_is_shared(pages):
    figures, home = pages
    tmp = str(home.parent)
    shared = [figures / "index.html", *figures.glob(f"{HOSTILE_FOLDER}/table1.md"),
              *figures.glob(f"{HOSTILE_FOLDER}/models.csv"),
              *figures.glob(f"{HOSTILE_FOLDER}/*.html"),
              *figures.glob("length_vs_difficulty/r/*.html"),
              *figures.glob("length_vs_difficulty/r/*.ipynb")]
    assert len(shared) >= 8
    for f in shared:
        text = f.read_text()
        assert str(home) not in text and tmp not in text, f"{f.name} names a path of this machine"
