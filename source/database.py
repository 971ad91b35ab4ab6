"""2. Database connectivity: one engine per URL, a session factory, pooling, and a
recorder of the SQL statements that a block of code sends."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from . import config

ALEMBIC_INI = config.PROJECT_DIR / "alembic.ini"
# SQLite has one writer at a time; a write waits this long for the lock before "database is
# locked". Python's default, 5 s, was exceeded once by 30 learners writing at once on 2 cores.
SQLITE_BUSY_TIMEOUT_MS = 20_000
# Alembic keeps its migration context in a module global: one migration at a time per process.
_MIGRATION_LOCK = threading.Lock()


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


# For a transaction that reads, then writes: SQLite takes its write lock at BEGIN, so the write
# cannot fail with "database is locked" because another connection committed after the read
# (a stale WAL snapshot is never upgraded). Other backends ignore it. Pass it as the first call:
# `await session.connection(execution_options=WRITE_TRANSACTION)`.
WRITE_TRANSACTION = {"sqlite_begin": "BEGIN IMMEDIATE"}


# The log of the block being recorded. A context variable, so that concurrent learners on
# one engine each see only their own statements (SQLAlchemy's async bridge carries the
# context into the greenlet that runs the driver calls).
_current_log: contextvars.ContextVar[StatementLog | None] = contextvars.ContextVar(
    "statement_log", default=None
)


@dataclass(frozen=True)
class PoolStatus:
    size: int
    checked_out: int
    overflow: int
    checked_in: int
    max_overflow: int

    @property
    def maximum(self) -> int:
        return self.size + self.max_overflow

    @property
    def available(self) -> int:
        return self.maximum - self.checked_out


class Database:
    """An async engine with its session factory. Creating one connects to nothing."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        null_pool: bool = False,
        label: str | None = None,
    ) -> None:
        self.url = make_url(url)
        self._label = label
        self.backend = self.url.get_backend_name()  # "sqlite" or "postgresql"
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database backend: {self.backend}")
        if self.backend == "sqlite" and self.url.database:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        options: dict = {"pool_pre_ping": True}
        if null_pool:
            options["poolclass"] = NullPool
        else:
            options.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        # expire_on_commit=False: objects stay readable after commit. In async code an
        # expired attribute would need a query on access, which cannot happen implicitly.
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self.max_overflow = 0 if null_pool else max_overflow
        if self.backend == "sqlite":
            _configure_sqlite(self.engine)
        event.listen(self.engine.sync_engine, "before_cursor_execute", _before_execute)
        event.listen(self.engine.sync_engine, "after_cursor_execute", _after_execute)

    @property
    def masked_url(self) -> str:
        # Unquoted for reading: a socket folder in the query shows as a path, not %2F...
        return unquote(self.url.render_as_string(hide_password=True))

    @property
    def label(self) -> str:
        """What the UI calls this database: the real backend, never 'in-memory' for a file."""
        if self._label:
            return self._label
        if self.backend == "sqlite":
            return f"SQLite file {self.url.database}"
        socket_dir = self.url.query.get("host") if not self.url.host else None
        if isinstance(socket_dir, str):
            return f"PostgreSQL on the socket in {socket_dir}, database {self.url.database}"
        return f"PostgreSQL {self.url.host}:{self.url.port or 5432}/{self.url.database}"

    @contextmanager
    def record(self) -> Iterator[StatementLog]:
        """Collect the statements sent to this database inside the block (this task only)."""
        log = StatementLog()
        token = _current_log.set(log)
        try:
            yield log
        finally:
            _current_log.reset(token)

    def pool_status(self) -> PoolStatus:
        pool = self.engine.pool
        if isinstance(pool, NullPool):
            return PoolStatus(0, 0, 0, 0, 0)
        return PoolStatus(
            size=pool.size(),
            checked_out=pool.checkedout(),
            overflow=max(pool.overflow(), 0),
            checked_in=pool.checkedin(),
            max_overflow=self.max_overflow,
        )

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def upgrade_to_head(self) -> None:
        """Run the Alembic migrations to head, from inside a running event loop."""
        async with migration_lock(), self.engine.begin() as conn:
            if self.backend == "postgresql":
                # One migrator at a time across processes; released at commit.
                await conn.execute(text("SELECT pg_advisory_xact_lock(2002)"))
            await conn.run_sync(_upgrade, "head")

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def migration_lock():
    while not _MIGRATION_LOCK.acquire(blocking=False):
        await asyncio.sleep(0.01)  # never block the event loop while another migrates
    try:
        yield
    finally:
        _MIGRATION_LOCK.release()


def alembic_config(connection=None):
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(config.PROJECT_DIR / "alembic"))
    if connection is not None:
        # Alembic's connection-sharing recipe: env.py migrates on this connection.
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(sync_connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(sync_connection), revision)


def _current_revision(sync_connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_connection).get_current_revision()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control from the driver so that BEGIN covers DDL too
        # (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


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
