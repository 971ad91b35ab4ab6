"""The statement recorder: everything a block of code had sent on its database connections, each
entry with its time in the driver and its kind: a data statement, transaction control (BEGIN,
COMMIT, ROLLBACK) or the pool's pre-ping. It listens on the engine from outside; the answer key
knows nothing of it.

Not every command passes SQLAlchemy's cursor events: asyncpg's adapter sends BEGIN itself, inside
the cursor's execute of a transaction's first statement, COMMIT and ROLLBACK go through the dialect,
and the pool pings a connection it hands out again (asyncpg: BEGIN; `;`; ROLLBACK outside a
transaction). Those are recorded from the dialect's and the adapter's own calls, each only when the
driver really sends something, and each with its own time: BEGIN's round trip is not billed to the
statement that follows it."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from source.database import Database

Kind = Literal["data", "transaction", "ping"]


@dataclass
class RecordedStatement:
    sql: str
    seconds: float
    kind: Kind = "data"
    commands: int = 1  # what the driver sent for it: asyncpg's pre-ping outside a transaction is 3


@dataclass
class StatementLog:
    sent: list[RecordedStatement] = field(default_factory=list)  # everything, in the order sent
    # BEGINs noted and not yet sent, by the adapter that sends them (asyncpg sends BEGIN inside the
    # execute of the transaction's first statement, which is timed without it).
    pending_begins: dict[int, RecordedStatement] = field(default_factory=dict, repr=False, compare=False)

    @property
    def statements(self) -> list[RecordedStatement]:
        """The data statements: what the code asked for."""
        return [s for s in self.sent if s.kind == "data"]

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def sql(self) -> list[str]:
        return [s.sql for s in self.statements]

    def of_kind(self, kind: Kind) -> list[RecordedStatement]:
        return [s for s in self.sent if s.kind == kind]

    @property
    def commands(self) -> int:
        """Every command sent: data statements, transaction control and pre-pings."""
        return sum(s.commands for s in self.sent)


# The log of the block being recorded. A context variable, so that concurrent learners on
# one engine each see only their own statements (SQLAlchemy's async bridge carries the
# context into the greenlet that runs the driver calls).
_current_log: contextvars.ContextVar[StatementLog | None] = contextvars.ContextVar(
    "statement_log", default=None
)


def instrument(engine: AsyncEngine) -> None:
    """Listen to the engine's statements and wrap its dialect's commit, rollback and ping (once per
    engine; a second call changes nothing)."""
    sync_engine = engine.sync_engine
    if event.contains(sync_engine, "before_cursor_execute", _before_execute):
        return
    event.listen(sync_engine, "before_cursor_execute", _before_execute)
    event.listen(sync_engine, "after_cursor_execute", _after_execute)
    dialect = sync_engine.dialect
    dialect.do_commit = _transaction_control(dialect.do_commit, "COMMIT")
    dialect.do_rollback = _transaction_control(dialect.do_rollback, "ROLLBACK")
    dialect.do_ping = _ping(dialect.do_ping)
    _time_asyncpg_begin()


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


def _note(sql: str, kind: Kind, commands: int = 1) -> RecordedStatement | None:
    log = _current_log.get()
    if log is None:
        return None
    recorded = RecordedStatement(sql, 0.0, kind, commands)
    log.sent.append(recorded)  # counted when sent, even if it then fails
    return recorded


def _driver_connection(connection):
    """The DBAPI adapter behind a pool's proxy (the dialect is handed either)."""
    return getattr(connection, "dbapi_connection", connection)


def _in_transaction(adapter) -> bool:
    """Whether the driver has a transaction open, so that COMMIT or ROLLBACK is really sent."""
    if hasattr(adapter, "_transaction"):  # asyncpg's adapter: a transaction object once BEGIN was sent
        return adapter._transaction is not None
    return bool(adapter._connection.in_transaction)  # aiosqlite: the sqlite3 connection's own flag


def _timed(recorded: RecordedStatement | None, call):
    started = time.perf_counter()
    try:
        return call()
    finally:
        if recorded is not None:
            recorded.seconds = time.perf_counter() - started


def _transaction_control(method, sql: str):
    def wrapped(connection):
        sent = _current_log.get() is not None and _in_transaction(_driver_connection(connection))
        return _timed(_note(sql, "transaction") if sent else None, lambda: method(connection))

    return wrapped


def _ping(method):
    def wrapped(dbapi_connection):
        adapter = _driver_connection(dbapi_connection)
        sql, commands = "SELECT 1", 1
        if hasattr(adapter, "_transaction"):  # asyncpg: a ping outside a transaction opens one
            outside = adapter._transaction is None and adapter.isolation_level != "autocommit"
            sql, commands = ("BEGIN; ; ROLLBACK", 3) if outside else (";", 1)
        return _timed(_note(sql, "ping", commands), lambda: method(dbapi_connection))

    return wrapped


def _before_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    if _current_log.get() is None:
        return
    if statement.strip().upper() in ("BEGIN", "BEGIN IMMEDIATE"):  # SQLite: sent by the lab's begin hook
        _note(statement, "transaction")
        return
    adapter = getattr(cursor, "_adapt_connection", None)
    begin = None
    if getattr(adapter, "_transaction", "n/a") is None and adapter.isolation_level != "autocommit":
        # asyncpg's adapter sends BEGIN inside this statement's execute: noted first, timed on its own.
        begin = _note("BEGIN", "transaction")
        if begin is not None:
            _current_log.get().pending_begins[id(adapter)] = begin
    recorded = _note(statement, "data")
    if context is not None:
        context._lab_recorded = (recorded, time.perf_counter(), begin)


def _after_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    entry = getattr(context, "_lab_recorded", None)
    if entry is not None:
        recorded, started, begin = entry
        elapsed = time.perf_counter() - started
        recorded.seconds = elapsed - (begin.seconds if begin is not None else 0.0)


def _time_asyncpg_begin() -> None:
    """Time the BEGIN that asyncpg's adapter sends inside a statement's execute (`_start_transaction`)
    into the entry _before_execute noted for it. Installed once per process on the adapter's class:
    outside a recorded block, and for a BEGIN no block noted, it only calls the original."""
    try:
        from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection as adapter_class
    except ImportError:  # no asyncpg here: nothing sends a BEGIN of its own
        return
    original = adapter_class._start_transaction
    if getattr(original, "lab_timed", False):
        return

    async def _start_transaction(self):
        log = _current_log.get()
        begin = log.pending_begins.pop(id(self), None) if log is not None else None
        started = time.perf_counter()
        try:
            return await original(self)
        finally:
            if begin is not None:
                begin.seconds = time.perf_counter() - started

    _start_transaction.lab_timed = True  # type: ignore[attr-defined]
    adapter_class._start_transaction = _start_transaction
