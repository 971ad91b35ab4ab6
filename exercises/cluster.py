"""The exercises' own PostgreSQL: a second embedded cluster, apart from the lab's.

The lab's cluster trusts every local connection, so learner code must never reach it. This one:
- requires a password from everyone (`scram-sha-256`), the superuser included, and lets a role
  connect only to the database of its own name (pg_hba `sameuser`);
- listens on no TCP address, only on a Unix socket in a folder of its own (`<folder>/socket`,
  world-traversable, holding nothing but the socket), which the sandbox binds;
- keeps a migrated, seeded template database, so that a run's database is one CREATE DATABASE;
- writes its log as JSON lines (`log/`): each run's role logs every statement it sends, and the
  grader reads them there, outside the child (see serverlog.py);
- is scratch data: fsync is off, and a cluster whose settings are out of date is made afresh.

Each run gets a role and a database of the same name (`exrun_<app pid>_<time>_<random>`), with a
random password, made from the template and dropped after the run. A run left by a process that
died is dropped by the next sweep (at the first use in each process, and before each run).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from runtime.embedded_postgres import EmbeddedPostgres, Unavailable, data_dir

from . import sandbox, seed

ADMIN = "postgres"
LEARNERS = "exercise_learner"  # the group role every run's role belongs to; the template grants to it
RUN_PREFIX = "exrun_"
RUN_NAME = re.compile(r"^exrun_(\d+)_(\d+)_[0-9a-f]{8}$")
STALE_AFTER_SECONDS = 3600  # a run this old is dropped even if its process still runs
RUN_CONNECTION_LIMIT = 40  # connections one run may hold; the cluster allows 100
# Bump when the settings below change: a cluster with other settings is made afresh.
CONFIG_VERSION = "3"
SETTINGS = """
# --- the lab's exercise cluster (exercises/cluster.py) ---
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = on
log_destination = 'jsonlog'
log_directory = 'log'
log_filename = 'exercises-%H.log'
log_rotation_age = 60
log_rotation_size = 0
log_truncate_on_rotation = on
log_parameter_max_length = 0
client_connection_check_interval = '1s'
idle_in_transaction_session_timeout = '30s'
temp_file_limit = '256MB'
# each transaction's commit time: the true commit order of rows a run's code wrote (section 5b's exercise)
track_commit_timestamp = on
"""
HBA = """# the lab's exercise cluster: a password for everyone, each run's role only to its own database
local  all       postgres  scram-sha-256
local  sameuser  all       scram-sha-256
"""


class ExerciseServer(EmbeddedPostgres):
    """The embedded server of runtime/, set up for exercises: a superuser password, pg_hba as
    above, a socket folder of its own, its settings; its server niced below the app's."""

    @property
    def socket_dir(self) -> Path:
        inside = self.folder / "socket"
        if len(str(inside / ".s.PGSQL.5432")) <= 100:
            return inside
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()).resolve() / f"lab2-exercises-{digest}"

    @property
    def password_file(self) -> Path:
        return self.folder / "admin-password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str = "postgres") -> str:
        return admin_url(self.password, self.socket_dir, database)

    def _prepare_for_user(self) -> None:
        super()._prepare_for_user()
        self.socket_dir.chmod(0o755)  # the sandbox's user must reach the socket (and only it is there)

    def _initdb(self, deadline: float) -> float:
        began = time.perf_counter()
        password = secrets.token_urlsafe(24)
        with tempfile.NamedTemporaryFile("w", dir=self.folder, prefix=".pw-", delete=False) as handle:
            handle.write(password + "\n")
        pwfile = Path(handle.name)
        try:
            if self._system_user is not None:
                import pwd

                entry = pwd.getpwnam(self._system_user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            result = self._run(["initdb", "-D", str(self.pgdata), "--auth=scram-sha-256", f"--pwfile={pwfile}",
                                "--encoding=UTF8", "--locale=C", "-U", ADMIN],
                               timeout=max(deadline - time.monotonic(), 5))
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise Unavailable(f"initdb failed for the exercise cluster: {result.stderr.strip()[-300:]}")
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(SETTINGS)
        (self.pgdata / "pg_hba.conf").write_text(HBA)
        (self.folder / "config-version").write_text(CONFIG_VERSION)
        return time.perf_counter() - began

    def start(self) -> None:
        """Start it (or join it), making it afresh when its settings are out of date, or when it
        does not start (with fsync off, a machine that crashed can leave it unreadable)."""
        version = self.folder / "config-version"
        if self.pgdata.exists() and (not version.exists() or version.read_text().strip() != CONFIG_VERSION):
            self._remove()
        try:
            started = self.ensure_running()
        except Unavailable:
            if not (self.pgdata / "PG_VERSION").exists():
                raise
            self._remove()
            started = self.ensure_running()
        if not started.reused:
            try:
                import psutil

                psutil.Process(started.postmaster_pid).nice(5)  # its backends, forked later, inherit it
            except Exception:  # noqa: BLE001 - a priority is a courtesy, not a requirement
                pass


    def _remove(self) -> None:
        if self._running_postmaster() is not None:
            self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], timeout=60)
        shutil.rmtree(self.pgdata, ignore_errors=True)


