"""The statement recorder: which SQL statements a block of code sent, each with its time in the
driver. It listens on the engine from outside; the answer key knows nothing of it."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from source.database import Database


@dataclass
class RecordedStatement:
    sql: str
    seconds: float


@dataclass
class StatementLog:
    statements: list[RecordedStatement] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def sql(self) -> list[str]:
        return [s.sql for s in self.statements]


# The log of the block being recorded. A context variable, so that concurrent learners on
# one engine each see only their own statements (SQLAlchemy's async bridge carries the
# context into the greenlet that runs the driver calls).
_current_log: contextvars.ContextVar[StatementLog | None] = contextvars.ContextVar(
    "statement_log", default=None
)


def instrument(engine: AsyncEngine) -> None:
    """Listen to the engine's statements (once per engine; a second call changes nothing)."""
    sync_engine = engine.sync_engine
    if not event.contains(sync_engine, "before_cursor_execute", _before_execute):
        event.listen(sync_engine, "before_cursor_execute", _before_execute)
        event.listen(sync_engine, "after_cursor_execute", _after_execute)


@contextmanager
def record(db: Database) -> Iterator[StatementLog]:
    """Collect the statements sent to `db` inside the block (this task only)."""
    instrument(db.engine)
    log = StatementLog()
    token = _current_log.set(log)
    try:
        yield log
    finally:
        _current_log.reset(token)


def _before_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    log = _current_log.get()
    if log is None or statement.strip().upper() in ("BEGIN", "BEGIN IMMEDIATE"):  # transaction control, not a query
        return
    recorded = RecordedStatement(statement, 0.0)
    log.statements.append(recorded)  # counted when sent, even if it then fails
    if context is not None:
        context._lab_recorded = (recorded, time.perf_counter())


def _after_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    entry = getattr(context, "_lab_recorded", None)
    if entry is not None:
        recorded, started = entry
        recorded.seconds = time.perf_counter() - started
