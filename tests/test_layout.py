"""The package's shape: stages import only the stages before them, and no import cycle exists,
counting imports inside functions as well as at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "l2s_kit"

# The data flow, top to bottom: a stage may import itself and the stages above it, never below.
STAGES = ["errors", "version", "io", "zoo", "merging", "evaluate", "analysis", "study", "notebooks",
          "cli"]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (module level and inside functions). ``from a
    import b`` is an edge to ``a.b`` when that is a module, else to ``a``; importing ``a.b`` is not
    counted as importing the package ``a`` (Python runs ``a/__init__`` first, but that is the
    package's own business, checked as a module of its own)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_exports"
                  and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
                # a face's table: each of its modules is imported on first use of a name
                targets = [f"{pkg}.{k.value}" for k in node.args[1].keys]
            for t in targets:
                if t.startswith("l2s_kit") and t != mod:
                    while t not in mods:  # "import l2s_kit.x.y" of a name: its module
                        t = t.rpartition(".")[0]
                    if t != mod:
                        graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _stage(mod: str) -> int | None:
    parts = mod.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 else None  # None: the facade l2s_kit


def test_the_graph_sees_imports_inside_functions():
    g = import_graph()
    # cli imports the study only inside its subcommand (a lazy import is still an edge)
    assert "l2s_kit.study.run" in g["l2s_kit.cli"] or "l2s_kit.study" in g["l2s_kit.cli"]
    assert "l2s_kit.merging.registry" in g["l2s_kit.merging.methods.task_vector"]
    # a face's table of names is its imports
    assert {"l2s_kit.io.checkpoint", "l2s_kit.io.files"} <= g["l2s_kit.io"]
    assert "l2s_kit.merging" in g["l2s_kit"]


FACES = sorted(str(p.relative_to(PKG.parent)) for p in PKG.rglob("__init__.py"))


@pytest.mark.parametrize("face", FACES)
def test_package_faces_only_hand_names_on(face):
    """A package's ``__init__`` holds no work: a docstring, imports, and its table of names."""
    tree = ast.parse((PKG.parent / face).read_text())
    work = [getattr(n, "name", type(n).__name__) for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not work, f"{face} defines {work}: move them into a named module of the package"
    assert len((PKG.parent / face).read_text().splitlines()) <= 60


def test_light_work_does_not_load_torch():
    """Reading results, their statistics and drawing figures start without torch or the merge
    methods (each costs seconds at start-up); the command line starts without them too."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import l2s_kit, l2s_kit.analysis, l2s_kit.analysis.plots, l2s_kit.cli\n"
            "from l2s_kit.analysis import read_outputs, summarize, table1\n"
            "from l2s_kit.analysis import sampling, stats, trace\n"
            "from l2s_kit.evaluate import load_rows, load_benchmark\n"
            "from l2s_kit.zoo import FamilySpec, task\n"
            "print(sorted(m for m in ('torch', 'l2s_kit.merging') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # and a name handed on by the top face still loads its module on first use
    code = "import sys, l2s_kit; l2s_kit.merge; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_cycle_detection_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (module level or inside functions): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_top_level_reads_as_the_data_flow():
    top = sorted(p.stem if p.is_file() else p.name for p in PKG.iterdir()
                 if (p.suffix == ".py" and p.stem != "__init__")
                 or (p.is_dir() and (p / "__init__.py").exists()))
    assert top == sorted(STAGES), f"top level of l2s_kit/: {top}"


def test_stages_import_only_the_stages_above_them():
    bad = []
    for mod, deps in import_graph().items():
        s = _stage(mod)
        for d in deps:
            t = _stage(d)
            if s is not None and (t is None or t > s):
                bad.append(f"{mod} -> {d}")
    assert not bad, "imports pointing up the data flow:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("module", ["l2s_kit.merging.registry", "l2s_kit.merging.engine"])
def test_the_registry_and_engine_import_no_method(module):
    deps = import_graph()[module]
    assert not [d for d in deps if d.startswith("l2s_kit.merging.methods")]


def test_notebooks_draw_through_plots():
    """Figures are built in l2s_kit.analysis.plots (one visual style, tested there), not inline."""
    import json

    inline = []
    for nb in sorted((PKG.parent / "notebooks").glob("*.ipynb")):
        for c in json.loads(nb.read_text())["cells"]:
            src = "".join(c["source"])
            code = "\n".join(line.split("#")[0] for line in src.splitlines())
            if c["cell_type"] == "code" and any(s in code for s in ("plotly", "px.", "go.")):
                inline.append(nb.name)
    assert not inline, f"notebooks drawing with plotly directly: {sorted(set(inline))}"


def test_no_function_is_over_60_lines():
    """Long functions split where their own steps are (a helper per step, named for it)."""
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n})")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_decoder_tensor_names_have_one_home():
    """The names of a decoder's embedding, head, norm and layers are written in io/names.py
    only (docstrings aside)."""
    names = ("lm_head", "model.embed_tokens", "model.norm", "model.layers")
    found = []
    for path in PKG.rglob("*.py"):
        if path == PKG / "io" / "names.py":
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr)
                and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docs and any(x in node.value for x in names):
                found.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.value!r}")
    assert not found, found


def test_no_module_defines_a_name_twice():
    """A second ``def`` of a name silently replaces the first for every caller."""
    twice = []
    for path in PKG.rglob("*.py"):
        seen = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name in seen:
                    twice.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name}")
                seen.add(node.name)
    assert not twice, twice
