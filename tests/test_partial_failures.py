"""When one backend fails halfway: a reset says exactly what it did and did not do, and the
sidebar does not claim an unreachable database has no schema."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis.asyncio as aioredis
from streamlit.testing.v1 import AppTest

import ui
from harness.served import free_port
from labbench import lab_data
from labbench.lab_data import ResetIncomplete, reset_lab_data
from source import Database, User, UserRepository, run_db_setup_and_create_user
from tests.pagekit import count, texts

POOLING = "../pages/2_DB_Connectivity_and_Pooling.py"
DEAD_DATABASE = "postgresql+asyncpg://lab:secret@127.0.0.1:9/nowhere"


def test_a_reset_with_redis_down_deletes_no_row_and_says_so(initialised, monkeypatch):
    async def add_learner():
        async with ui.database().sessions.begin() as session:
            await UserRepository(session).create(email="learner@example.com", name="Learner")

    ui.run(add_learner())
    closed_port = free_port()  # nothing listens there: connections are refused
    dead = ui.run(_client(f"redis://127.0.0.1:{closed_port}/0"))
    monkeypatch.setattr(ui, "redis_client", lambda: dead)
    at = AppTest.from_file(POOLING, default_timeout=60).run()
    at.checkbox(key="reset_confirm").check().run()
    at.button(key="reset_lab").click().run()
    assert not at.exception and not at.success
    shown = texts(at.error)
    assert "The reset stopped part-way: Redis" in shown and "did not answer" in shown
    assert "deleted 0 Redis key(s)" in shown and "no database row was deleted" in shown
    assert count(User) == 3  # the learner's user is still there
    ui.run(dead.aclose())


async def _client(url: str):
    return aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=1)


async def test_a_reset_whose_database_fails_after_redis_reports_the_keys_it_deleted(
    backend, redis_client, key_prefix, tmp_path
):
    (tmp_path / "a-directory").mkdir()  # SQLite cannot open a directory as its database file
    dead = Database(DEAD_DATABASE if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'a-directory'}")
    await redis_client.set(f"{key_prefix}cache:v1:a", "1")
    await redis_client.set(f"{key_prefix}cache:v1:b", "1")
    threads_before = set(threading.enumerate())
    try:
        with pytest.raises(ResetIncomplete) as stopped:
            await reset_lab_data(dead, redis_client, prefix=key_prefix)
    finally:
        await dead.dispose()
        # aiosqlite stops a connection that failed to open on its worker thread, which then reports
        # to this event loop: wait for it, or it may find the loop closed (a warning in the run)
        for thread in set(threading.enumerate()) - threads_before:
            if "_connection_worker_thread" in thread.name:
                await asyncio.to_thread(thread.join, 5)
    assert stopped.value.keys_deleted == 2 and stopped.value.rows_deleted is None
    assert [key async for key in redis_client.scan_iter(match=f"{key_prefix}*")] == []


def test_the_page_says_what_a_reset_did_when_the_database_failed(initialised, monkeypatch):
    async def failing(db, client, *, prefix):
        raise ResetIncomplete(keys_deleted=4, rows_deleted=None, cause=ConnectionRefusedError(111, "refused"))

    monkeypatch.setattr(lab_data, "reset_lab_data", failing)
    at = AppTest.from_file(POOLING, default_timeout=60).run()
    at.checkbox(key="reset_confirm").check().run()
    at.button(key="reset_lab").click().run()
    shown = texts(at.error)
    assert "The reset stopped part-way: The database" in shown and "is not reachable" in shown
    assert "deleted 4 Redis key(s)" in shown and "no database row was deleted" in shown


def test_the_sidebar_says_the_schema_is_unknown_when_the_database_is_unreachable(app_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", DEAD_DATABASE)
    ui.reset_resources()
    at = AppTest.from_file("../app.py", default_timeout=30).run()
    assert not at.exception
    captions = texts(at.sidebar.caption)
    assert "Schema: unknown (database unreachable)" in captions and "not initialised" not in captions


def test_a_reachable_database_without_a_schema_is_still_called_not_initialised(app_env):
    at = AppTest.from_file("../app.py", default_timeout=30).run()
    assert "Schema: not initialised (see section 2)" in texts(at.sidebar.caption)
    ui.run(run_db_setup_and_create_user(ui.database()))
