"""The minimal cache-aside (source/cache_aside.py) and the three failures section 4 triggers on it,
each run again on the hardened cache (source/cache.py), on SQLite + fakeredis and on PostgreSQL +
the real Redis: the minimal version breaks, the hardened one answers."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from labbench import cache_failures
from labbench.recorder import record
from source import run_db_setup_and_create_user
from source.cache_aside import CacheAside
from source.models import User

TAG = "t3st"


@pytest.fixture
def redis_kind(backend) -> str:
    """The pairs the lab runs on: SQLite with fakeredis, PostgreSQL with the real Redis."""
    return "fakeredis" if backend == "sqlite" else "redis"


@pytest.fixture
async def jane(db):
    return (await run_db_setup_and_create_user(db))[1]


@pytest.fixture
def experiment(db, redis_target, fake_server, key_prefix):
    """Keyword arguments every experiment of the arc takes."""
    return {"target": redis_target, "prefix": key_prefix, "tag": TAG, "fake_server": fake_server}


async def nothing_left(db, redis_client, key_prefix) -> None:
    """Each run removes its throwaway row and its keys."""
    async with db.sessions() as session:
        rows = await session.scalar(
            select(func.count()).select_from(User).where(User.email.endswith(cache_failures.THROWAWAY_DOMAIN)))
    assert rows == 0
    assert [key async for key in redis_client.scan_iter(match=f"{key_prefix}learner:*")] == []


# --- the pattern ---------------------------------------------------------------------------------


async def test_a_first_read_misses_and_loads_then_the_next_one_hits(db, redis_client, key_prefix, jane):
    cache = CacheAside(redis_client, db.sessions, prefix=key_prefix)
    with record(db) as first:
        miss = await cache.get_user(jane.id)
    with record(db) as second:
        hit = await cache.get_user(jane.id)
    assert (first.count, second.count) == (1, 0)
    assert miss == hit == {"id": jane.id, "name": "Jane Doe", "email": "jane.doe@innovateai.com"}
    assert 0 < await redis_client.ttl(cache.key(jane.id)) <= 300


async def test_a_write_commits_then_deletes_the_key_so_the_next_read_loads_the_new_row(
        db, redis_client, key_prefix, jane):
    cache = CacheAside(redis_client, db.sessions, prefix=key_prefix)
    await cache.get_user(jane.id)
    await cache.rename_user(jane.id, "Jane Roe")
    assert await redis_client.get(cache.key(jane.id)) is None
    with record(db) as sql:
        assert (await cache.get_user(jane.id))["name"] == "Jane Roe"
    assert sql.count == 1


async def test_the_minimal_run_is_a_miss_a_hit_a_write_and_a_miss_on_a_row_of_its_own(
        db, redis_client, key_prefix, experiment):
    steps = await cache_failures.run_minimal(db, **experiment)
    assert [(s.call, s.statements, s.name) for s in steps] == [
        ("get_user", 1, "Throwaway user v1"), ("get_user", 0, "Throwaway user v1"),
        ("rename_user → v2", 2, None), ("get_user", 1, "Throwaway user v2"),
    ]
    await nothing_left(db, redis_client, key_prefix)


# --- the failures, and the answers ------------------------------------------------------------


async def test_a_stampede_loads_once_per_reader_that_missed_on_the_minimal_version_and_once_hardened(
        db, redis_client, key_prefix, experiment):
    minimal = await cache_failures.stampede(db, version="minimal", **experiment)
    # Every reader whose GET found nothing loaded the row and stored it: one SET per load.
    assert minimal.loads == minimal.commands["SET"] > 1 and minimal.commands["GET"] == 100
    hardened = await cache_failures.stampede(db, version="hardened", **experiment)
    assert hardened.loads == 1 and hardened.commands["GET"] == 1
    assert minimal.values_agree and hardened.values_agree
    await nothing_left(db, redis_client, key_prefix)


async def test_a_reader_that_loaded_before_a_write_leaves_the_old_row_in_the_minimal_cache_not_the_hardened(
        db, redis_client, key_prefix, experiment):
    minimal = await cache_failures.stale_set(db, version="minimal", **experiment)
    assert minimal.reader_got == "Throwaway user v1" and minimal.database_has == "Throwaway user v2"
    assert (minimal.next_read, minimal.next_read_loaded) == ("Throwaway user v1", False)  # stale, from Redis
    assert minimal.ttl_seconds > 250  # and it stays until its TTL ends
    hardened = await cache_failures.stale_set(db, version="hardened", **experiment)
    assert hardened.reader_got == "Throwaway user v1" and hardened.reader_stored is False
    assert (hardened.next_read, hardened.next_read_loaded) == ("Throwaway user v2", True)
    await nothing_left(db, redis_client, key_prefix)


async def test_a_hung_redis_holds_the_minimal_read_for_the_clients_default_timeout_and_the_hardened_fails_open(
        db, redis_client, key_prefix):
    minimal, hardened = await asyncio.gather(
        cache_failures.hung(db, version="minimal", prefix=key_prefix, tag=TAG),
        cache_failures.hung(db, version="hardened", prefix=key_prefix, tag=TAG),
    )
    assert (minimal.served, minimal.error) == (None, "TimeoutError")  # the request fails...
    assert minimal.seconds >= 4.9  # ...after redis-py's default socket timeout of 5 s
    assert (hardened.served, hardened.error) == ("Throwaway user v1", "TimeoutError")  # served from the database
    assert hardened.seconds < minimal.seconds / 10
    await nothing_left(db, redis_client, key_prefix)
