"""Display pieces that several pages draw: user text kept inert, the statements a block sent, a
class's source, the diff from a minimal pattern to its hardening, metric rows, the knowledge checks
and the learner's progress. Nothing here talks to a backend."""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import sys
import textwrap
import tokenize
from collections.abc import Sequence
from typing import Any

import streamlit as st

from labbench.recorder import StatementLog

# Words that Streamlit's markdown turns into something live even when every character is
# backslash-escaped, since these run on the parsed text: GFM's autolink literals (https://…, www.…,
# an email address) and remark-emoji's shortcodes (:smile:). Such a word goes in a code span.
_LIVE_WORD = re.compile(r"://|www\.|@|:[\w+-]+:", re.IGNORECASE)
# Streamlit's frontend rewrites ":material/" to ":material_" in the raw source, code spans
# included, before parsing: that text is escaped outside any code span instead.
_MATERIAL = re.compile(r"(:material/)")


def _code_span(text: str) -> str:
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _inert_word(word: str) -> str:
    parts = []
    for part in _MATERIAL.split(word):
        if part == ":material/":
            parts.append("\\:material\\/")
        elif _LIVE_WORD.search(part):
            parts.append(_code_span(part))
        else:
            parts.append(_escaped(part))
    return "".join(parts)


def _escaped(text: str) -> str:
    """Backslashes before what starts markup, math, HTML or an entity, and before a ':' that
    could open a directive or an icon (":red[", ":material/"; "busy: SQLite" keeps its colon)."""
    return "".join(
        "\\" + ch if ch in "\\`*_[]<>$~#|&" or (ch == ":" and i + 1 < len(text)) else ch
        for i, ch in enumerate(text)
    )


def escape_markdown(text: str) -> str:
    """User text inline in st.markdown, drawn as the characters typed with nothing live: no
    emphasis, links (URLs and emails included), images, code, math, colour or icon directives,
    emoji shortcodes, headings, lists, tables or HTML; and it stays on one line."""
    inert = re.sub(r"\S+", lambda word: _inert_word(word.group()), " ".join(str(text).splitlines()))
    # At the start of a line, "-", "+", "=" and "1." or "1)" make lists, rules and headings.
    inert = re.sub(r"^(\s*)([-+=])", r"\1\\\2", inert)
    return re.sub(r"^(\s*\d+)([.)])", r"\1\\\2", inert)


KIND_LABELS = {"data": "statement", "transaction": "transaction control", "ping": "pool pre-ping"}
_ONCE = "_widgets_drawn_this_run"
_PAGE = "_widgets_page"
FORM_ERRORS = "__errors"  # ui.forms keeps a form's messages under "<form key>__errors"


def start_run(page: str = "") -> None:
    """A page's run begins (ui.page calls this): notes drawn once per run may be drawn again, and on
    opening another page the forms' messages of the last one are dropped (they stay while the learner
    stays on that page)."""
    st.session_state[_ONCE] = set()
    if st.session_state.get(_PAGE) != page:
        st.session_state[_PAGE] = page
        for key in [key for key in st.session_state if str(key).endswith(FORM_ERRORS)]:
            del st.session_state[key]


def once_this_run(name: str) -> bool:
    """True the first time it is asked for `name` in this run of the page."""
    drawn = st.session_state.setdefault(_ONCE, set())
    first = name not in drawn
    drawn.add(name)
    return first


def show_statements(log: StatementLog, *, label: str = "SQL statements sent") -> None:
    """What a block sent, as recorded by `labbench.recorder.record`: the data statements as the
    headline, then everything sent on the connection, transaction control and pings marked. What
    the counts and times include is said once per run of the page, under the first list."""
    total_ms = sum(s.seconds for s in log.sent) * 1000
    extra = log.commands - log.count
    st.markdown(f"**{label}: {log.count}** ({total_ms:.1f} ms in the database driver, everything included)")
    if extra:
        st.caption(f"Sent on the connection as well: {extra} command{'s' if extra != 1 else ''} of transaction "
                   "control and the pool's pre-ping.")
    if once_this_run("statements_note"):
        st.caption(
            "The pool's pre-ping tests a connection as it is handed out (on asyncpg, outside a transaction: "
            "BEGIN; `;`; ROLLBACK, three commands). Each command waits for the server's answer before the next; "
            "on PostgreSQL a statement's first use on a connection takes one more round trip, to prepare it."
        )
    if log.sent:
        with st.expander(f"Show all {log.commands} command{'s' if log.commands != 1 else ''} in the order sent"):
            for number, entry in enumerate(log.sent, start=1):
                what = KIND_LABELS[entry.kind] + (f" ({entry.commands} commands)" if entry.commands > 1 else "")
                st.caption(f"{number}. {what} · {entry.seconds * 1000:.2f} ms")
                st.code(entry.sql.strip(), language="sql")


def code_diff(minimal: str, hardened: str, *, before: str = "minimal", after: str = "hardened",
              context: int = 3) -> str:
    """A unified diff from one source snippet to another (each dedented first): what a hardening
    adds to the minimal pattern, line by line."""
    lines = difflib.unified_diff(
        textwrap.dedent(minimal).strip("\n").splitlines(), textwrap.dedent(hardened).strip("\n").splitlines(),
        fromfile=before, tofile=after, n=context, lineterm="",
    )
    return "\n".join(lines)


