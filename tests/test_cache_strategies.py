"""The five caching strategies and the comparison experiment, on SQLite + fakeredis and on
PostgreSQL + the real Redis. Stale reads are checked against the database, never inferred."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from harness.private_redis import private_redis
from labbench.cache_comparison import Workload, compare_strategies, db_version
from labbench.recorder import record
from runtime.turns import STRATEGY_COMPARISON
from source import Database, InvalidInput, RedisCache, run_db_setup_and_create_user
from source.cache import cache_client
from source.cache_strategies import CacheStrategy, RefreshAhead, TTLOnly, WriteBehind, WriteThrough
from source.redis_setup import RedisTarget
from source.repositories import UserRepository


@pytest.fixture
def redis_kind(backend) -> str:
    return "fakeredis" if backend == "sqlite" else "redis"


@pytest.fixture
async def client(redis_client, redis_target, fake_server):
    client = cache_client(redis_target, fake_server=fake_server)
    yield client
    await client.aclose()


@pytest.fixture
async def jane(db):
    return (await run_db_setup_and_create_user(db))[1]


def make(kind, db, client, key_prefix, **cache_options):
    return kind(sessions=db.sessions, cache=RedisCache(client, prefix=key_prefix, **cache_options))


async def name_in_db(db, user_id) -> str:
    async with db.sessions() as session:
        return (await UserRepository(session).get_existing(user_id)).name


async def test_cache_aside_and_write_through_never_serve_the_old_row_after_a_write(db, client, key_prefix, jane):
    for kind in (CacheStrategy, WriteThrough):
        strategy = make(kind, db, client, f"{key_prefix}{kind.name}:")
        await strategy.read(jane.id)
        await strategy.write(jane.id, name=f"Jane {kind.name}")
        after = await strategy.read(jane.id)
        assert after.value.name == f"Jane {kind.name}" == await name_in_db(db, jane.id)
        # write-through put the new row in the cache; cache-aside left a tombstone, so a miss
        assert after.outcome == ("hit" if kind is WriteThrough else "miss")


async def test_ttl_only_serves_the_old_row_until_the_ttl_ends(db, client, key_prefix, jane):
    strategy = make(TTLOnly, db, client, key_prefix, ttl_seconds=1, jitter=0.0)
    await strategy.read(jane.id)
    await strategy.write(jane.id, name="Jane Renamed")
    stale = await strategy.read(jane.id)
    assert (stale.outcome, stale.value.name) == ("hit", "Jane Doe")  # the database says otherwise
    await asyncio.sleep(1.2)
    fresh = await strategy.read(jane.id)
    assert (fresh.outcome, fresh.value.name) == ("miss", "Jane Renamed")


async def test_refresh_ahead_serves_the_cached_row_and_refreshes_it_before_it_expires(db, client, key_prefix, jane):
    strategy = make(RefreshAhead, db, client, key_prefix, ttl_seconds=2, jitter=0.0)
    strategy.early = 0.6  # refresh when less than 1.2 s of the 2 s are left
    await strategy.read(jane.id)
    async with db.sessions.begin() as session:  # the row changes without an invalidation
        await UserRepository(session).update(jane.id, name="Jane Refreshed")
    assert (await strategy.read(jane.id)).value.name == "Jane Doe"  # 2 s left: no refresh
    await asyncio.sleep(1.0)
    with record(db) as sql:
        served = await strategy.read(jane.id)  # under 1.2 s left: served now, refreshed behind
        await strategy.close()
    assert (served.outcome, served.value.name, sql.count) == ("hit", "Jane Doe", 1)
    await asyncio.sleep(1.2)  # past the first value's expiry: the refreshed one is still there
    after = await strategy.read(jane.id)
    assert (after.outcome, after.value.name) == ("hit", "Jane Refreshed")


async def test_write_behind_reaches_the_database_only_when_flushed(db, client, key_prefix, jane):
    strategy = make(WriteBehind, db, client, key_prefix)
    await strategy.write(jane.id, name="Jane Behind")
    read = await strategy.read(jane.id)
    assert (read.outcome, read.value.name) == ("hit", "Jane Behind")
    assert await name_in_db(db, jane.id) == "Jane Doe" and await strategy.pending() == 1
    assert await strategy.flush() == 1
    assert await name_in_db(db, jane.id) == "Jane Behind" and await strategy.pending() == 0


async def test_write_behind_loses_acknowledged_writes_when_redis_loses_its_memory_before_the_flush(
    db, client, key_prefix, jane
):
    strategy = make(WriteBehind, db, client, key_prefix)
    await strategy.write(jane.id, name="Jane Lost")  # acknowledged: the call returned
    # Redis restarts empty (no persistence): everything under this cache's prefix is gone.
    keys = [key async for key in client.scan_iter(match=f"{key_prefix}*")]
    await client.delete(*keys)
    assert await strategy.flush() == 0  # nothing left to flush
    assert await name_in_db(db, jane.id) == "Jane Doe"  # the write never reached the database
    assert (await strategy.read(jane.id)).value.name == "Jane Doe"


async def test_the_comparisons_counts_are_the_statements_and_commands_really_sent(db, redis_target, fake_server, key_prefix):
    workload = Workload(reads=60, users=10, skew=1.0, writes_per_100=0, readers=1, ttl_seconds=300, seed=3)
    results = await compare_strategies(
        db=db, target=redis_target, fake_server=fake_server, prefix=key_prefix, workload=workload,
        strategies=(CacheStrategy,),
    )
    [result] = results
    distinct = len({rank for _, rank in workload.operations()})
    assert (result.reads, result.errors, result.writes) == (60, 0, 0)
    # One reader, no writes, a long TTL: each user's first read misses and loads, once.
    assert result.misses == distinct == result.read_loads == result.statements
    assert result.hits == 60 - distinct and result.stale_reads == result.ahead_reads == 0
    sent = result.commands_by_name
    assert sent["GET"] == 60  # one GET per read (no concurrent reader to share one with)
    assert sent["EVALSHA"] == distinct + sent.get("SCRIPT LOAD", 0)  # each store; a first try may need SCRIPT LOAD
    assert result.redis_commands == sum(sent.values())


async def test_the_commands_counted_are_the_ones_a_redis_server_ran(db, key_prefix):
    """Checked by an outside observer: INFO commandstats on a redis-server of this test's own,
    before and after every strategy's run. The store script's own GET and SET run inside Redis:
    the server counts them, the client sent one EVALSHA."""
    workload = Workload(reads=200, users=10, skew=1.1, writes_per_100=10, readers=8, ttl_seconds=300, seed=5)
    with private_redis() as url:
        observer = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            before = await observer.info("commandstats")
            results = await compare_strategies(db=db, target=RedisTarget("server", url, "test", url), fake_server=None,
                                               prefix=key_prefix, workload=workload)
            after = await observer.info("commandstats")
        finally:
            await observer.aclose()
    counted = Counter()
    for result in results:
        counted.update({name.replace(" ", "|"): n for name, n in result.commands_by_name.items()})
    ran = {name.removeprefix("cmdstat_").upper(): stats["calls"] - before.get(name, {}).get("calls", 0)
           for name, stats in after.items()}
    ran = {name: n for name, n in ran.items() if n}
    scripts_run = ran["EVALSHA"] - (after["cmdstat_evalsha"].get("failed_calls", 0)
                                    - before.get("cmdstat_evalsha", {}).get("failed_calls", 0))
    # Not the strategies': each connection's HELLO, the observer's INFO, the run's clean-up of its keys.
    others = {"HELLO", "INFO", "SCAN", "DEL"}
    assert {k: v for k, v in ran.items() if k not in others | {"GET", "SET"}} == {
        k: v for k, v in counted.items() if k not in {"GET", "SET"}}
    assert ran["GET"] == counted["GET"] + scripts_run  # the script reads the key every time it runs
    assert counted["SET"] <= ran["SET"] <= counted["SET"] + scripts_run  # and stores only if it is unchanged


async def test_every_strategy_under_concurrent_skewed_reads_and_writes(db, redis_target, fake_server, key_prefix):
    workload = Workload(reads=300, users=10, skew=1.1, writes_per_100=10, readers=8, ttl_seconds=300, seed=5)
    results = {r.name: r for r in await compare_strategies(
        db=db, target=redis_target, fake_server=fake_server, prefix=key_prefix, workload=workload,
    )}
    assert list(results) == ["cache-aside", "TTL only", "write-through", "refresh-ahead", "write-behind"]
    for result in results.values():
        assert result.reads == 300 and result.writes == 30
        assert result.hits + result.misses + result.errors == 300
    for name in ("cache-aside", "write-through", "refresh-ahead"):
        assert results[name].stale_reads == 0, name  # one process: the write path keeps them true
    assert results["TTL only"].stale_reads > 0  # a 300 s TTL and no invalidation
    behind = results["write-behind"]
    assert behind.ahead_reads > 0 and behind.stale_reads == 0 and 0 <= behind.unflushed_at_end <= workload.users
    assert behind.unflushed_after_flush == 0  # every acknowledged write reached the database
    assert all(r.unflushed_at_end is None for name, r in results.items() if name != "write-behind")


@pytest.mark.parametrize("bad", [
    {"readers": 0}, {"reads": 9}, {"skew": float("nan")}, {"writes_per_100": 101}, {"ttl_seconds": 1.5},
    {"users": "ten"},
])
async def test_a_bad_control_gets_a_message_and_runs_nothing(db, redis_client, redis_target, fake_server, key_prefix, bad):
    with record(db) as sql, pytest.raises(InvalidInput) as caught:
        await compare_strategies(
            db=db, target=redis_target, fake_server=fake_server, prefix=key_prefix, workload=Workload(**bad),
        )
    assert caught.value.field == next(iter(bad)) and sql.count == 0
    assert [key async for key in redis_client.scan_iter(match=f"{key_prefix}*")] == []


async def test_db_version_reads_the_version_the_workload_wrote(db, jane):
    async with db.sessions.begin() as session:
        await UserRepository(session).update(jane.id, name="Traffic User 001 v42")
    assert await db_version(db, jane.id) == 42


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_comparison_waits_while_another_app_process_runs_one(
        db, redis_target, fake_server, key_prefix, other_app_process):
    """Another app process runs a comparison: this one waits on the server's advisory lock, which
    its own process's lock cannot see, then runs."""
    workload = Workload(reads=20, users=5, skew=1.0, writes_per_100=10, readers=2, ttl_seconds=300, seed=1)
    async with other_app_process(STRATEGY_COMPARISON):
        comparison = asyncio.create_task(compare_strategies(
            db=db, target=redis_target, fake_server=fake_server, prefix=key_prefix, workload=workload,
            strategies=(CacheStrategy,),
        ))
        for _ in range(300):
            if await waiting_for_advisory_lock(db, STRATEGY_COMPARISON):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the comparison never waited for the other process's turn")
        assert not comparison.done()
    [result] = await asyncio.wait_for(comparison, 60)
    assert result.reads == 20 and result.writes == 2


async def waiting_for_advisory_lock(db: Database, key: int) -> bool:
    async with db.engine.connect() as conn:
        return bool(await conn.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key AND NOT granted"
        ), {"key": key}))
