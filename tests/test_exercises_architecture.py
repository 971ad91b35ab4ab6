"""The exercises package sits beside the bench package: it imports labbench, runtime and source,
and nothing of the pages or the glue. What runs inside the sandbox (the driver, each exercise's
child side and what they share, the starters and answer keys) imports only what the sandbox holds:
the standard library, SQLAlchemy, asyncpg, redis (fakeredis in its fallback), its copy of
source.models and of child_backends."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import exercises

PACKAGE = Path(exercises.__file__).resolve().parent
IN_SANDBOX = {"sqlalchemy", "asyncpg", "redis", "fakeredis", "source", "child_backends"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return found


def sandbox_files() -> list[Path]:
    return [PACKAGE / "driver.py", PACKAGE / "launch.py", PACKAGE / "child_backends.py",
            *(path for name in ("child.py", "stub.py", "key.py") for path in PACKAGE.glob(f"*/{name}"))]


def test_the_package_imports_nothing_from_the_pages_or_the_glue():
    above = {"streamlit", "ui", "pages", "app", "harness", "tests", "bench"}
    offenders = {str(path.relative_to(PACKAGE)): sorted({name.split(".")[0] for name in imports(path)} & above)
                 for path in PACKAGE.rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_what_runs_in_the_sandbox_imports_only_what_the_sandbox_holds():
    for path in sandbox_files():
        outside = {name for name in imports(path) if name.split(".")[0] not in sys.stdlib_module_names | IN_SANDBOX}
        assert outside == set(), path
        assert all(name in ("source", "source.models") for name in imports(path) if name.startswith("source")), path


def test_every_exercise_has_its_four_files_and_its_child_side_is_copied_into_the_sandbox():
    from exercises.child_process import support_folder

    copied = {path.name for path in support_folder().iterdir()}
    for exercise in exercises.catalogue():
        assert {p.name for p in exercise.folder.glob("*.py")} >= {"__init__.py", "stub.py", "key.py", "child.py"}
        assert f"{exercise.package}_ops.py" in copied
    assert {"driver.py", "child_backends.py", "source"} <= copied
