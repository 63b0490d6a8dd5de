"""The study package imports in one direction (issue 33, item 6).

Read from the sources with ``ast`` (nothing is imported): no module of htr_utils/study imports an
htr_utils module inside a function or class (a function-level import hides a cycle until call time);
the graph of module-level imports between study modules has no cycle; the library (htr_utils/*.py)
never imports the study.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "htr_utils"
STUDY = PACKAGE / "study"
STUDY_MODULES = sorted(p.stem for p in STUDY.glob("*.py") if p.stem != "__init__")

# Modules other work items own whose function-level imports are still to be moved up. Each is a strict
# xfail: the test starts to fail ("XPASS(strict)") the moment its module is clean, so the entry is removed.
PENDING: dict[str, str] = {}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _study_targets(node: ast.AST, package: str) -> set[str]:
    """Study modules that ``node`` (an import in a module of ``package``: "htr_utils" or "htr_utils.study")
    imports: ``from .x import``, ``from . import x``, ``from htr_utils.study.x import``, ``import htr_utils.study.x``,
    ``from .study.x import`` (from the library)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [base] + [f"{base}.{a.name}" for a in node.names]  # `from pkg import module` names modules
    out = set()
    for name in names:
        if name.startswith("htr_utils.study."):
            out.add(name.split(".")[2])
        elif name == "htr_utils.study":
            out.add("__init__")
    return out


def _imports_htr_utils(node: ast.AST) -> bool:
    """Whether ``node`` imports an htr_utils module (every relative import in the package does)."""
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "htr_utils" for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == "htr_utils"
    return False


def _nested_imports(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(enclosing function or class, import node) for every import inside a def or class body."""
    found = []

    def visit(node: ast.AST, owner: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            name = owner
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{owner}.{child.name}" if owner else child.name
            if isinstance(child, (ast.Import, ast.ImportFrom)) and owner is not None:
                found.append((owner, child))
            visit(child, name)

    visit(tree, None)
    return found


def _module_level_imports(tree: ast.Module) -> list[ast.AST]:
    """Imports outside every def and class (in ``if`` / ``try`` blocks at module level too)."""
    out = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append(child)
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    """Study module -> the study modules it imports at module level (itself excluded)."""
    graph = {}
    for m in STUDY_MODULES:
        targets: set[str] = set()
        for node in _module_level_imports(_tree(STUDY / f"{m}.py")):
            targets |= _study_targets(node, "htr_utils.study")
        graph[m] = targets - {m, "__init__"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if not state.get(w):
                found = dfs(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if not state.get(v):
            found = dfs(v)
            if found:
                return found
    return None


# ------------------------------------------------------------------------------------------------ the checks
def test_the_checker_sees_function_level_imports_and_cycles():
    """The helpers can fail: a nested relative import is found, a module-level one is not; a cycle is found."""
    tree = ast.parse("from .a import x\ndef f():\n    from .runs import config_hash\n"
                     "class C:\n    def g(self):\n        import htr_utils.study.grid\n")
    nested = _nested_imports(tree)
    assert [(owner, _study_targets(n, "htr_utils.study")) for owner, n in nested] == [
        ("f", {"runs"}), ("C.g", {"grid"})]
    assert [_study_targets(n, "htr_utils.study") for n in _module_level_imports(tree)] == [{"a"}]
    assert _study_targets(ast.parse("from . import spectra_rules as r").body[0], "htr_utils.study") == {
        "__init__", "spectra_rules"}
    assert _study_targets(ast.parse("from .study.paths import x").body[0], "htr_utils") == {"paths"}
    assert _study_targets(ast.parse("from . import study").body[0], "htr_utils") == {"__init__"}
    assert _study_targets(ast.parse("from ..spectra import x").body[0], "htr_utils.study") == set()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=PENDING[m])) if m in PENDING else m
    for m in STUDY_MODULES + ["__init__"]])
def test_no_function_level_import_of_htr_utils(module):
    """Every import of an htr_utils module (library or study) sits at module level, where a cycle fails at once."""
    nested = [f"{owner}: {ast.unparse(node)}" for owner, node in _nested_imports(_tree(STUDY / f"{module}.py"))
              if _imports_htr_utils(node)]
    assert not nested, f"htr_utils/study/{module}.py imports inside functions: " + "; ".join(nested)


def test_pending_names_existing_modules():
    gone = set(PENDING) - set(STUDY_MODULES)
    assert not gone, f"PENDING names modules that are gone: {sorted(gone)}"


def test_study_import_graph_is_acyclic():
    graph = import_graph()
    assert set(graph) == set(STUDY_MODULES) and sum(map(len, graph.values())) > 0
    cycle = find_cycle(graph)
    if cycle:
        print("import cycle:", " -> ".join(cycle))
    assert cycle is None, "module-level import cycle in htr_utils.study: " + " -> ".join(cycle)


def test_paths_and_hashing_sit_at_the_bottom():
    """Paths, the figure style, files, claims and verdicts import no study module; hashing only TrainConfig's."""
    graph = import_graph()
    for bottom in ("paths", "style", "files", "claims", "verdicts"):
        assert not graph[bottom], f"{bottom} imports {sorted(graph[bottom])}"
    assert graph["hashing"] <= {"training"}, f"hashing imports {sorted(graph['hashing'])}"
    for user in ("profiles", "outputs", "runs", "reproduce", "grid", "spectra_analysis"):
        assert "paths" in graph[user], f"{user} should take its paths from paths.py"


def test_library_never_imports_the_study():
    for path in sorted(PACKAGE.glob("*.py")):
        tree = _tree(path)
        bad = [ast.unparse(n) for n in ast.walk(tree)
               if isinstance(n, (ast.Import, ast.ImportFrom)) and _study_targets(n, "htr_utils")]
        assert not bad, f"htr_utils/{path.name} imports the study: {bad}"
