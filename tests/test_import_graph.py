"""The modules under components/ form layers: no module imports, even inside a function or
under TYPE_CHECKING, a module that imports it back (directly or through others)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "components"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `name`'s code imports, anywhere in the file: `from P
    import X` imports the module P.X where there is one, else P; `import a.b.c` imports
    a.b.c (Python runs a package's __init__ before its modules, whatever imports them)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[:len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a third-party module, or a name
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_under_components_imports_a_module_that_imports_it_back():
    found = cycles(import_graph())
    assert found == [], "import cycles (untie each: move what both need to a lower module): " \
        + "; ".join(" <-> ".join(cycle) for cycle in found)


def test_the_graph_sees_function_level_relative_and_type_checking_imports(tmp_path,
                                                                         monkeypatch):
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "low.py").write_text(
        "def f():\n    from components.sub.high import g\n    return g\n")
    (package / "sub" / "high.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import low\n"
        "if TYPE_CHECKING:\n    from components import sub\n")
    (package / "sub" / "alone.py").write_text("import components.sub.low\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    graph = import_graph()
    assert graph["components.sub.high"] == {"components.sub.low", "components.sub"}
    assert graph["components.sub.low"] == {"components.sub.high"}
    assert graph["components.sub.alone"] == {"components.sub.low"}
    assert cycles(graph) == [["components.sub.high", "components.sub.low"]]


def test_every_module_imports_tensorflow_through_tf_setup_first():
    """Importing any `tensorflow.*` module runs TensorFlow's __init__, which prints its
    start-up logs unless components.core.tf_setup imported it first, with stderr caught."""
    late = []
    for name, path in _modules().items():
        if name == "components.core.tf_setup":
            continue
        seen_setup = False
        for node in ast.parse(path.read_text(), str(path)).body:  # module level, in order
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            seen_setup |= "components.core.tf_setup" in names
            if any(n == "tensorflow" or n.startswith("tensorflow.") for n in names) \
                    and not seen_setup:
                late.append(f"{name} (line {node.lineno})")
    assert late == [], "import components.core.tf_setup before tensorflow in: " + ", ".join(late)
