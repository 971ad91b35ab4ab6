"""Which Redis the lab uses, and that it says so without leaking a password."""

from __future__ import annotations

import time

from source import make_redis_client, resolve_redis
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
    from source.redis_setup import RedisTarget

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
