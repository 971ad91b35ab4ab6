"""The pool's figures (labbench/pool_figures.py) against what the database sees: on PostgreSQL
they equal pg_stat_activity for the app's connections (marked by their application_name); on
SQLite, where no server lists connections, the figures follow the checkouts."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from labbench.pool_figures import pool_figures
from source import Database
from tests.conftest import need


def label(db: Database) -> str:
    """Give each connection the pool opens an application_name of this test's own. SQLAlchemy's
    asyncpg adapter runs the SET inside a transaction of its own, so it is committed: otherwise
    the pool's ROLLBACK at check-in would undo it."""
    name = f"labtest-pool-{uuid.uuid4().hex[:8]}"

    @event.listens_for(db.engine.sync_engine, "connect")
    def _name(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET application_name = '{name}'")
        cursor.close()
        dbapi_connection.commit()

    return name


async def seen_by_postgres(observer, name: str) -> dict[str, int]:
    async with observer.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT state, count(*) FROM pg_stat_activity WHERE application_name = :name GROUP BY state"
        ), {"name": name})).all()
    states = dict(rows)
    return {"open": sum(states.values()), "idle": states.get("idle", 0),
            "checked_out": sum(n for s, n in states.items() if s != "idle")}


async def settled(observer, name: str, db: Database) -> tuple[dict, dict]:
    """PostgreSQL's view and the pool's, once a closed connection's backend has gone (it exits
    just after the client hangs up)."""
    for _ in range(100):
        figures = pool_figures(db)
        ours = {"open": figures.open, "idle": figures.idle, "checked_out": figures.checked_out}
        theirs = await seen_by_postgres(observer, name)
        if theirs == ours:
            break
        await asyncio.sleep(0.05)
    return ours, theirs


async def hold(db: Database, n: int) -> list:
    """n connections checked out, each inside a transaction (PostgreSQL: 'idle in transaction')."""
    connections = []
    for _ in range(n):
        conn = await db.engine.connect()
        await conn.execute(text("SELECT 1"))
        connections.append(conn)
    return connections


async def test_figures_equal_pg_stat_activity_through_checkout_overflow_and_return():
    admin_url = need("LAB_TEST_DATABASE_URL")
    observer = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    db = Database(make_url(admin_url).render_as_string(hide_password=False), pool_size=3, max_overflow=4)
    name = label(db)
    try:
        assert pool_figures(db).open == 0  # creating the engine opened nothing
        held = await hold(db, 5)  # 3 within pool_size, 2 beyond it
        ours, theirs = await settled(observer, name, db)
        assert ours == theirs == {"open": 5, "idle": 0, "checked_out": 5}
        figures = pool_figures(db)
        assert (figures.in_use_beyond_pool_size, figures.opened_beyond_pool_size) == (2, 2)

        for conn in held[:2]:  # two come back: the queue has room, both stay open, idle
            await conn.close()
        ours, theirs = await settled(observer, name, db)
        assert ours == theirs == {"open": 5, "idle": 2, "checked_out": 3}
        figures = pool_figures(db)
        # overflow() still says 2, though none is in use beyond pool_size
        assert (figures.in_use_beyond_pool_size, figures.opened_beyond_pool_size) == (0, 2)

        for conn in held[2:]:  # three more: one fills the queue, two are closed
            await conn.close()
        ours, theirs = await settled(observer, name, db)
        assert ours == theirs == {"open": 3, "idle": 3, "checked_out": 0}
        assert pool_figures(db).limit == 7
    finally:
        await db.dispose()
        await observer.dispose()


async def test_an_idle_connection_closed_by_invalidation_is_not_counted_open(backend, db):
    conn = await db.engine.connect()
    await conn.execute(text("SELECT 1"))
    entry = (await conn.get_raw_connection())._connection_record  # the pool's entry for it
    await conn.close()
    assert (pool_figures(db).open, pool_figures(db).idle) == (1, 1)
    entry.invalidate()  # what a detected disconnect does to an entry: its connection is closed
    assert (pool_figures(db).open, pool_figures(db).idle, db.engine.pool.checkedin()) == (0, 0, 1)
    async with db.engine.connect() as conn:  # the entry reconnects at its next checkout
        await conn.execute(text("SELECT 1"))
        assert (pool_figures(db).open, pool_figures(db).checked_out) == (1, 1)


async def test_sqlite_figures_follow_the_checkouts(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=2, max_overflow=1)
    try:
        held = await hold(db, 3)
        figures = pool_figures(db)
        assert (figures.open, figures.checked_out, figures.idle, figures.in_use_beyond_pool_size) == (3, 3, 0, 1)
        for conn in held:
            await conn.close()
        figures = pool_figures(db)
        assert (figures.open, figures.checked_out, figures.idle, figures.opened_beyond_pool_size) == (2, 0, 2, 0)
    finally:
        await db.dispose()


def test_a_pool_that_keeps_nothing_has_no_figures(tmp_path):
    with pytest.raises(TypeError):
        pool_figures(Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", null_pool=True))
