"""Section 2 through AppTest: the app pool's figures beside PostgreSQL's own list of the app's
connections (pg_stat_activity, read here by the test on a connection of its own), and the
two-tasks-one-session demo showing SQLAlchemy's real errors, on both backend pairs."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import ui
from labbench.pool_figures import pool_figures
from source import User
from tests.pagekit import click, count, open_page, texts

POOLING = "../pages/2_DB_Connectivity_and_Pooling.py"


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def seen_by_postgres() -> dict[str, int]:
    """The test's own read of pg_stat_activity for the app's connections: open, and in a
    transaction or running."""
    db = ui.database()

    async def read() -> dict[str, int]:
        observer = create_async_engine(db.url, poolclass=NullPool)
        try:
            async with observer.connect() as conn:
                states = dict((await conn.execute(text(
                    "SELECT state, count(*) FROM pg_stat_activity "
                    "WHERE application_name = :name AND datname = current_database() GROUP BY state"
                ), {"name": db.application_name})).all())
        finally:
            await observer.dispose()
        return {"open": sum(states.values()), "busy": sum(n for s, n in states.items() if s != "idle")}

    return ui.run(read())


@pytest.mark.parametrize("app_env", ["servers"], indirect=True)
def test_pool_figures_equal_pg_stat_activity_for_the_apps_connections(initialised):
    db = ui.database()
    assert db.application_name == f"lab2-app-{os.getpid()}"
    at = open_page(POOLING)
    shown = metrics(at)
    theirs = seen_by_postgres()
    assert int(shown["Open"]) == int(shown["PostgreSQL: open"]) == theirs["open"] == pool_figures(db).open >= 1
    assert shown["Checked out"] == shown["PostgreSQL: in a transaction or running"] == "0" and theirs["busy"] == 0

    async def check_out(n: int) -> list:
        held = []
        for _ in range(n):
            conn = await db.engine.connect()
            await conn.execute(text("SELECT 1"))  # in a transaction: "idle in transaction" to PostgreSQL
            held.append(conn)
        return held

    held = ui.run(check_out(7))  # 5 within pool_size, 2 beyond it
    try:
        shown = metrics(click(at, "pool_refresh"))
        theirs = seen_by_postgres()
        assert shown["Open"] == shown["PostgreSQL: open"] == "7" and theirs["open"] == 7
        assert shown["Checked out"] == shown["PostgreSQL: in a transaction or running"] == "7"
        assert theirs["busy"] == 7
        assert shown["Idle in the pool"] == shown["PostgreSQL: idle"] == "0"
        assert shown["Overflow in use"] == "2 of 10"
        assert "application_name `lab2-app-" in texts(at.caption)
    finally:
        for conn in held:
            ui.run(conn.close())
    shown = metrics(click(at, "pool_refresh"))  # all back: 5 kept idle, the 2 beyond pool_size closed
    assert (shown["Open"], shown["Idle in the pool"], shown["Checked out"], shown["Overflow in use"]) == (
        "5", "5", "0", "0 of 10")


@pytest.mark.parametrize("app_env", ["embedded"], indirect=True)
def test_on_sqlite_the_page_says_no_server_lists_connections(initialised):
    at = open_page(POOLING)
    assert ui.database().application_name is None
    assert not any(label.startswith("PostgreSQL") for label in metrics(at))
    assert "has no server that lists connections" in texts(at.caption)


def test_two_tasks_sharing_a_session_show_the_real_errors_and_a_session_per_task_commits_both(initialised):
    before = count(User)
    at = open_page(POOLING)
    click(at, "shared_session")
    assert not at.error
    frames = [frame.value for frame in at.dataframe if "task" in frame.value.columns]
    cold, warm, separate = (frame.to_dict("records") for frame in frames)
    raised = "raised sqlalchemy.exc.InvalidRequestError"
    assert [row["returned"] for row in cold] == [row["returned"] for row in warm] == ["yes", raised]
    assert [row["its user is in the database"] for row in cold] == ["yes", "no"]
    assert [row["its user is in the database"] for row in warm] == ["yes", "yes"]  # committed by task A
    assert [row["returned"] for row in separate] == ["yes", "yes"]
    errors = [c.value for c in at.code if c.value.startswith("task ")]
    assert len(errors) == 2
    assert errors[0].startswith("task B: sqlalchemy.exc.InvalidRequestError: This session is provisioning a new "
                                "connection; concurrent operations are not permitted")
    assert errors[1].startswith("task B: sqlalchemy.exc.InvalidRequestError: Session is already flushing")
    shown = texts(at.markdown)
    assert all(f"**{mode}**: users written {n} of 2" in shown for mode, n in (
        ("one shared session (cold)", 1), ("one shared session (warm)", 2), ("a session per task", 2)))
    assert count(User) == before  # the demo deleted its users
