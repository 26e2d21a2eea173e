"""The package's structure, as the maintainers promised it: the Python <-> C protocol is named in
one place (csrc/asyncmongo.h), exported by the core and typed in _core.pyi; the package's imports
form no cycle (except through TYPE_CHECKING imports); no import runs inside a function.
"""

from __future__ import annotations

import ast
import pathlib
import re

from asyncmongo import _core

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "asyncmongo"
HEADER = PACKAGE.parent / "csrc" / "asyncmongo.h"

# Function-level imports kept on purpose (none on a hot path).
LAZY_IMPORTS = {
    # GridFSHandler needs tornado.web, which an asyncio-only user of asyncmongo.tornado's clients
    # need not import.
    ("asyncmongo.tornado", "asyncmongo._tornado_gridfs"),
    # The pytest plugin is loaded by every pytest run where the package is installed: it loads the
    # C core and the server code only when a test uses its fixtures.
    ("asyncmongo.testing.plugin", "asyncmongo.AsyncMongoClient"),
    ("asyncmongo.testing.plugin", "asyncmongo.testing._server"),
}

PROTOCOL = re.compile(r"^(OP|RES|BULK|FLAG|SDAM)_[A-Z_]+$")


def test_protocol_names_are_defined_once_exported_and_typed():
    header = HEADER.read_text()
    defined = set(re.findall(r"\bAMONGO_((?:OP|RES|BULK|FLAG|SDAM)_[A-Z_]+)\b", header))
    internal = {"OP_BARRIER", "OP_SDAM", "OP_COUNT", "RES_COUNT", "FLAG_APM"}
    exported = {n for n in dir(_core) if PROTOCOL.match(n)}
    assert exported == defined - internal
    stub = (PACKAGE / "_core.pyi").read_text()
    typed = set(re.findall(r"^((?:OP|RES|BULK|FLAG|SDAM)_[A-Z_]+): int$", stub, re.M))
    assert typed == exported
    values = {n: getattr(_core, n) for n in exported}
    for prefix in ("OP_", "RES_", "BULK_", "SDAM_"):
        group = [v for n, v in values.items() if n.startswith(prefix)]
        assert len(group) == len(set(group)), prefix
    assert _core.CursorBatch.n_fields == 7
    assert (_core.ServerFacts.n_fields, _core.TopologyFacts.n_fields, _core.SdamEvent.n_fields) == (
        6, 2, 9)


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, name: str):
    """(module-level imports outside TYPE_CHECKING, imports inside functions) of asyncmongo."""
    top, inner = set(), set()

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.rsplit(".", node.level)[0]
                base = f"{pkg}.{base}" if base else pkg
            if base == "asyncmongo":
                return [f"asyncmongo.{a.name}" for a in node.names]
            return [base]
        return []

    def walk(node, in_function, in_type_checking):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            func = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            for t in targets(child):
                if t.startswith("asyncmongo"):
                    (inner if in_function else top).add(t)
            walk(child, func, in_type_checking)

    walk(tree, False, False)
    return top, inner


def _graph():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        modules[name] = _imports(ast.parse(path.read_text()), name)
    return modules


def test_no_import_cycle_and_no_function_level_imports():
    modules = _graph()
    known = set(modules) | {"asyncmongo._core"}
    edges = {m: {t for t in top if t in known and t != m} for m, (top, _) in modules.items()}
    # A package's __init__ imports its submodules; a submodule importing the package itself
    # only touches the already-initialised parent, so those edges are not cycles.
    for m in edges:
        edges[m] = {t for t in edges[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    lazy = {(m, t) for m, (_, inner) in modules.items() for t in inner}
    assert lazy <= LAZY_IMPORTS, sorted(lazy - LAZY_IMPORTS)
