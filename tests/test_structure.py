"""The shape of the code, checked: no import cycle in the package, every task follows the task
protocol, no module takes another's private names, nothing points outside the repository, and
lines of at most 120 characters."""

import ast
import re

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "bigmodel_jax"
PY_DIRS = ("bigmodel_jax", "tests", "benchmarks", "experiments", "configs")


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules():
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path, modules):
    """The package modules a file imports, from every import statement in it (inside functions too).
    `from a.b import c` is an edge to a.b.c when that is a module, else to a.b."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                target = f"{node.module}.{a.name}"
                out.add(target if target in modules else node.module)
    return {m for m in out if m in modules}


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle():
    modules = package_modules()
    graph = {m: imports_of(p, modules) - {m} for m, p in modules.items()}
    assert graph["bigmodel_jax.errors"] == set()  # the bottom: anything may raise its errors
    assert "bigmodel_jax.train" not in {m for deps in graph.values() for m in deps}  # nothing needs the loop
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_task_defines_the_whole_protocol():
    from bigmodel_jax import tasks
    from bigmodel_jax.tasks.protocol import PROTOCOL

    for name, module in tasks.TASKS.items():
        missing = [k for k in PROTOCOL if not hasattr(module, k)]
        assert not missing, f"task {name} lacks {missing}"
        assert module.FAMILY in ("gpt", "bert", "vit", "t5", "audio") and "loss" in module.METRICS


def python_files():
    for d in PY_DIRS:
        yield from (ROOT / d).rglob("*.py")


def test_no_module_imports_private_names_or_jax_internals():
    offenders = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("jax._src") or any(a.name.startswith("_") for a in node.names
                                                              if node.module.startswith("bigmodel_jax")):
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module} import "
                                     + ", ".join(a.name for a in node.names))
            elif isinstance(node, ast.Import) and any(a.name.startswith("jax._src") for a in node.names):
                offenders.append(f"{path.relative_to(ROOT)}: import jax._src")
    assert not offenders, offenders


@pytest.mark.parametrize("pattern", [r"DESIGN\.md", r"\.\./shared", r"JAX_NOTES"])
def test_nothing_points_outside_the_repository(pattern):
    files = [*python_files(), ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "pyproject.toml",
             ROOT / ".ci" / "run"]
    hits = [str(f.relative_to(ROOT)) for f in files
            if f.is_file() and f.name != "test_structure.py" and re.search(pattern, f.read_text())]
    assert not hits, hits


def test_lines_are_at_most_120_characters():
    long = [f"{p.relative_to(ROOT)}:{i}" for p in python_files()
            for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 120]
    assert not long, long
