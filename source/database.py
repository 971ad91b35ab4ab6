"""2. Database connectivity: one engine per URL with its pool, a session factory, and the schema
brought to head through Alembic."""

from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager
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


# For a transaction that reads, then writes: SQLite takes its write lock at BEGIN, so the write
# cannot fail with "database is locked" because another connection committed after the read
# (a stale WAL snapshot is never upgraded). Other backends ignore it. Pass it as the first call:
# `await session.connection(execution_options=WRITE_TRANSACTION)`.
WRITE_TRANSACTION = {"sqlite_begin": "BEGIN IMMEDIATE"}


class Database:
    """An async engine with its session factory. Creating one connects to nothing."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        pool_recycle: int = 1800,
        null_pool: bool = False,
        pre_ping: bool = True,
        label: str | None = None,
        application_name: str | None = None,
    ) -> None:
        self.url = make_url(url)
        self._label = label
        self.backend = self.url.get_backend_name()  # "sqlite" or "postgresql"
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database backend: {self.backend}")
        if self.backend == "sqlite" and self.url.database:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        # pre-ping: test a pooled connection as it is handed out, so that one the server closed
        # meanwhile (a restart, a failover, an idle timeout) is replaced instead of failing the request.
        # On asyncpg that is three round trips (BEGIN, ";", ROLLBACK) per checkout: a loop of short
        # transactions, like the outbox relay, does without it and runs its work once more when a
        # connection turns out closed.
        options: dict = {"pool_pre_ping": pre_ping}
        if null_pool:
            options["poolclass"] = NullPool
        else:
            # The pool opens connections only as requests need them and keeps at most pool_size idle;
            # max_overflow more may be open under load, each closed when it comes back to a full pool.
            # A request that finds none free waits pool_timeout seconds, then fails (bounded, not for
            # ever); a connection older than pool_recycle seconds is replaced, before a server or a
            # proxy that drops idle connections does it for us.
            options.update(
                pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout, pool_recycle=pool_recycle
            )
        # PostgreSQL lists each connection in pg_stat_activity under the name it gave at login
        # (asyncpg sends server_settings in its startup message).
        self.application_name = application_name if self.url.get_driver_name() == "asyncpg" else None
        if self.application_name:
            options["connect_args"] = {"server_settings": {"application_name": self.application_name}}
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        # expire_on_commit=False: objects stay readable after commit. In async code an
        # expired attribute would need a query on access, which cannot happen implicitly.
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self.max_overflow = 0 if null_pool else max_overflow
        if self.backend == "sqlite":
            _configure_sqlite(self.engine)

    @property
    def masked_url(self) -> str:
        # Unquoted for reading: a socket folder in the query shows as a path, not %2F...
        return unquote(self.url.render_as_string(hide_password=True))

    @property
    def asyncpg_dsn(self) -> str:
        """The URL as asyncpg.connect takes it, for a connection outside the engine (LISTEN)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

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
