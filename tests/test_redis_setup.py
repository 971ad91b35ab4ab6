"""Which Redis the lab uses, and that it says so without leaking a password."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from harness.private_redis import private_redis
from harness.served import free_port
from source import make_redis_client, resolve_redis
from source.redis_pool import PoolExhausted
from source.redis_setup import RedisTarget
from tests.conftest import need


def test_unset_redis_url_falls_back_to_embedded_within_about_100ms(monkeypatch):
    monkeypatch.setattr("source.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.delenv("REDIS_URL", raising=False)
    start = time.perf_counter()
    target = resolve_redis()
    elapsed = time.perf_counter() - start
    assert target.kind == "embedded" and target.label == "embedded (fakeredis)"
    assert "no Redis answered" in target.reason
    assert elapsed < 0.5


def test_a_chosen_url_is_used_as_given_and_shown_masked(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:9/0")
    target = resolve_redis()
    assert target.kind == "server"
    assert "hunter2" not in target.url + target.label + target.reason + repr(target)


async def test_embedded_clients_share_one_server():
    target = RedisTarget("embedded", "fakeredis", "test")
    first, second = make_redis_client(target), make_redis_client(target)
    await first.set("labtest:shared", "1")
    try:
        assert await second.get("labtest:shared") == "1"
    finally:
        await first.delete("labtest:shared")


def test_the_default_server_is_found_when_it_answers(monkeypatch):
    url = need("LAB_TEST_REDIS_URL")
    monkeypatch.setattr("source.config.DEFAULT_REDIS_URL", url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert resolve_redis().kind == "server"


def test_fakeredis_url_asks_for_the_embedded_stand_in(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "fakeredis://")
    target = resolve_redis()
    assert target.kind == "embedded" and "asks for" in target.reason


async def test_the_bounded_pool_still_bounds_after_connects_failed():
    """Redis down, then back: a connect that fails must free its slot once. redis-py also calls
    release() for it; counted twice, each failure let one more command past the bound, and a
    burst after the outage got MaxConnectionsError ("Too many connections") instead of waiting."""
    port = free_port()
    client = make_redis_client(RedisTarget("server", "redis", "test", f"redis://127.0.0.1:{port}/0"),
                               max_connections=2, timeout=0.2)
    try:
        for _ in range(5):  # nothing listens yet
            with pytest.raises(redis.ConnectionError):
                await client.ping()
        with private_redis(port=port) as url:
            pool = client.connection_pool
            held = [await pool.get_connection() for _ in range(2)]
            with pytest.raises(PoolExhausted, match="all 2 of this process's connections stayed in use for 0.2 s"):
                await pool.get_connection()  # waits its 0.2 s for one of the two, then gives up
            for connection in held:
                await pool.release(connection)
            assert await asyncio.gather(*(client.ping() for _ in range(20))) == [True] * 20
            observer = redis.Redis.from_url(url)
            assert len(observer.client_list()) - 1 <= 2  # what the server sees, less the observer
            observer.close()
    finally:
        await client.aclose()


def test_a_full_pool_and_a_late_reply_are_not_told_as_the_same_failure(initialised):
    import ui

    full = ui.error_message(PoolExhausted("No connection available: all 16 of this process's connections stayed in "
                                          "use for 0.05 s"))
    assert "was not asked" in full and "all 16" in full and "did not answer" not in full
    late = ui.error_message(redis.TimeoutError("Timeout reading from socket"))
    assert "did not answer: TimeoutError" in late and "too busy to read the reply in time" in late