def admin_url(password: str, socket_dir: Path, database: str = "postgres") -> str:
    return URL.create("postgresql+asyncpg", username=ADMIN, password=password, database=database,
                      query={"host": str(socket_dir)}).render_as_string(hide_password=False)


@dataclass(frozen=True)
class RunDatabase:
    """One run's database and role (same name), and its password."""

    name: str
    password: str

    def url(self, socket_dir: Path | str) -> str:
        return URL.create("postgresql+asyncpg", username=self.name, password=self.password, database=self.name,
                          query={"host": str(socket_dir)}).render_as_string(hide_password=False)


def _engine(url: str) -> AsyncEngine:
    # The admin's statements are not logged (log_statement stays 'none' for it): a role's
    # password never reaches the log.
    return create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


class ExerciseCluster:
    """The cluster of one folder, as this process uses it: start, template, runs, sweep."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = (folder or data_dir() / "exercises").expanduser().resolve()
        self.server = ExerciseServer(self.folder)
        self._started = False
        self._lock = threading.Lock()
        self._template: str | None = None

    @property
    def socket_dir(self) -> Path:
        return self.server.socket_dir

    @property
    def log_dir(self) -> Path:
        return self.server.pgdata / "log"

    def admin_url(self, database: str = "postgres") -> str:
        return self.server.url(database)

    def start(self) -> None:
        """Blocking: start the server (first time: initdb, about a second). Raises Unavailable."""
        with self._lock:
            if not self._started:
                self.server.start()
                self._started = True

    def stop(self) -> None:
        with self._lock:
            self.server.stop()
            self._started = False
            self._template = None

    async def ensure_ready(self) -> str:
        """Start the server and make the template if it is missing; returns the template's name."""
        if self._template is None:
            await asyncio.to_thread(self.start)
            engine = _engine(self.admin_url())
            try:
                async with engine.connect() as conn:
                    await self._prepare_cluster(conn)
                    self._template = await seed.ensure_template(conn, self.admin_url)
            finally:
                await engine.dispose()
            await self.sweep()
        return self._template

    async def _prepare_cluster(self, conn) -> None:
        # Idempotent, and safe when two processes prepare the cluster at once.
        await conn.execute(text(f"DO $$BEGIN CREATE ROLE {LEARNERS} NOLOGIN; "
                                "EXCEPTION WHEN duplicate_object THEN NULL; END$$"))
        # No run may connect to the cluster's own databases (pg_hba says so too).
        await conn.execute(text("REVOKE ALL ON DATABASE postgres FROM PUBLIC"))

    async def create_run(self) -> RunDatabase:
        """A role and its database, from the template. The caller drops it (drop_run)."""
        template = await self.ensure_ready()
        name = f"{RUN_PREFIX}{os.getpid()}_{int(time.time())}_{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(24)
        engine = _engine(self.admin_url())
        try:
            async with engine.connect() as conn:
                await conn.execute(text(
                    f"CREATE ROLE {name} LOGIN PASSWORD '{password}' CONNECTION LIMIT {RUN_CONNECTION_LIMIT} "
                    f"IN ROLE {LEARNERS}"))
                # Every statement this role sends is logged (only a superuser may turn that off);
                # a statement that runs away is stopped.
                await conn.execute(text(f"ALTER ROLE {name} SET log_statement = 'all'"))
                await conn.execute(text(f"ALTER ROLE {name} SET statement_timeout = '10s'"))
                await conn.execute(text(f'CREATE DATABASE {name} TEMPLATE "{template}"'))
                await conn.execute(text(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC"))
                await conn.execute(text(f"GRANT CONNECT ON DATABASE {name} TO {name}"))
        finally:
            await engine.dispose()
        return RunDatabase(name, password)

    async def drop_run(self, run: RunDatabase | str, *, tries: int = 3) -> None:
        name = run.name if isinstance(run, RunDatabase) else run
        if not RUN_NAME.match(name):
            raise ValueError(f"not a run's name: {name!r}")
        for attempt in range(tries):
            engine = _engine(self.admin_url())
            try:
                async with engine.connect() as conn:
                    await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    await conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
                return
            except DBAPIError:
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(0.2)
            finally:
                await engine.dispose()

    async def sweep(self) -> list[str]:
        """Drop the runs whose process is gone, or that are older than STALE_AFTER_SECONDS."""
        engine = _engine(self.admin_url())
        try:
            async with engine.connect() as conn:
                names = set((await conn.scalars(text(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'exrun\\_%' "
                    "UNION SELECT rolname FROM pg_roles WHERE rolname LIKE 'exrun\\_%'"))).all())
        finally:
            await engine.dispose()
        stale = [name for name in sorted(names) if _is_stale(name)]
        for name in stale:
            await self.drop_run(name)
        return stale


def _is_stale(name: str) -> bool:
    match = RUN_NAME.match(name)
    if match is None:
        return False
    pid, made = int(match.group(1)), int(match.group(2))
    if time.time() - made > STALE_AFTER_SECONDS:
        return True
    return pid != os.getpid() and not sandbox.alive(pid)


_default: ExerciseCluster | None = None
_default_lock = threading.Lock()


def default_cluster() -> ExerciseCluster:
    """The process's exercise cluster, in the data folder (LAB_DATA_DIR)/exercises."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ExerciseCluster()
        return _default
