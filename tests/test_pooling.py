"""Section 2's experiment and atomicity demo, on SQLite and PostgreSQL: what the figures count,
that the pool's limits hold, that throwaway engines go away, and all-or-nothing transactions."""

from __future__ import annotations

import asyncio
import math

import pytest
from sqlalchemy import text

from labbench.pooling import ExperimentBusy, PoolSettings, demonstrate_atomicity, run_pool_experiment
from labbench.recorder import record
from runtime.turns import POOL_EXPERIMENT
from source import Database, InvalidInput


async def test_every_request_is_served_and_counted_on_both_engines(db):
    settings = PoolSettings(concurrency=12, requests_per_client=3, pool_size=2, max_overflow=2, hold_ms=2)
    result = await run_pool_experiment(db=db, settings=settings)
    for run in (result.pooled, result.null_pool):
        assert run.requests == run.completed == 36
        assert run.timeouts == run.failures == 0
        assert run.throughput == pytest.approx(36 / run.total_seconds)
    assert result.null_pool.connections_opened == 36  # a new connection for every request
    assert result.pooled.peak_checked_out <= 4  # pool_size + max_overflow, never more


async def test_a_pool_too_small_for_the_load_times_requests_out_instead_of_hanging(db):
    settings = PoolSettings(concurrency=6, requests_per_client=1, pool_size=1, max_overflow=0,
                            pool_timeout=0.05, hold_ms=150)
    result = await run_pool_experiment(db=db, settings=settings)
    pooled = result.pooled
    assert pooled.completed >= 1 and pooled.timeouts >= 4
    assert pooled.completed + pooled.timeouts == 6
    assert pooled.total_seconds < 2  # each waiter gave up after pool_timeout
    assert result.null_pool.completed == 6  # no pool, nothing to wait for


@pytest.mark.parametrize(
    ("change", "field"),
    [({"concurrency": 101}, "concurrency"), ({"concurrency": 0}, "concurrency"),
     ({"requests_per_client": 11}, "requests_per_client"), ({"pool_size": 0}, "pool_size"),
     ({"max_overflow": -1}, "max_overflow"), ({"pool_timeout": math.nan}, "pool_timeout"),
     ({"hold_ms": 201}, "hold_ms")],
)
async def test_settings_out_of_range_are_refused_before_anything_runs(tmp_path, change, field):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'never.db'}")
    with record(db) as log, pytest.raises(InvalidInput) as refused:
        await run_pool_experiment(db=db, settings=PoolSettings(**change))
    assert refused.value.field == field and log.count == 0
    assert not (tmp_path / "never.db").exists() or (tmp_path / "never.db").stat().st_size == 0


async def test_only_one_experiment_runs_at_a_time_in_a_process(db):
    slow = PoolSettings(concurrency=2, requests_per_client=1, hold_ms=200)
    first = asyncio.create_task(run_pool_experiment(db=db, settings=slow))
    await asyncio.sleep(0.05)
    with pytest.raises(ExperimentBusy, match="Another pooling experiment is running"):
        await run_pool_experiment(db=db, settings=PoolSettings(concurrency=1))
    await first
    await run_pool_experiment(db=db, settings=PoolSettings(concurrency=1, requests_per_client=1))


@pytest.fixture
def pg_db(db):
    """The shared fresh, migrated database, pinned to PostgreSQL below: these claims are about a server."""
    return db


on_postgresql = pytest.mark.parametrize("backend", ["postgresql"])


@on_postgresql
async def test_the_throwaway_engines_leave_no_connection_open_on_the_server(pg_db):
    async def connections_not_in_the_apps_pool() -> int:
        pool = pg_db.engine.sync_engine.pool
        async with pg_db.engine.connect() as conn:
            on_server = await conn.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            ))
            return on_server - pool.checkedin() - pool.checkedout()

    assert await connections_not_in_the_apps_pool() == 0
    await run_pool_experiment(db=pg_db, settings=PoolSettings(concurrency=20, requests_per_client=1, hold_ms=1))
    assert await connections_not_in_the_apps_pool() == 0


@on_postgresql
async def test_an_experiment_in_another_app_process_makes_this_one_wait_for_its_turn(pg_db, other_app_process):
    """Another app process on the same server runs one: this process's lock cannot see it, the
    server's advisory lock does."""
    async with other_app_process(POOL_EXPERIMENT):
        with pytest.raises(ExperimentBusy, match="running on this database"):
            await run_pool_experiment(db=pg_db, settings=PoolSettings(concurrency=1, requests_per_client=1))
    result = await run_pool_experiment(db=pg_db, settings=PoolSettings(concurrency=1, requests_per_client=1))
    assert result.pooled.completed == result.null_pool.completed == 1


@on_postgresql
async def test_a_pool_bigger_than_the_servers_spare_connections_is_refused(pg_db, monkeypatch):
    monkeypatch.setattr("labbench.pooling.SERVER_RESERVE", 10_000)  # as if the room used them all
    with pytest.raises(InvalidInput, match="connections to spare") as refused:
        await run_pool_experiment(db=pg_db, settings=PoolSettings(concurrency=5))
    assert refused.value.field == "max_overflow"
    await run_pool_experiment(db=pg_db, settings=PoolSettings(concurrency=1, requests_per_client=1,
                                                               pool_size=1, max_overflow=0))


@on_postgresql
async def test_on_postgresql_the_pool_reuses_what_nullpool_opens_per_request(pg_db):
    # Not which one is faster: that depends on the server (the embedded one, NullPool won once).
    settings = PoolSettings(concurrency=50, requests_per_client=5, pool_size=5, max_overflow=10, hold_ms=5)
    result = await run_pool_experiment(db=pg_db, settings=settings)
    assert result.pooled.completed == result.null_pool.completed == 250
    assert result.null_pool.connections_opened == 250
    # at most 15 at once; an overflow connection is closed when it comes back to a full pool
    assert result.pooled.peak_checked_out <= 15 and result.pooled.connections_opened < 250 / 5


async def test_a_transaction_that_fails_part_way_leaves_nothing_behind(db):
    demo = await demonstrate_atomicity(db)
    assert (demo.users_during, demo.scores_during) == (demo.users_before + 1, demo.scores_before + 1)
    assert (demo.users_after, demo.scores_after) == (demo.users_before, demo.scores_before)
    assert demo.rows_left_behind == 0
    assert "unique" in demo.error.lower()
    assert [sql.split()[0] for sql in demo.log.sql] == ["INSERT", "INSERT", "SELECT", "SELECT", "INSERT"]
