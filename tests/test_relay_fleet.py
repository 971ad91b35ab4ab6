"""bench.py's several relays (labbench/relay_fleet.py): relay processes in aggregate order drain a
burst together, each publishing its own partitions' users, and the stream they leave keeps every
user's order, loses nothing, and the lab's consumer applies each event once. (The SIGKILL and its
take-over: tests/test_partitions.py.) The bench's speed figures are not asserted here."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from labbench.relay_fleet import run_fleet
from source.outbox_claims import AGGREGATE_ORDER
from tests.conftest import need


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_relay_processes_in_aggregate_order_lose_nothing_and_keep_each_users_order(db_url, key_prefix):
    redis_url = need("LAB_TEST_REDIS_URL")
    result = await run_fleet(db_url, redis_url, relays=2, design=AGGREGATE_ORDER, events=1_000, users=20,
                             key_prefix=key_prefix)
    assert (result.lost, result.inversions, result.applied_twice) == (0, 0, 0)
    assert result.applied == 1_000 and result.duplicates == 0  # no relay died: nothing appended again
    assert len(result.per_relay) == 2 and all(result.per_relay) and sum(result.per_relay) == 1_000
    client = aioredis.Redis.from_url(redis_url)
    try:  # the stream and its group are gone
        assert [key async for key in client.scan_iter(match=f"{key_prefix}*")] == []
    finally:
        await client.aclose()
