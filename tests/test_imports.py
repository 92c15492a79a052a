"""The package's imports form no cycle, counting imports inside functions too (a lazy import
that closes a cycle only hides it until the day an import order changes)."""

import ast
import sys
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src" / "blockqnn"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("blockqnn", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(
                    parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                )
            found |= {
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            }
    return {m for m in found if m in modules and m != name}


def import_graph() -> nx.DiGraph:
    modules = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        g.add_edges_from((name, m) for m in _imports(name, path, modules))
    return g


def test_the_package_has_no_import_cycle():
    g = import_graph()
    assert (
        g.number_of_edges() > 50
    )  # the walk sees the imports (a broken walk finds no cycle either)
    assert ("blockqnn.search.loop", "blockqnn.search.store") in g.edges
    cycles = list(nx.simple_cycles(g))
    assert cycles == [], cycles


def test_the_walk_finds_a_cycle_when_there_is_one(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("def f():\n    from blockqnn.b import x\n")
    (tmp_path / "b.py").write_text("from blockqnn.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert list(nx.simple_cycles(import_graph())) != []


def test_every_import_inside_a_function_says_why():
    """Imports live at module top; one left inside a function (start-up time, an optional or
    heavy dependency) carries a comment saying why, on its line or just above its group."""
    import re

    missing = []
    for path in SRC.rglob("*.py"):
        lines = path.read_text().split("\n")
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    j = node.lineno - 2
                    while j >= 0 and (
                        re.match(r"^\s+(from \S+ import|import \S+)", lines[j])
                        or not lines[j].strip()
                    ):
                        j -= 1
                    if "#" not in lines[node.lineno - 1] and not lines[j].strip().startswith("#"):
                        missing.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not missing, missing


def test_the_masters_modules_start_without_torch():
    """The search's master, its executors, loggers and the entry points' glue import neither
    torch nor Lightning (seconds of start-up; pool and Ray workers build their own)."""
    import subprocess

    code = (
        "import sys, blockqnn.search.loop, blockqnn.executors, blockqnn.search.loggers, "
        "blockqnn.cli; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_surrogate_search_is_validated_without_lightning():
    """The surrogate trains nothing: checking a surrogate search's config does not locate the
    Trainer, so it starts without Lightning's import (about 5 s of every instant search);
    a training search still has its trainer section checked (tests/test_refused.py)."""
    import subprocess

    code = (
        "import sys; from tests.conftest import compose_search; "
        "from blockqnn.search.setup import validate; "
        "validate(compose_search('debug=smoke', 'evaluator=surrogate', 'logger=none')); "
        "print('lightning' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC.parents[1]
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
