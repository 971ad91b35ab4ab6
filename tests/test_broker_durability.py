"""What section 5 says about the broker keeping the stream, read from real redis-servers: the
shared one, and private ones started here with a memory limit and an eviction policy (never the
shared server's settings)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from harness.private_redis import private_redis
from labbench.outbox_health import BrokerDurability, broker_durability
from tests.conftest import need


def test_no_memory_limit_neither_evicts_nor_refuses_whatever_the_policy():
    unlimited = BrokerDurability(maxmemory_policy="allkeys-lru", maxmemory=0, appendonly="no", appendfsync="everysec")
    assert unlimited.may_evict_the_stream is False and unlimited.memory_limited is False
    limited = BrokerDurability(maxmemory_policy="allkeys-lru", maxmemory=1 << 20, appendonly="no", appendfsync="everysec")
    assert limited.may_evict_the_stream is True
    volatile = BrokerDurability(maxmemory_policy="volatile-lru", maxmemory=1 << 20, appendonly="no", appendfsync="everysec")
    assert volatile.may_evict_the_stream is False and volatile.memory_limited is True
    assert BrokerDurability(None, None, None, None).may_evict_the_stream is None  # CONFIG refused


@pytest.mark.parametrize("policy, limit, evicts", [("allkeys-lru", "10mb", True), ("allkeys-lru", "0", False),
                                                   ("volatile-lru", "10mb", False), ("noeviction", "10mb", False)])
async def test_the_settings_are_read_from_the_server(policy, limit, evicts):
    with private_redis("--maxmemory", limit, "--maxmemory-policy", policy, "--save", "900 1") as url:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            read = await broker_durability(redis_client=client)
        finally:
            await client.aclose()
    assert (read.maxmemory_policy, read.save, read.appendonly) == (policy, "900 1", "no")
    assert read.may_evict_the_stream is evicts


async def test_the_shared_server_is_read_as_it_is():
    client = aioredis.Redis.from_url(need("LAB_TEST_REDIS_URL"), decode_responses=True)
    try:
        read = await broker_durability(redis_client=client)
        told = await client.config_get("*")
    finally:
        await client.aclose()
    assert (read.maxmemory_policy, read.maxmemory, read.save) == (
        told["maxmemory-policy"], int(told["maxmemory"]), told["save"])
