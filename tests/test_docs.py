"""The README is a first screen and docs/ holds the reference: every relative link in them leads
to a file that exists, and every ``#anchor`` to a heading of the page it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # '#' in code is no heading
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_slugs_are_githubs():
    assert slug("Reading the numbers") == "reading-the-numbers"
    assert slug("Real benchmarks, prompts and grading") == "real-benchmarks-prompts-and-grading"
    assert slug("Activation-based merging (AIM, Sens-Merging)") == \
        "activation-based-merging-aim-sens-merging"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    bad = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not bad, f"{page.name}: " + "; ".join(bad)


def test_the_readme_is_a_first_screen_linking_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    docs = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = {Path(t.partition("#")[0]).name for t in links(ROOT / "README.md")
              if t.startswith("docs/")}
    assert docs and docs <= linked, f"docs pages the README does not link: {sorted(docs - linked)}"


def test_the_methods_table_is_the_one_the_registry_generates(capsys):
    """docs/methods.md's methods table is `l2s methods --markdown`: a method added, renamed or
    given another parameter or default without regenerating the table fails here."""
    from l2s_kit.cli import main
    from l2s_kit.merging import list_methods, methods_table

    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    committed = text.split("<!-- generated: l2s methods --markdown -->\n")[1].split(
        "<!-- end generated -->")[0]
    assert committed == methods_table(), "regenerate it with: l2s methods --markdown"
    assert main(["methods", "--markdown"]) == 0 and capsys.readouterr().out == committed
    for m in list_methods():  # every method and parameter is in it, by name
        row = next(line for line in committed.splitlines() if line.startswith(f"| `{m.name}`"))
        assert all(f"`{p}`" in row for p in m.params), m.name
    assert "`mergekit`" in next(r for r in committed.splitlines() if r.startswith("| `ties`"))


def test_the_mergekit_parity_tables_are_the_benchmark_s_output():
    """docs/methods.md's parity tables are what benchmarks/mergekit_parity.py --markdown makes of
    the committed results/mergekit_parity.csv (the output of a run against mergekit 0.1.5): a
    table edited by hand, or a new run not carried into the docs, fails here."""
    import importlib.util

    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("parity", root / "benchmarks" / "mergekit_parity.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    text = (root / "docs" / "methods.md").read_text()
    mark = ("<!-- generated: benchmarks/mergekit_parity.py --markdown "
            "benchmarks/results/mergekit_parity.csv -->\n")
    committed = text.split(mark)[1].split("<!-- end generated -->")[0]
    csv = pd.read_csv(root / "benchmarks" / "results" / "mergekit_parity.csv")
    assert committed == parity.markdown(csv), (
        "regenerate it: python benchmarks/mergekit_parity.py --markdown "
        "benchmarks/results/mergekit_parity.csv")
    assert set(csv["method"]) == set(parity.CONFIGS)  # every config of the benchmark was run
