"""Section 5 on SQLite + fakeredis and on PostgreSQL + Redis: the outbox write is atomic, the
relay publishes every event (in order per aggregate, never twice from two relays), retries with
back-off and parks what keeps failing, and the consumer applies each event exactly once, even
with the broker failing and the relay crashing between append and mark."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from labbench.faults import Faults, FaultyBroker, LabPublisher
from labbench.outbox_view import outbox_overview
from source import (
    AIRScore,
    ConsumerSettings,
    DomainEvent,
    InboxEntry,
    RelaySettings,
    ScoreSummary,
    UserRepository,
    calculate_and_store_airscore,
    event_publisher,
    make_redis_client,
    retry_failed_events,
)
from source.consumer import CONSUMER_GROUP, ensure_group, event_consumer
from source.event_repository import DomainEventRepository
from source.inbox import apply_entries
from source.models import new_id
from source.outbox import relay_batch
from source.outbox_claims import ANY_ORDER
from source.outbox_stats import Stats

FAST = RelaySettings(
    poll_interval=0.02, notify_fallback_poll=0.5, backoff_base=0.005, backoff_max=0.05, max_attempts=50,
)
FAST_CONSUMER = ConsumerSettings(block=0.05, claim_min_idle=0.2, claim_interval=0.1)


@pytest.fixture
def redis_kind(backend):
    """Pairs each database with its Redis: SQLite with fakeredis, PostgreSQL with the server."""
    return "fakeredis" if backend == "sqlite" else "redis"


async def make_users(db, n: int) -> list[str]:
    async with db.sessions.begin() as session:
        repo = UserRepository(session)
        users = [await repo.create(email=f"u{i}-{new_id()[:6]}@example.com", name=f"User {i}") for i in range(n)]
    return [u.id for u in users]


async def add_events(db, *, users: list[str], count: int, per_transaction: int = 50) -> list[str]:
    """Outbox rows as the write side would commit them, many per transaction (fast)."""
    ids = []
    for start in range(0, count, per_transaction):
        async with db.sessions.begin() as session:
            events = [
                DomainEvent(id=new_id(), event_type="AIRScoreCalculated", aggregate_type="User",
                            aggregate_id=users[i % len(users)],
                            payload={"score_id": new_id(), "user_id": users[i % len(users)], "air_score": float(i % 100)})
                for i in range(start, min(start + per_transaction, count))
            ]
            await DomainEventRepository(session).add_all(events)
            ids += [event.id for event in events]
    return ids


async def scalar(db, statement):
    async with db.sessions() as session:
        return await session.scalar(statement)


async def status_counts(db) -> Counter:
    async with db.sessions() as session:
        return Counter(dict((await session.execute(
            select(DomainEvent.status, func.count()).group_by(DomainEvent.status)
        )).all()))


async def stream_event_ids(client, stream) -> list[str]:
    return [fields["event_id"] for _, fields in await client.xrange(stream)]


async def drain(db, client, stream, *, settings=FAST, faults=None, rounds=500) -> None:
    """Run relay cycles until no pending event is left (retries included)."""
    for _ in range(rounds):
        if (await status_counts(db))["pending"] == 0:
            return
        broker = client if faults is None else FaultyBroker(client, faults)
        await relay_batch(db=db, redis_client=broker, stream=stream, settings=settings)
        await asyncio.sleep(0.005)
    raise AssertionError("events still pending")


async def wait_until(condition, *, timeout: float = 60.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not reached in time")


# --- the outbox write ---------------------------------------------------------------------


async def test_a_failing_event_insert_rolls_back_the_score_too(db):
    (user,) = await make_users(db, 1)

    def refuse(*_args):
        raise RuntimeError("the event row could not be written")

    sa_event.listen(DomainEvent, "before_insert", refuse)
    try:
        with pytest.raises(RuntimeError):
            await calculate_and_store_airscore(sessions=db.sessions, user_id=user, occupation_code="X")
    finally:
        sa_event.remove(DomainEvent, "before_insert", refuse)
    assert await scalar(db, select(func.count()).select_from(AIRScore)) == 0
    assert await scalar(db, select(func.count()).select_from(DomainEvent)) == 0


async def test_the_relay_never_sees_an_event_whose_score_is_not_committed(db, redis_client, stream):
    (user,) = await make_users(db, 1)
    async with db.sessions() as session:
        session.add(AIRScore(
            user_id=user, occupation_code="X", air_score=1, vr_score=1, hr_score=1, synergy_score=1,
            ci_lower=0, ci_upper=2, parameter_version="v", calculation_metadata={},
        ))
        await DomainEventRepository(session).add(
            DomainEvent(event_type="AIRScoreCalculated", aggregate_type="User", aggregate_id=user, payload={}))
        await session.flush()  # sent, not committed
        relay = asyncio.create_task(relay_batch(db=db, redis_client=redis_client, stream=stream, settings=FAST))
        await asyncio.sleep(0.2)  # PostgreSQL: the relay saw nothing; SQLite: it waits for the write lock
        await session.rollback()
        result = await relay
    assert result.claimed == 0
    assert await redis_client.exists(stream) == 0
    assert await scalar(db, select(func.count()).select_from(DomainEvent)) == 0


# --- the relay ----------------------------------------------------------------------------


async def test_relay_appends_events_with_their_fields_and_marks_them_published(db, redis_client, stream):
    (user,) = await make_users(db, 1)
    score, event = await calculate_and_store_airscore(sessions=db.sessions, user_id=user, occupation_code="AI")
    result = await relay_batch(db=db, redis_client=redis_client, stream=stream, settings=FAST)
    assert (result.claimed, result.published) == (1, 1)
    [(_, fields)] = await redis_client.xrange(stream)
    assert fields["event_id"] == event.id and fields["event_type"] == "AIRScoreCalculated"
    assert (fields["aggregate_type"], fields["aggregate_id"]) == ("User", user)
    assert json.loads(fields["payload"])["score_id"] == score.id
    assert await status_counts(db) == Counter(published=1)
    assert (await relay_batch(db=db, redis_client=redis_client, stream=stream, settings=FAST)).claimed == 0


async def test_broker_refusals_back_off_then_park_the_event_as_failed_until_retried(db, redis_client, stream):
    users = await make_users(db, 1)
    [event_id] = await add_events(db, users=users, count=1)
    faults = Faults()
    faults.broker_refusing = True  # an error reply: the only kind of failure that parks
    # Retries 0.5 to 1 s later: enough for the next cycle to come first on a loaded machine (it may renew
    # the relay's leases first).
    settings = RelaySettings(backoff_base=1.0, backoff_max=1.0, max_attempts=3)
    for attempt in (1, 2):
        result = await relay_batch(db=db, redis_client=FaultyBroker(redis_client, faults), stream=stream, settings=settings)
        assert result.retried == 1
        async with db.sessions() as session:
            stored = await session.get(DomainEvent, event_id)
        assert (stored.status, stored.attempts) == ("pending", attempt)
        assert stored.last_error.startswith("refused: ResponseError: OOM")
        assert stored.next_attempt_at > stored.created_at
        # Not due yet: the next cycle leaves it alone.
        assert (await relay_batch(db=db, redis_client=redis_client, stream=stream, settings=settings)).claimed == 0
        await asyncio.sleep(1.0)
    result = await relay_batch(db=db, redis_client=FaultyBroker(redis_client, faults), stream=stream, settings=settings)
    assert result.failed == 1 and await status_counts(db) == Counter(failed=1)
    assert await redis_client.exists(stream) == 0

    assert await retry_failed_events(db=db) == 1
    faults.broker_refusing = False
    assert (await relay_batch(db=db, redis_client=redis_client, stream=stream, settings=settings)).published == 1
    assert await stream_event_ids(redis_client, stream) == [event_id]


async def test_one_relay_keeps_each_aggregates_commit_order_through_retries(db, redis_client, stream):
    users = await make_users(db, 3)
    faults = Faults(broker_failure_rate=0.5, seed=7)
    stop = asyncio.Event()
    relay = asyncio.create_task(event_publisher(
        db=db, redis_client=FaultyBroker(redis_client, faults), stream=stream, stop=stop, settings=FAST
    ))
    committed: dict[str, list[str]] = {u: [] for u in users}
    rng = random.Random(1)
    try:
        for _ in range(45):  # one commit after another, while the relay runs and the broker flaps
            user = rng.choice(users)
            _, event = await calculate_and_store_airscore(sessions=db.sessions, user_id=user, occupation_code="X")
            committed[user].append(event.id)
        await wait_until(lambda: _none_pending(db))
    finally:
        stop.set()
        await relay
    delivered = await redis_client.xrange(stream)
    for user, ids in committed.items():
        assert [f["event_id"] for _, f in delivered if f["aggregate_id"] == user] == ids
    async with db.sessions() as session:
        assert await session.scalar(select(func.max(DomainEvent.attempts))) > 0  # retries did happen


async def _none_pending(db) -> bool:
    return (await status_counts(db))["pending"] == 0


async def test_two_any_order_relays_publish_no_event_twice_and_share_the_work(db, db_url, redis_client, stream):
    """SKIP LOCKED alone: each relay skips the rows the other holds. (With the ordered claim one relay
    may hold all 5 users at once and the other wait; tests/test_outbox_order.py covers that design.)"""
    from source import Database

    users = await make_users(db, 5)
    ids = await add_events(db, users=users, count=1000, per_transaction=200)
    other = Database(db_url)  # a second process: its own engine and connections
    stop = asyncio.Event()
    settings = RelaySettings(batch_size=50, poll_interval=0.01, notify_fallback_poll=0.2, design=ANY_ORDER)
    stats = [Stats(), Stats()]
    relays = [
        asyncio.create_task(event_publisher(db=d, redis_client=redis_client, stream=stream, stop=stop, settings=settings, stats=s))
        for d, s in zip((db, other), stats, strict=True)
    ]
    try:
        await wait_until(lambda: _none_pending(db))
    finally:
        stop.set()
        await asyncio.gather(*relays)
        await other.dispose()
    published = await stream_event_ids(redis_client, stream)
    assert sorted(published) == sorted(ids)  # every event once: none lost, none twice
    assert sum(s.snapshot().published for s in stats) == 1000
    if db.backend == "postgresql":  # concurrently, each skipping the rows the other holds
        assert all(s.snapshot().published > 0 for s in stats)


async def test_relay_wakes_on_notify_at_commit_on_postgresql_and_polls_on_sqlite(db, redis_client, stream):
    (user,) = await make_users(db, 1)
    settings = RelaySettings(poll_interval=0.05, notify_fallback_poll=30.0)  # a NOTIFY or nothing
    stats, stop = Stats(), asyncio.Event()
    relay = asyncio.create_task(event_publisher(
        db=db, redis_client=redis_client, stream=stream, stop=stop, settings=settings, stats=stats
    ))
    try:
        await asyncio.sleep(0.3)  # the relay is idle, listening (or polling)
        await calculate_and_store_airscore(sessions=db.sessions, user_id=user, occupation_code="X")
        started = time.monotonic()
        await wait_until(lambda: _none_pending(db), timeout=10)
        waited = time.monotonic() - started
    finally:
        stop.set()
        await relay
    snapshot = stats.snapshot()
    if db.backend == "postgresql":
        assert "LISTEN/NOTIFY" in snapshot.wake_mode
        assert snapshot.notify_wakeups >= 1 and waited < 5  # far sooner than the 30 s poll
    else:
        assert snapshot.wake_mode == "a poll every 0.05 s"
    assert snapshot.published == 1


# --- the consumer -------------------------------------------------------------------------


async def test_consumer_applies_a_repeated_event_once_and_counts_the_duplicate(db):
    (user,) = await make_users(db, 1)
    text = {
        "event_id": new_id(), "event_type": "AIRScoreCalculated", "aggregate_type": "User", "aggregate_id": user,
        "sequence": "1", "created_at": "2026-01-01T00:00:00+00:00",
        "payload": json.dumps({"score_id": new_id(), "air_score": 70.0}),
    }
    fields = {name.encode(): value.encode() for name, value in text.items()}  # as the consumer reads them
    first = await apply_entries(db=db, entries=[("1-0", fields), ("2-0", fields)])
    again = await apply_entries(db=db, entries=[("3-0", fields)])
    assert (first.applied, first.duplicates, again.applied, again.duplicates) == (1, 1, 0, 1)
    async with db.sessions() as session:
        summary = await session.get(ScoreSummary, user)
        inbox = await session.get(InboxEntry, text["event_id"])
    assert summary.scores_applied == 1 and summary.latest_air_score == 70.0
    assert (inbox.deliveries, inbox.stream_id) == (3, "1-0")


async def test_consumer_takes_over_entries_a_dead_consumer_left_unacknowledged(db, redis_client, stream):
    users = await make_users(db, 2)
    ids = await add_events(db, users=users, count=5)
    await drain(db, redis_client, stream)
    await ensure_group(redis_client, stream=stream)
    read = await redis_client.xreadgroup(CONSUMER_GROUP, "dead-consumer", {stream: ">"}, count=10)
    assert len(read[0][1]) == 5  # read, never applied or acknowledged: then it died

    stats, stop = Stats(), asyncio.Event()
    consumer = asyncio.create_task(event_consumer(
        db=db, redis_client=redis_client, stream=stream, stop=stop, settings=FAST_CONSUMER, stats=stats, name="survivor"
    ))
    try:
        await wait_until(lambda: _applied(db, 5), timeout=10)
        await wait_until(lambda: _consumer_caught_up(redis_client, stream), timeout=5)
    finally:
        stop.set()
        await consumer
    assert stats.snapshot().claimed == 5
    async with db.sessions() as session:
        assert set(await session.scalars(select(InboxEntry.event_id))) == set(ids)


async def _applied(db, n: int) -> bool:
    return await scalar(db, select(func.count()).select_from(InboxEntry)) == n


async def _consumer_caught_up(client, stream) -> bool:
    """Every entry delivered to the group and acknowledged."""
    [group] = await client.xinfo_groups(stream)
    last = (await client.xinfo_stream(stream))["last-generated-id"]
    return group["pending"] == 0 and group["last-delivered-id"] == last


# --- the publisher thread -----------------------------------------------------------------


def _publisher(db_url, redis_target, stream, **kwargs) -> LabPublisher:
    return LabPublisher(database_url=db_url, redis_target=redis_target, stream=stream, **kwargs)


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lab2-outbox-publisher" and t.is_alive()]


async def test_starting_twice_runs_one_thread_and_stop_ends_it_within_a_second(
    db, db_url, redis_target, redis_client, embedded_server, stream
):  # redis_client: its teardown deletes the stream and group the publisher made
    publisher = _publisher(db_url, redis_target, stream)  # the app's settings: 0.25 s blocking reads
    try:
        assert publisher.start() is True
        assert publisher.start() is False
        assert len(_threads()) == 1 and publisher.snapshot().running
        await asyncio.sleep(0.3)  # let it reach its blocking read and its wait
        started = time.monotonic()
        assert publisher.stop() is True
        assert time.monotonic() - started < 1.0
        assert _threads() == [] and not publisher.snapshot().running
        assert publisher.start() is True  # and it can start again
    finally:
        publisher.stop()
    assert _threads() == []


async def test_no_event_is_lost_or_applied_twice_under_broker_failures_and_relay_crashes(
    db, db_url, redis_target, redis_client, embedded_server, stream
):
    users = await make_users(db, 20)
    faults = Faults(broker_failure_rate=0.3, crash_rate=0.2, seed=42)
    publisher = _publisher(db_url, redis_target, stream, settings=FAST, consumer_settings=FAST_CONSUMER, faults=faults)
    publisher.start()
    try:
        ids = await add_events(db, users=users, count=1200, per_transaction=40)  # written while it runs
        await wait_until(lambda: _applied(db, len(ids)), timeout=90)
        await wait_until(lambda: _none_pending(db), timeout=30)  # a crashed batch is appended again
        await wait_until(lambda: _consumer_caught_up(redis_client, stream), timeout=10)
    finally:
        assert publisher.stop()
    figures = publisher.snapshot()  # read from this thread, written by the publisher's

    assert await status_counts(db) == Counter(published=len(ids))
    async with db.sessions() as session:
        assert set(await session.scalars(select(InboxEntry.event_id))) == set(ids)
        applied = dict((await session.execute(select(ScoreSummary.user_id, ScoreSummary.scores_applied))).all())
        deliveries = await session.scalar(select(func.sum(InboxEntry.deliveries)))
    assert applied == Counter(users[i % len(users)] for i in range(len(ids)))  # the effect, once per event
    assert faults.crashes > 0 and figures.retries_scheduled > 0  # the faults really happened
    appended = await stream_event_ids(redis_client, stream)
    assert len(appended) > len(ids) and set(appended) == set(ids)  # crashes appended some twice
    assert figures.duplicates == deliveries - len(ids) == len(appended) - len(ids) > 0
    assert figures.applied == len(ids) and figures.published == len(ids)


async def test_overview_counts_what_each_stage_has_seen(db, db_url, redis_target, redis_client, embedded_server, stream):
    users = await make_users(db, 2)
    ids = await add_events(db, users=users, count=6)
    publisher = _publisher(db_url, redis_target, stream, settings=FAST)
    publisher.start()
    try:
        await wait_until(lambda: _applied(db, 6), timeout=20)
        await wait_until(lambda: _consumer_caught_up(redis_client, stream), timeout=5)
    finally:
        publisher.stop()
    overview = await outbox_overview(db=db, redis_client=redis_client, stream=stream)
    assert (overview.created, overview.pending, overview.published, overview.failed) == (6, 0, 6, 0)
    assert (overview.appended, overview.delivered, overview.applied, overview.duplicates) == (6, 6, 6, 0)
    assert overview.consumer_pending == 0
    assert {row["event"] for row in overview.events} == {i[:8] for i in ids}
    assert sum(row["scores applied"] for row in overview.read_model) == 6


async def test_the_broker_fault_refuses_only_the_relays_publish_path(db, redis_target, fake_server, stream):
    """Switching the fault on leaves every other client of the same Redis working."""
    faults = Faults()
    faults.broker_down = True
    client = make_redis_client(redis_target, fake_server=fake_server, timeout=1.0)
    try:
        users = await make_users(db, 1)
        await add_events(db, users=users, count=1)
        result = await relay_batch(db=db, redis_client=FaultyBroker(client, faults), stream=stream, settings=FAST)
        assert result.retried == 1
        assert await client.ping()
    finally:
        await client.aclose()