def show_diff(minimal: str, hardened: str, *, before: str = "minimal", after: str = "hardened",
              context: int = 3) -> None:
    """Draw code_diff(...) as a diff block (+ added, - removed); says so when they are the same."""
    diff = code_diff(minimal, hardened, before=before, after=after, context=context)
    st.code(diff or f"(no difference between {before} and {after})", language="diff")


@functools.cache  # the class, as loaded: the text does not change while the process runs it
def class_source(cls: type) -> tuple[int, str]:
    """The line number and source of a class, as inspect.getsource gives it but without parsing.

    For a class, Python 3.11 and 3.12's inspect parses the whole module with ast.parse, and
    CPython before 3.11.8 and 3.12.2 builds those AST objects in state shared by all threads
    (python/cpython#106905): learners' scripts run in threads of one process, and under a
    workshop's load one of them failed with "AST constructor recursion depth mismatch".
    """
    lines, _ = inspect.findsource(sys.modules[cls.__module__])
    start = next(i for i, line in enumerate(lines) if re.match(rf"class {cls.__name__}\b", line))
    while start and lines[start - 1].startswith("@"):
        start -= 1
    return start + 1, "".join(inspect.getblock(lines[start:]))


@functools.cache  # the class, as loaded
def attribute_source(cls: type, name: str) -> str:
    """The statement in a class's source that declares `name` (with the comments just above it).
    Read with tokenize, not ast, for the reason class_source gives."""
    _line, source = class_source(cls)
    lines = source.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"\s+{re.escape(name)}\s*[:=]", line)), None)
    if start is None:
        raise LookupError(f"{cls.__name__} declares no {name}")
    statement = iter(lines[start:])
    end = start
    for token in tokenize.generate_tokens(lambda: next(statement, "")):
        if token.type == tokenize.NEWLINE:  # the end of the logical line, past any brackets
            end = start + token.end[0] - 1
            break
    while start and lines[start - 1].strip().startswith("#"):
        start -= 1
    return textwrap.dedent("".join(lines[start:end + 1])).rstrip("\n")


def lines_from(source: str, first: str, last: str) -> str:
    """The lines of `source` from the first one containing `first` to the next one containing `last`
    (both included), dedented: the part of a pattern a diff is about."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if first in line)
    end = next(i for i in range(start, len(lines)) if last in lines[i])
    return textwrap.dedent("\n".join(lines[start:end + 1]))


def code_expander(title: str, code: str, language: str = "python") -> None:
    with st.expander(title):
        st.code(code, language=language)


def metric_row(figures: Sequence[tuple[str, Any]], *, columns: int | None = None) -> None:
    """One row of st.metric, a column each: (label, value) pairs; None shows as "-"."""
    for column, (label, value) in zip(st.columns(columns or len(figures)), figures, strict=False):
        column.metric(label, "-" if value is None else value)


# --- knowledge checks and progress ---------------------------------------------------------

# The key action of each section, named as the sidebar shows it.
PROGRESS = {
    "models": "1. Data Models",
    "pooling": "2. DB Connectivity & Pooling",
    "repository": "3. Repository Pattern & N+1",
    "cache": "4. Caching with Redis",
    "outbox": "5. Eventing (Outbox Pattern)",
    "event_design": "5b. Event Table Design (Create)",
    "migrations": "6. Schema Migrations",
}


def mark_done(section: str) -> None:
    """Record that the learner did the section's key action (kept in session state)."""
    st.session_state[f"done_{section}"] = True


def section_complete(section: str) -> bool:
    return bool(st.session_state.get(f"done_{section}") and st.session_state.get(f"passed_{section}"))


def knowledge_check(section: str, questions) -> None:
    """A short quiz with feedback that explains why. Answers live in session state, so leaving
    the page and coming back keeps them."""
    st.subheader("Check your understanding")
    answers_key = f"answers_{section}"
    saved: dict[int, int] = st.session_state.setdefault(answers_key, {})
    with st.form(f"check_form_{section}"):
        choices = {}
        for number, question in enumerate(questions):
            previous = saved.get(number)
            choices[number] = st.radio(
                question.prompt,  # the objective tag stays in the data, for the instructor page
                range(len(question.options)),
                format_func=lambda i, q=question: q.options[i],
                index=previous,
                key=f"check_{section}_{number}",
            )
        submitted = st.form_submit_button("Check answers")
    if submitted:
        st.session_state[answers_key] = saved = {n: c for n, c in choices.items() if c is not None}
    if not saved:
        return
    correct = 0
    for number, question in enumerate(questions):
        chosen = saved.get(number)
        if chosen is None:
            st.info(f"Question {number + 1}: not answered yet.")
        elif chosen == question.answer:
            correct += 1
            st.success(f"Question {number + 1}: right. {question.why}")
        else:
            st.error(f"Question {number + 1}: not quite. {question.why}")
    st.session_state[f"passed_{section}"] = correct == len(questions)
    st.caption(f"{correct} of {len(questions)} right.")


def progress() -> None:
    st.markdown("**Your progress**")
    lines = []
    for section, label in PROGRESS.items():
        done, passed = st.session_state.get(f"done_{section}"), st.session_state.get(f"passed_{section}")
        mark = "✓" if done and passed else ("◐" if done or passed else "○")
        lines.append(f"{mark} {label}")
    st.caption("  \n".join(lines))
    st.caption("✓ key action done and check passed · ◐ one of the two")
