"""What an exercise is, what a check reports, and the checks on a learner's code that run
before anything runs (empty, too long, a NUL character, a syntax error, a missing name)."""

from __future__ import annotations

import ast
import difflib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_CODE_BYTES = 64 * 1024  # an answer is 10 to 40 lines; this is about 1500 of them


@dataclass(frozen=True)
class CheckResult:
    """One check of a run. passed: True, False, or None when it could not run here."""

    name: str
    passed: bool | None
    message: str
    figures: dict[str, Any] = field(default_factory=dict)  # what was measured, by name
    evidence: tuple[str, ...] = ()  # e.g. the statements PostgreSQL received, in order
    required: bool = True  # False: a stretch goal, or a check this machine cannot run


@dataclass(frozen=True)
class Exercise:
    id: str
    section: str
    title: str
    folder: Path  # holds stub.py (the starter), key.py (the answer key) and child.py (its ops in the sandbox)
    required_names: tuple[str, ...]  # what the code must define: "name" or "Class.method"
    check_names: tuple[str, ...]  # in the order the checks run
    hints: tuple[str, ...]
    # (run) -> state, before the learner's code is loaded: what must be measured untouched by it
    before_load: Callable[[Any], Awaitable[Any]]
    # (run, state) -> the check results, one at a time
    checks: Callable[[Any, Any], AsyncIterator[CheckResult]]
    uses_redis: bool = False
    child_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def package(self) -> str:
        return self.folder.name

    @property
    def stub(self) -> str:
        return (self.folder / "stub.py").read_text()

    @property
    def answer_key(self) -> str:
        return (self.folder / "key.py").read_text()

    def answer_diff(self, code: str) -> str:
        """The answer key against the learner's code, as a unified diff (theirs -> the key)."""
        return "".join(difflib.unified_diff(code.splitlines(True), self.answer_key.splitlines(True),
                                            "your code", "answer key"))


class InvalidCode(ValueError):
    """The code cannot be run; the message says why, in the learner's words."""


def validate(exercise: Exercise, code: object) -> str:
    """The code if it can run; raises InvalidCode with a message otherwise. Nothing is run."""
    if not isinstance(code, str):
        raise InvalidCode("The code must be text.")
    if not code.strip():
        raise InvalidCode("The editor is empty: write your code first (the starter code is in the editor "
                          "when you reset it).")
    size = len(code.encode("utf-8", "surrogatepass"))
    if size > MAX_CODE_BYTES:
        raise InvalidCode(f"The code is {size / 1024:.0f} KB; the limit is {MAX_CODE_BYTES // 1024} KB (an answer "
                          "is 10 to 40 lines). Nothing was run.")
    if "\x00" in code:
        line = code[: code.index("\x00")].count("\n") + 1
        raise InvalidCode(f"Line {line} holds a NUL character (\\0), which Python source cannot contain: remove "
                          "it (it often comes with a paste from a binary file). Nothing was run.")
    try:
        tree = ast.parse(code, "solution.py")
    except SyntaxError as error:
        text = (error.text or "").strip()
        raise InvalidCode(f"Syntax error on line {error.lineno}: {error.msg}" + (f" ({text[:120]})" if text else "")
                          + ". Nothing was run.") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as error:
        raise InvalidCode(f"Python cannot read this code ({type(error).__name__}: {str(error)[:200]}). "
                          "Nothing was run.") from None
    missing = [name for name in exercise.required_names if not _defines(tree, name)]
    if missing:
        raise InvalidCode("The code must define " + ", ".join(f"`{name}`" for name in missing)
                          + " (see the starter code). Nothing was run.")
    return code


def _defines(tree: ast.Module, name: str) -> bool:
    owner, _, method = name.rpartition(".")
    for node in tree.body:
        if owner and isinstance(node, ast.ClassDef) and node.name == owner:
            return any(isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == method
                       for item in node.body)
        if not owner and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
    return False
