"""Section 5 under the faults a production engineer would try, on SQLite + fakeredis and on
PostgreSQL + Redis: poison entries, a broker that forgets its stream, a parked event and its
user's later events, a long outage, a hung broker, retention, and a relay SIGKILLed mid-batch."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from sqlalchemy import select

from source import InboxEntry, ScoreSummary
from source.consumer import (
    CONSUMER_GROUP,
    ConsumerSettings,
    dead_letter_key,
    ensure_group,
    event_consumer,
    replay_dead_letter,
)
from source.models import new_id
from source.outbox import stream_key
from source.outbox_stats import Stats
from tests.test_outbox import add_events, drain, make_users, wait_until


@pytest.fixture
def redis_kind(backend):
    """Pairs each database with its Redis: SQLite with fakeredis, PostgreSQL with the server."""
    return "fakeredis" if backend == "sqlite" else "redis"


@pytest.fixture
def stream(key_prefix):
    return stream_key(key_prefix)


CONSUMER = ConsumerSettings(block=0.05, claim_min_idle=0.2, claim_interval=0.1, max_deliveries=3)


async def applied_ids(db) -> set[str]:
    async with db.sessions() as session:
        return set(await session.scalars(select(InboxEntry.event_id)))


async def applied_per_user(db) -> dict[str, int]:
    async with db.sessions() as session:
        return dict((await session.execute(select(ScoreSummary.user_id, ScoreSummary.scores_applied))).all())


async def run_consumer(db, client, stream, until, *, settings=CONSUMER, stats=None, name="c1", timeout=30, **kw):
    stats, stop = stats or Stats(), asyncio.Event()
    task = asyncio.create_task(event_consumer(
        db=db, redis_client=client, stream=stream, stop=stop, settings=settings, stats=stats, name=name, **kw
    ))
    try:
        await wait_until(until, timeout=timeout)
    finally:
        stop.set()
        await task
    return stats


async def group_pending(client, stream) -> int:
    [group] = [g for g in await client.xinfo_groups(stream) if g["name"] == CONSUMER_GROUP]
    return group["pending"]


def good_fields(user: str) -> dict[str, str]:
    return {
        "event_id": new_id(), "event_type": "AIRScoreCalculated", "aggregate_type": "User", "aggregate_id": user,
        "created_at": "2026-01-01T00:00:00+00:00", "payload": json.dumps({"score_id": new_id(), "air_score": 50.0}),
    }


# --- poison entries -----------------------------------------------------------------------


async def test_poison_entries_are_dead_lettered_after_n_deliveries_and_every_good_entry_is_applied(
    db, redis_client, stream
):
    users = await make_users(db, 3)
    good = await add_events(db, users=users, count=20)
    # An outbox row without score_id, published in the same relay batch as 19 good ones.
    no_score = await add_events(db, users=users[:1], count=1)
    good += await add_events(db, users=users, count=19)
    async with db.sessions.begin() as session:
        from source import DomainEvent

        (await session.get(DomainEvent, no_score[0])).payload = {"air_score": 1.0}
    await drain(db, redis_client, stream)
    assert await redis_client.xlen(stream) == 40  # one relay batch of 40
    # Entries no relay writes but a stream can hold: each kind of poison, between good entries.
    poisons = []
    for change in (
        {"payload": "not json"},
        {"payload": json.dumps({"score_id": new_id(), "air_score": "high"})},
        {"created_at": "yesterday"},
        {"event_id": "x" * 80},
        {"event_id": None},
    ):
        fields = {k: v for k, v in {**good_fields(users[0]), **change}.items() if v is not None}
        poisons.append(await redis_client.xadd(stream, fields))
        good_entry = good_fields(users[1])
        await redis_client.xadd(stream, good_entry)
        good.append(good_entry["event_id"])

    dead = dead_letter_key(stream)
    stats = await run_consumer(db, redis_client, stream, lambda: _settled(redis_client, stream, dead, 6))

    assert await applied_ids(db) == set(good)  # every good entry applied, poison or not beside it
    assert sum((await applied_per_user(db)).values()) == len(good)
    letters = await redis_client.xrange(dead)
    assert [f["dead_stream_id"] for _, f in letters if f["dead_stream_id"] in poisons] == poisons
    assert {f["dead_deliveries"] for _, f in letters} == {"3"}  # read once, claimed twice
    errors = {f.get("event_id", "-"): f["dead_error"] for _, f in letters}
    assert any("score_id missing" in e for e in errors.values())
    assert any("air_score is not a number" in e for e in errors.values())
    assert any("unreadable payload" in e for e in errors.values())
    assert any("event_id missing or not an ID" in e for e in errors.values())
    assert await group_pending(redis_client, stream) == 0  # all acknowledged, the dead ones too
    figures = stats.snapshot()
    assert figures.dead_lettered == 6 and figures.claimed == 12  # 6 entries, each claimed twice
    assert figures.applied == len(good) and "not applied" in figures.consumer_error


async def _settled(client, stream, dead, dead_count) -> bool:
    return (await client.exists(dead) and await client.xlen(dead) == dead_count
            and await group_pending(client, stream) == 0)


async def test_a_dead_letter_replayed_once_the_consumer_is_fixed_is_applied_once(db, redis_client, stream, monkeypatch):
    users = await make_users(db, 1)
    [event_id] = await add_events(db, users=users, count=1)
    await drain(db, redis_client, stream)
    from source import consumer

    def broken(fields):
        raise consumer.PoisonEntry("a consumer bug")

    fixed = consumer.parse_score_event
    monkeypatch.setattr(consumer, "parse_score_event", broken)
    dead = dead_letter_key(stream)
    await run_consumer(db, redis_client, stream, lambda: _settled(redis_client, stream, dead, 1))
    assert await applied_ids(db) == set()
    [(dead_id, fields)] = await redis_client.xrange(dead)
    assert fields["event_id"] == event_id and "a consumer bug" in fields["dead_error"]

    monkeypatch.setattr(consumer, "parse_score_event", fixed)
    new_id_ = await replay_dead_letter(redis_client, stream=stream, dead_id=dead_id)
    assert new_id_ and await redis_client.xlen(dead) == 0
    assert await replay_dead_letter(redis_client, stream=stream, dead_id=dead_id) is None  # once only
    await run_consumer(db, redis_client, stream, lambda: _applied_count(db, 1))
    assert await applied_per_user(db) == {users[0]: 1}
    [(_, replayed)] = await redis_client.xrange(stream, min=new_id_, max=new_id_)
    assert not any(k.startswith("dead_") for k in replayed)


async def _applied_count(db, n) -> bool:
    return len(await applied_ids(db)) == n


async def test_idle_consumers_with_nothing_pending_are_removed_at_start(db, redis_client, stream):
    users = await make_users(db, 1)
    await add_events(db, users=users, count=1)
    await drain(db, redis_client, stream)
    await ensure_group(redis_client, stream=stream)
    await redis_client.xreadgroup(CONSUMER_GROUP, "holder", {stream: ">"}, count=1)  # holds the entry
    for dead in ("dead-1", "dead-2"):  # earlier runs that hold nothing now and died
        assert await redis_client.xgroup_createconsumer(stream, CONSUMER_GROUP, dead) == 1
    await asyncio.sleep(0.3)
    settings = ConsumerSettings(block=0.05, claim_min_idle=30, claim_interval=30, forget_idle_after=0.2)
    stats = Stats()

    async def started() -> bool:
        return stats.snapshot().consumer_name != "" and stats.snapshot().consumers_removed == 2

    await run_consumer(db, redis_client, stream, started, settings=settings, stats=stats, name="fresh")
    names = Counter(c["name"] for c in await redis_client.xinfo_consumers(stream, CONSUMER_GROUP))
    assert "holder" in names and not {"dead-1", "dead-2"} & set(names)  # the one holding an entry stays
