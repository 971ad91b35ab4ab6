"""Section 4's Redis structures, run live: the commands they send (ZRANGE ... REV, not the
deprecated ZREVRANGE, as a Redis server of the test's own counts them), stable IDs as
leaderboard members, the list used as a queue, the set, and a Pub/Sub channel that keeps nothing."""

from __future__ import annotations

import pytest

from harness.private_redis import private_redis
from labbench.redis_structures import lab_structures
from source import CachedUserRepository, RedisCache, run_db_setup_and_create_user
from source.redis_setup import RedisTarget, make_redis_client
from source.services import calculate_and_store_airscore


async def structures(db, client, prefix):
    alex, jane = await run_db_setup_and_create_user(db)
    for user in (alex, jane):
        await calculate_and_store_airscore(sessions=db.sessions, user_id=user.id, occupation_code="15-2051")
    repo = CachedUserRepository(sessions=db.sessions, cache=RedisCache(client, prefix=prefix))
    await repo.get_by_id_cached(jane.id)
    rows = await lab_structures(sessions=db.sessions, repo=repo, client=client, user_id=jane.id,
                                stream=f"{prefix}no-stream")
    return {row.type: row for row in rows}, alex, jane


async def test_each_structure_is_made_and_read_live(db, redis_client, key_prefix):
    rows, alex, jane = await structures(db, redis_client, key_prefix)
    assert list(rows) == ["string", "hash", "zset", "list", "set", "none", "(a channel, not a key)"]
    assert jane.id[:8] in rows["zset"].sample and alex.id[:8] in rows["zset"].sample  # members are IDs
    assert "LPOP took the first (Jane Doe v1); LLEN = 2" in rows["list"].sample
    assert "SCARD = 2; SISMEMBER this user = 1" in rows["set"].sample
    assert rows["(a channel, not a key)"].sample.startswith("PUBLISH with 1 subscriber reached 1 (it received: score updated)")
    assert "after it left reached 0" in rows["(a channel, not a key)"].sample


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_leaderboard_is_read_with_zrange_rev_not_the_deprecated_zrevrange(db, key_prefix):
    with private_redis() as url:
        client = make_redis_client(RedisTarget("server", "private", "test", url), timeout=2.0)
        try:
            rows, _, _ = await structures(db, client, key_prefix)
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
    assert stats["cmdstat_zrange"]["calls"] == 1 and "cmdstat_zrevrange" not in stats
    assert rows["zset"].encoding == "listpack"
