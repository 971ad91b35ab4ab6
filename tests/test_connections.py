"""Section 2's connection experiments on SQLite and PostgreSQL: a new connection against a query on
an open one, lookups awaited one after another against concurrent tasks, and a pooled connection
the server ends under the minimal engine and the hardened one."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from labbench import connections
from source import LabError, run_db_setup_and_create_user


async def test_the_cost_of_a_connection_is_timed_on_real_connections(db):
    cost = await connections.connection_cost(db, samples=4)
    assert len(cost.connect_ms) == len(cost.reuse_ms) == 4
    assert min(cost.connect_ms) > 0 and min(cost.reuse_ms) > 0


async def test_each_lookup_really_waits_and_concurrent_tasks_share_the_pool(db):
    await run_db_setup_and_create_user(db)
    result = await connections.sequential_vs_concurrent(db, lookups=8, wait_ms=10)
    assert result.sequential_s >= 8 * 0.010  # eight waits of 10 ms in the database, one after another
    assert result.concurrent_s >= 0.010
    assert 2 <= result.peak_connections <= 8  # at once, never more than the lookups (or the pool's 15)


@pytest.mark.parametrize(("lookups", "wait_ms"), [(0, 10), (101, 10), (5, -1), (5, 101)])
async def test_lookups_out_of_range_are_refused(db, lookups, wait_ms):
    with pytest.raises(LabError):
        await connections.sequential_vs_concurrent(db, lookups=lookups, wait_ms=wait_ms)


async def test_a_connection_the_server_ended_fails_the_minimal_engine_once_and_never_the_hardened_one(db):
    await run_db_setup_and_create_user(db)
    if db.backend != "postgresql":
        with pytest.raises(connections.NoServer, match="no server that could end a connection"):
            await connections.drop_connections(db, hardened=False)
        return
    minimal = await connections.drop_connections(db, hardened=False)
    hardened = await connections.drop_connections(db, hardened=True)
    assert minimal.ended == hardened.ended == 3
    assert minimal.failed == 1 and minimal.outcomes[0] != "ok"  # a dead connection handed out
    assert hardened.failed == 0 and hardened.opened_again >= 1  # the pre-ping replaced it first
    async with db.engine.connect() as conn:  # the throwaway engines left nothing open on the server
        others = await conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    assert others <= db.engine.sync_engine.pool.checkedin()
