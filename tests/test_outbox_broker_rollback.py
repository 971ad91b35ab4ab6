"""A broker that comes back with less than it acknowledged: Redis restarted from an RDB snapshot older
than its last appends brings the stream and the group back as they were then, so the lost entries
look missing to nobody. The relay records each event's entry ID; reconcile.py finds the published,
unapplied events whose entries are gone and sends them again, and the inbox drops any repeat."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from harness.private_redis import RestartableRedis
from labbench.faults import LabPublisher
from source import DomainEvent, RelaySettings
from source.inbox import apply_entries
from source.models import new_id
from source.reconcile import ReconcileSettings, missing_from_stream, reconcile
from source.redis_setup import RedisTarget
from source.retention import RetentionSettings
from tests.test_outbox import add_events, drain, make_users, status_counts, wait_until
from tests.test_outbox_faults import CONSUMER, _applied_count, applied_ids, applied_per_user, run_consumer

FAST_CHECKS = ReconcileSettings(interval=0.3)


@pytest.fixture
def redis_kind(backend):
    """Pairs each database with its Redis: SQLite with fakeredis, PostgreSQL with the server."""
    return "fakeredis" if backend == "sqlite" else "redis"


async def test_entries_gone_from_the_stream_are_sent_again_and_applied_once(db, redis_client, stream):
    """Both pairs: entries removed from under the group (as a rollback leaves it: the group intact,
    no pending entry, no lag) are found by their recorded IDs, and only those are sent again;
    applied events and dead letters are left alone."""
    users = await make_users(db, 4)
    ids = await add_events(db, users=users, count=40)
    await drain(db, redis_client, stream)
    await run_consumer(db, redis_client, stream, lambda: _applied_count(db, 40))
    later = await add_events(db, users=users, count=30)
    await drain(db, redis_client, stream)  # published, the consumer away: not applied
    async with db.sessions() as session:
        recorded = dict((await session.execute(
            select(DomainEvent.id, DomainEvent.stream_id).where(DomainEvent.id.in_(ids + later)))).all())
    lost = later[:20]
    await redis_client.xdel(stream, *[recorded[i] for i in lost + ids[:10]])  # ten applied ones too
    assert sorted(await missing_from_stream(db=db, redis_client=redis_client, stream=stream, keep_for=3600)) == sorted(lost)
    assert await reconcile(db=db, redis_client=redis_client, stream=stream, keep_for=3600) == 20
    assert (await status_counts(db))["pending"] == 20
    assert await reconcile(db=db, redis_client=redis_client, stream=stream, keep_for=3600) == 0  # nothing twice
    await drain(db, redis_client, stream)
    await run_consumer(db, redis_client, stream, lambda: _applied_count(db, 70))
    assert await applied_ids(db) == set(ids + later)
    assert sum((await applied_per_user(db)).values()) == 70  # each once
    assert await reconcile(db=db, redis_client=redis_client, stream=stream, keep_for=3600) == 0


async def test_events_past_the_retention_window_are_never_sent_again(db, redis_client, stream):
    users = await make_users(db, 2)
    await add_events(db, users=users, count=10)
    await drain(db, redis_client, stream)
    await redis_client.delete(stream)  # lost, but published more than keep_for - margin ago
    assert await reconcile(db=db, redis_client=redis_client, stream=stream, keep_for=60, margin=60) == 0
    assert await reconcile(db=db, redis_client=redis_client, stream=stream, keep_for=3600) == 10


async def test_a_user_gap_and_a_late_event_are_counted_and_applied_without_waiting(db):
    """Sequence 1, then 3 (a gap: 2 is missing), then 2 arriving late: all three applied, the read
    model's latest is number 3, one gap and one late event counted."""
    (user,) = await make_users(db, 1)

    def entry(number: int, score: float) -> tuple[str, dict]:
        text = {"event_id": new_id(), "event_type": "AIRScoreCalculated", "aggregate_type": "User",
                "aggregate_id": user, "sequence": str(number), "created_at": "2026-01-01T00:00:00+00:00",
                "payload": f'{{"score_id": "{new_id()}", "air_score": {score}}}'}
        return f"{number}-0", {k.encode(): v.encode() for k, v in text.items()}

    first = await apply_entries(db=db, entries=[entry(1, 10.0), entry(3, 30.0)])
    late = await apply_entries(db=db, entries=[entry(2, 20.0)])
    assert (first.applied, first.gaps, first.late) == (2, 1, 0)
    assert (late.applied, late.gaps, late.late) == (1, 0, 1)
    from source.models import ScoreSummary

    async with db.sessions() as session:
        summary = await session.get(ScoreSummary, user)
    assert (summary.scores_applied, summary.latest_sequence, summary.latest_air_score) == (3, 3, 30.0)


@pytest.mark.parametrize("backend", ["postgresql"])  # a real redis-server, restarted from its snapshot
async def test_redis_restarted_from_an_older_snapshot_loses_no_event(db, db_url, key_prefix):
    """A private redis-server with snapshots: 300 events applied, a snapshot taken, 400 more
    published while the consumer lags (100 of them applied), Redis SIGKILLed and started again from
    the snapshot, 50 new events written: every event applied once."""
    server = RestartableRedis("--save", "3600 1")
    server.start()
    target, stream = RedisTarget("server", server.url, "private", server.url), f"{key_prefix}domain-events"
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    publisher = LabPublisher(database_url=db_url, redis_target=target, stream=stream,
                             settings=RelaySettings(notify_fallback_poll=0.2), consumer_settings=CONSUMER,
                             reconcile=FAST_CHECKS, retention=RetentionSettings(interval=3600))
    try:
        users = await make_users(db, 10)
        ids = await add_events(db, users=users, count=300)
        publisher.start()
        await wait_until(lambda: _applied_count(db, 300), timeout=30)
        assert publisher.stop()
        await client.save()  # the snapshot the server will come back with
        after = await add_events(db, users=users, count=400)
        await drain(db, client, stream)
        await run_consumer(db, client, stream, lambda: _applied_at_least(db, 400), timeout=30)  # some of them
        unapplied = 700 - len(await applied_ids(db))
        assert (await status_counts(db))["published"] == 700 and unapplied >= 200

        server.kill()
        await client.aclose()
        server.start()  # from dump.rdb: 300 entries, the group as it was at the snapshot
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        assert await client.xlen(stream) == 300
        [group] = await client.xinfo_groups(stream)
        assert (group["pending"], group["lag"]) == (0, 0)  # nothing looks missing to the group
        restarted = time.monotonic()
        new = await add_events(db, users=users, count=50)
        publisher.start()
        await wait_until(lambda: _applied_count(db, 750), timeout=60)
        came_back = time.monotonic() - restarted
        await asyncio.sleep(0.5)  # would a repeat be applied?
        assert publisher.stop()
        print(f"\nevery event applied {came_back:.2f} s after Redis came back from its snapshot "
              f"({unapplied} lost and unapplied, checks every {FAST_CHECKS.interval:g} s)")
    finally:
        publisher.stop()
        await client.aclose()
        server.close()
    assert await applied_ids(db) == set(ids + after + new)
    assert await applied_per_user(db) == Counter(users[i % 10] for i in range(300)) + Counter(
        users[i % 10] for i in range(400)) + Counter(users[i % 10] for i in range(50))
    snapshot = publisher.snapshot()
    assert snapshot.resent >= unapplied and snapshot.dead_lettered == 0
    assert await status_counts(db) == Counter(published=750)


async def _applied_at_least(db, n) -> bool:
    return len(await applied_ids(db)) >= n
