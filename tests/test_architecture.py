"""The layers import one way (pages -> ui (its views and widgets) -> labbench -> runtime -> source),
the root holds only the entry points and one folder per layer, and no module of the app imports
another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
PACKAGES = ("source", "runtime", "labbench", "ui", "harness")
TOP_LEVEL = ("app", "bench")
# Top to bottom; each layer may import the ones below it, never one above.
LAYERS = ("ui", "labbench", "runtime", "source")


def module_name(path: Path) -> str:
    relative = path.relative_to(PROJECT_DIR).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules() -> dict[str, Path]:
    files = [PROJECT_DIR / f"{name}.py" for name in TOP_LEVEL]
    files += [path for package in PACKAGES for path in (PROJECT_DIR / package).rglob("*.py")]
    files += sorted((PROJECT_DIR / "pages").glob("*.py"))
    return {module_name(path): path for path in files}


def imports_of(name: str, path: Path, modules: dict[str, Path] | None = None) -> set[str]:
    """The modules the file imports, anywhere in it, by full name. `from pkg import module` names
    the module; `from pkg import name` names the package (a parent package runs first on any
    import of its modules, which is no dependency of the importer's)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if modules is not None and submodule in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = app_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(name, path, modules):
            parts = imported.split(".")
            prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
            targets.update(prefix for prefix in prefixes[:1] if prefix in modules)
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def external(name: str) -> set[str]:
    path = app_modules()[name]
    return {imported.split(".")[0] for imported in imports_of(name, path)}


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_and_package_imports():
    graph = import_graph()
    assert "source.database" in graph["source.outbox"]  # from .database import ...
    assert "source" in graph["ui"] and "labbench.faults" in graph["ui"]
    assert "ui.widgets" in graph["ui.learner"]  # from ui import widgets


def test_no_module_of_the_app_imports_itself_back():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_the_layers_below_the_glue_know_nothing_of_streamlit_or_the_layers_above(layer):
    above = {"streamlit", "pages", "app", "tests", "bench", "harness", *LAYERS[: LAYERS.index(layer)]}
    offenders = {
        name: sorted(external(name) & above) for name in app_modules() if name.split(".")[0] == layer
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_root_holds_the_entry_points_and_one_folder_per_layer():
    modules = {path.stem for path in PROJECT_DIR.glob("*.py")}
    assert modules == set(TOP_LEVEL)
    folders = {path.name for path in PROJECT_DIR.iterdir() if path.is_dir() and not path.name.startswith(".")}
    assert set(LAYERS) | {"pages", "alembic", "tests", "harness"} <= folders


# bench.py and the harness drive the app from outside; the harness speaks Streamlit's protocol.
OUTSIDE = {"bench": {"tests", "pages", "streamlit"}, "harness": {"tests", "pages"}}


@pytest.mark.parametrize("tool", sorted(OUTSIDE))
def test_the_bench_command_and_the_harness_import_nothing_from_the_tests_or_the_pages(tool):
    offenders = {name: sorted(external(name) & OUTSIDE[tool]) for name in app_modules() if name.split(".")[0] == tool}
    assert {name: found for name, found in offenders.items() if found} == {}
