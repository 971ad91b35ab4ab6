"""Section 5 under the faults a production engineer would try, on SQLite + fakeredis and on
PostgreSQL + Redis: poison entries, a broker that forgets its stream, a parked event and its
user's later events, a long outage, a hung broker, retention, and a relay SIGKILLed mid-batch."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select, text

from labbench import outbox_health
from labbench.faults import Faults, FaultyBroker, LabPublisher
from source import (
    Database,
    DomainEvent,
    InboxEntry,
    RelaySettings,
    ScoreSummary,
    event_publisher,
    retry_failed_events,
)
from source.consumer import (
    CONSUMER_GROUP,
    ConsumerSettings,
    dead_letter_key,
    ensure_group,
    event_consumer,
    read_raw,
    replay_dead_letter,
)
from source.failed_events import discard_failed_events
from source.models import new_id
from source.outbox import relay_batch, relay_database, stream_key
from source.outbox_stats import Stats
from source.reconcile import resend_unapplied
from source.retention import RetentionSettings, prune_tables, trim_stream
from tests.conftest import need
from tests.test_outbox import add_events, drain, make_users, status_counts, wait_until

REPO = pathlib.Path(__file__).resolve().parent.parent
CONSUMER = ConsumerSettings(block=0.05, claim_min_idle=0.2, claim_interval=0.1, max_deliveries=3)


@pytest.fixture
def redis_kind(backend):
    """Pairs each database with its Redis: SQLite with fakeredis, PostgreSQL with the server."""
    return "fakeredis" if backend == "sqlite" else "redis"


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


def good_fields(user: str, sequence: int = 1) -> dict[str, str]:
    return {
        "event_id": new_id(), "event_type": "AIRScoreCalculated", "aggregate_type": "User", "aggregate_id": user,
        "sequence": str(sequence), "created_at": "2026-01-01T00:00:00+00:00",
        "payload": json.dumps({"score_id": new_id(), "air_score": 50.0}),
    }


IDENTIFIERS = ("event_id", "event_type", "aggregate_type", "aggregate_id")


def poison_changes() -> list[tuple[str, dict]]:
    """Every kind of entry a broken producer can leave in the stream, as (what it is, the fields it
    changes). `None` removes a field."""
    kinds = [(f"a NUL in {name}", {name: "bad\x00value"}) for name in IDENTIFIERS]
    kinds += [(f"bytes that are not UTF-8 in {name}", {name: b"\xff\xfe" + b"x"})
              for name in (*IDENTIFIERS, "sequence", "created_at", "payload")]
    kinds += [
        ("created_at before year 1 in UTC", {"created_at": "0001-01-01T00:00:00+14:00"}),
        ("created_at after year 9999 in UTC", {"created_at": "9999-12-31T23:59:59-14:00"}),
        ("created_at without a time zone", {"created_at": "2026-01-01T00:00:00"}),
        ("created_at that is no time", {"created_at": "yesterday"}),
        ("sequence 0", {"sequence": "0"}), ("sequence past 2^63", {"sequence": str(2**63)}),
        ("sequence that is no number", {"sequence": "1e3"}),
        ("a 1 MB payload", {"payload": json.dumps({"score_id": new_id(), "air_score": 50.0, "pad": "x" * 1_000_000})}),
        ("payload that is not JSON", {"payload": "not json"}),
        ("a NUL in score_id", {"payload": json.dumps({"score_id": "a\x00b", "air_score": 50.0})}),
        ("air_score that is no number", {"payload": json.dumps({"score_id": new_id(), "air_score": "high"})}),
        ("air_score NaN", {"payload": '{"score_id": "s", "air_score": NaN}'}),
        ("an 80-character event ID", {"event_id": "x" * 80}),
        ("no event_id", {"event_id": None}),
    ]
    return kinds


async def test_every_kind_of_poison_is_dead_lettered_after_n_deliveries_and_every_good_entry_is_applied(
    db, redis_client, stream
):
    users = await make_users(db, 3)
    good = await add_events(db, users=users, count=20)
    # An outbox row without score_id, published in the same relay batch as 19 good ones.
    no_score = await add_events(db, users=users[:1], count=1)
    good += await add_events(db, users=users, count=19)
    async with db.sessions.begin() as session:
        (await session.get(DomainEvent, no_score[0])).payload = {"air_score": 1.0}
    await drain(db, redis_client, stream)
    assert await redis_client.xlen(stream) == 40  # one relay batch of 40
    # Entries no relay writes but a stream can hold: each kind of poison, between good entries, so
    # that the consumer's batches of 10 each hold poisons and good entries.
    poisons, changes = [], poison_changes()
    for n, (_, change) in enumerate(changes):
        fields = {k: v for k, v in {**good_fields(users[0]), **change}.items() if v is not None}
        poisons.append(await redis_client.xadd(stream, fields))
        good_entry = good_fields(users[1 + n % 2], sequence=100 + n)
        await redis_client.xadd(stream, good_entry)
        good.append(good_entry["event_id"])

    dead, expected = dead_letter_key(stream), len(poisons) + 1
    settings = replace(CONSUMER, batch_size=10)
    stats = await run_consumer(db, redis_client, stream, lambda: _settled(redis_client, stream, dead, expected),
                               settings=settings, timeout=60)

    assert await applied_ids(db) == set(good)  # every good entry applied, poison or not beside it
    assert sum((await applied_per_user(db)).values()) == len(good)
    letters = await read_raw(redis_client, "XRANGE", dead, "-", "+")
    assert [f[b"dead_stream_id"].decode() for _, f in letters if f[b"dead_stream_id"].decode() in poisons] == poisons
    assert {f[b"dead_deliveries"] for _, f in letters} == {b"3"}  # read once, claimed twice
    kept = {f[b"dead_stream_id"].decode(): f for _, f in letters}
    for entry_id, (kind, change) in zip(poisons, changes, strict=True):
        for name, value in change.items():  # the dead letter keeps the bytes as they were
            raw = kept[entry_id].get(name.encode())
            assert raw == (None if value is None else value if isinstance(value, bytes) else value.encode()), kind
    assert await group_pending(redis_client, stream) == 0  # all acknowledged, the dead ones too
    figures = stats.snapshot()
    assert figures.dead_lettered == expected and figures.claimed == 2 * expected  # each claimed twice
    assert figures.applied == len(good) and "not applied" in figures.consumer_error


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has no statement timeout
async def test_a_statement_timeout_during_a_batch_dead_letters_nothing(db, redis_client, stream):
    """The database's fault is not the entry's: while the read model's table is locked, every
    batch's upsert hits the consumer's statement_timeout (SQLSTATE 57014); the batch is rolled back
    and delivered again, past max_deliveries, and once the lock goes every entry is applied and
    none is dead-lettered."""
    users = await make_users(db, 2)
    ids = await add_events(db, users=users, count=30)
    await drain(db, redis_client, stream)
    name = db.url.database
    async with db.engine.connect() as connection:
        await connection.execute(text(f'ALTER DATABASE "{name}" SET statement_timeout = 200'))
        await connection.commit()
    consumer_db = Database(db.url)  # its connections log in with the 200 ms timeout
    try:
        async with db.engine.connect() as locker:
            await locker.execute(text("LOCK TABLE score_summaries IN ACCESS EXCLUSIVE MODE"))
            stats = await run_consumer(consumer_db, redis_client, stream,
                                       lambda: _deliveries_at_least(redis_client, stream, CONSUMER.max_deliveries + 1))
            await locker.rollback()
        assert "statement timeout" in stats.snapshot().consumer_error
        stats = await run_consumer(consumer_db, redis_client, stream, lambda: _applied_count(db, 30), stats=stats)
    finally:
        await consumer_db.dispose()
        async with db.engine.connect() as connection:
            await connection.execute(text(f'ALTER DATABASE "{name}" RESET statement_timeout'))
            await connection.commit()
    assert await applied_ids(db) == set(ids)
    assert stats.snapshot().dead_lettered == 0 and not await redis_client.exists(dead_letter_key(stream))


async def _deliveries_at_least(client, stream, times: int) -> bool:
    if not any(group["name"] == CONSUMER_GROUP for group in await client.xinfo_groups(stream)):
        return False  # the consumer has not made its group yet
    pending = await client.xpending_range(stream, CONSUMER_GROUP, min="-", max="+", count=1)
    return bool(pending) and pending[0]["times_delivered"] >= times


async def _settled(client, stream, dead, dead_count) -> bool:
    return (await client.exists(dead) and await client.xlen(dead) == dead_count
            and await group_pending(client, stream) == 0)


async def test_a_dead_letter_replayed_once_the_consumer_is_fixed_is_applied_once(db, redis_client, stream, monkeypatch):
    users = await make_users(db, 1)
    [event_id] = await add_events(db, users=users, count=1)
    await drain(db, redis_client, stream)
    from source import inbox

    def broken(event):
        raise inbox.PoisonEntry("a consumer bug")

    fixed = inbox.parse_score
    monkeypatch.setattr(inbox, "parse_score", broken)
    dead = dead_letter_key(stream)
    await run_consumer(db, redis_client, stream, lambda: _settled(redis_client, stream, dead, 1))
    assert await applied_ids(db) == set()
    [(dead_id, fields)] = await redis_client.xrange(dead)
    assert fields["event_id"] == event_id and "a consumer bug" in fields["dead_error"]

    monkeypatch.setattr(inbox, "parse_score", fixed)
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


# --- order that holds ---------------------------------------------------------------------


async def statuses(db, ids) -> list[str]:
    async with db.sessions() as session:
        found = dict((await session.execute(select(DomainEvent.id, DomainEvent.status).where(DomainEvent.id.in_(ids)))).all())
    return [found[i] for i in ids]


@pytest.mark.parametrize("release", ["retry", "discard"])
async def test_a_parked_event_holds_its_users_later_events_until_retried_or_discarded(db, redis_client, stream, release):
    alex, jane = await make_users(db, 2)
    [first] = await add_events(db, users=[alex], count=1)
    faults = Faults()
    faults.broker_refusing = True
    settings = RelaySettings(max_attempts=1)
    assert (await relay_batch(db=db, redis_client=FaultyBroker(redis_client, faults), stream=stream,
                              settings=settings)).failed == 1
    faults.broker_refusing = False
    later = await add_events(db, users=[alex], count=2)
    [other] = await add_events(db, users=[jane], count=1)
    assert (await relay_batch(db=db, redis_client=redis_client, stream=stream, settings=settings)).published == 1
    assert await stream_ids(redis_client, stream) == [other]  # Jane's went; Alex's wait
    assert await statuses(db, [first, *later]) == ["failed", "pending", "pending"]
    [blocked] = await outbox_health.blocked_aggregates(db=db)
    assert (blocked["user"], blocked["blocking event"], blocked["events waiting behind it"]) == (
        alex[:8], f"{first[:8]} (no. 1)", 2)
    assert blocked["why"].startswith("parked as failed") and "refused" in blocked["last error"]

    if release == "retry":
        assert await retry_failed_events(db=db) == 1
        await drain(db, redis_client, stream)
        assert await stream_ids(redis_client, stream) == [other, first, *later]  # in commit order
    else:
        assert await discard_failed_events(db=db) == 1
        await drain(db, redis_client, stream)
        assert await stream_ids(redis_client, stream) == [other, *later]
        assert await statuses(db, [first]) == ["discarded"]
    assert await outbox_health.blocked_aggregates(db=db) == []


async def stream_ids(client, stream) -> list[str]:
    return [f["event_id"] for _, f in await client.xrange(stream)] if await client.exists(stream) else []


async def test_a_30_s_outage_drains_by_itself_with_none_parked_and_order_kept(db, redis_client, stream):
    """The app's own back-off (0.5 s doubling, capped at 10 s, 6 attempts): before, an outage
    longer than ~8 s parked events for good."""
    users = await make_users(db, 4)
    settings = RelaySettings(poll_interval=0.05, notify_fallback_poll=0.5)
    assert (settings.backoff_max, settings.max_attempts) == (10.0, 6)
    faults, stats, stop = Faults(), Stats(), asyncio.Event()
    faults.broker_down = True
    relay = asyncio.create_task(event_publisher(
        db=db, redis_client=FaultyBroker(redis_client, faults), stream=stream, stop=stop, settings=settings, stats=stats
    ))
    ids: list[str] = []
    try:
        outage_ends = time.monotonic() + 30
        while time.monotonic() < outage_ends:  # events keep coming during the outage
            ids += await add_events(db, users=users, count=4, per_transaction=4)
            await asyncio.sleep(1.0)
        faults.broker_down = False
        await wait_until(lambda: _counts_are(db, published=len(ids)), timeout=settings.backoff_max + 10)
    finally:
        stop.set()
        await relay
    assert (await status_counts(db))["failed"] == 0
    async with db.sessions() as session:
        assert await session.scalar(select(func.max(DomainEvent.attempts))) >= settings.max_attempts  # no parking
    published = await redis_client.xrange(stream)
    assert sorted(f["event_id"] for _, f in published) == sorted(ids)  # each once
    for user in users:
        # Each add_events call above wrote one event per user, in the order of `users`.
        assert [f["event_id"] for _, f in published if f["aggregate_id"] == user] == [
            i for n, i in enumerate(ids) if users[n % 4] == user
        ]
    assert stats.snapshot().failed == 0 and stats.snapshot().retries_scheduled > 0


async def _counts_are(db, **expected) -> bool:
    counts = await status_counts(db)
    return all(counts[k] == v for k, v in expected.items())


async def test_a_hung_broker_never_marks_a_delivered_event_failed(db, redis_client, stream):
    users = await make_users(db, 2)
    ids = await add_events(db, users=users, count=5)
    faults = Faults()
    faults.broker_hung = True  # Redis runs the XADDs; the relay's read of the replies times out
    settings = RelaySettings(max_attempts=1, backoff_base=0.01, backoff_max=0.02)
    result = await relay_batch(db=db, redis_client=FaultyBroker(redis_client, faults), stream=stream, settings=settings)
    assert (result.retried, result.failed) == (5, 0)  # unknown outcome: not refused, so never parked
    assert sorted(await stream_ids(redis_client, stream)) == sorted(ids)  # it was delivered
    async with db.sessions() as session:
        events = (await session.scalars(select(DomainEvent))).all()
    assert {e.status for e in events} == {"pending"}
    assert all(e.last_error.startswith("outcome unknown, sent again") for e in events)
    faults.broker_hung = False
    await asyncio.sleep(0.05)
    await drain(db, redis_client, stream, settings=settings)
    by_user = {user: [i for n, i in enumerate(ids) if users[n % 2] == user] for user in users}
    appended = [(f["aggregate_id"], f["event_id"]) for _, f in await redis_client.xrange(stream)]
    for user, theirs in by_user.items():  # sent again (at least once), each user's in order both times
        assert [event for who, event in appended if who == user] == theirs + theirs
    await run_consumer(db, redis_client, stream, lambda: _applied_count(db, 5))
    await wait_until(lambda: _group_idle(redis_client, stream))
    assert sum((await applied_per_user(db)).values()) == 5  # the repeats were no-ops
    assert await status_counts(db) == Counter(published=5)


async def _group_idle(client, stream) -> bool:
    [group] = [g for g in await client.xinfo_groups(stream) if g["name"] == CONSUMER_GROUP]
    return group["pending"] == 0 and group.get("lag") == 0


# --- no loss when the broker forgets ------------------------------------------------------


async def test_a_broker_that_restarts_empty_loses_no_event(
    db, db_url, redis_target, redis_client, embedded_server, stream, backend, monkeypatch
):
    users = await make_users(db, 5)
    settings = RelaySettings(poll_interval=0.02, notify_fallback_poll=0.5)
    publisher = LabPublisher(database_url=db_url, redis_target=redis_target, stream=stream,
                             settings=settings, consumer_settings=CONSUMER)
    ids = await add_events(db, users=users, count=100)
    publisher.start()
    try:
        await wait_until(lambda: _applied_count(db, 100))
    finally:
        assert publisher.stop()
    # The relay alone publishes 50 more (the consumer is away); then the broker loses everything.
    ids += await add_events(db, users=users, count=50)
    await drain(db, redis_client, stream)
    assert (await status_counts(db))["published"] == 150 and len(await applied_ids(db)) == 100
    if backend == "sqlite":  # the embedded Redis after a restart: a new, empty server
        monkeypatch.setattr("source.redis_setup.FAKE_SERVER", fakeredis.FakeServer())
    else:  # a Redis that keeps nothing across a restart (or FLUSHALL): our keys are gone
        await redis_client.delete(stream, dead_letter_key(stream))
    publisher.start()
    try:
        await wait_until(lambda: _applied_count(db, 150))
        await asyncio.sleep(0.3)  # would a repeat be applied?
    finally:
        assert publisher.stop()
    assert await applied_ids(db) == set(ids)
    assert await applied_per_user(db) == Counter(users[i % 5] for i in range(100)) + Counter(
        users[i % 5] for i in range(50))  # each event applied once
    assert publisher.snapshot().resent == 50 and await status_counts(db) == Counter(published=150)


async def test_a_stream_flushed_while_the_consumer_runs_loses_no_event(db, redis_client, stream):
    users = await make_users(db, 3)
    stats, stop, resent = Stats(), asyncio.Event(), []

    async def broker_forgot():
        resent.append(await resend_unapplied(db=db))

    consumer = asyncio.create_task(event_consumer(
        db=db, redis_client=redis_client, stream=stream, stop=stop, settings=CONSUMER, stats=stats,
        name="c1", on_group_created=broker_forgot,
    ))

    async def group_made_and_checked() -> bool:
        return len(resent) == 1

    try:
        # the group is made and the unapplied count taken before any event is written: on SQLite that
        # count can wait for the writer's lock and find the first 30 published by then
        await wait_until(group_made_and_checked)
        ids = await add_events(db, users=users, count=30)
        await drain(db, redis_client, stream)
        await wait_until(lambda: _applied_count(db, 30))
        assert resent == [0]  # it created the group at start: nothing was published unapplied then
        await redis_client.delete(stream)  # flushed: the stream and its group are gone ...
        ids += await add_events(db, users=users, count=30)
        await drain(db, redis_client, stream)  # ... and the relay's next appends make a new stream, no group
        await wait_until(lambda: _applied_count(db, 60))
    finally:
        stop.set()
        await consumer
    assert resent[0] == 0 and sum(resent) == 30 and await applied_ids(db) == set(ids)
    assert sum((await applied_per_user(db)).values()) == 60


# --- the database drops the relay's connections -------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has no server to drop a connection
async def test_a_relay_whose_database_connections_are_dropped_goes_on_and_loses_nothing(
    db, db_url, redis_client, stream
):
    """The server (a restart, a failover, an idle timeout) closes every connection to the database:
    the relay's pooled and LISTEN connections and the writer's. The relay, on an engine without the
    pool's pre-ping as the publisher runs it, reconnects by itself and publishes each event once, in
    order."""
    users = await make_users(db, 3)
    settings = RelaySettings(poll_interval=0.05, notify_fallback_poll=0.5)
    stats, stop = Stats(), asyncio.Event()
    relay_db = relay_database(db_url)
    relay = asyncio.create_task(event_publisher(
        db=relay_db, redis_client=redis_client, stream=stream, stop=stop, settings=settings, stats=stats
    ))
    ids: list[str] = []

    async def all_published() -> bool:
        return await _counts_are(db, published=len(ids))

    try:
        for _ in range(3):
            ids += await add_events(db, users=users, count=30, per_transaction=10)
            await wait_until(all_published, timeout=15)
            async with db.engine.connect() as admin:  # every other connection to this database
                dropped = await admin.scalar(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ))
            assert dropped >= 2  # at least the relay's pooled connection and its LISTEN connection
        ids += await add_events(db, users=users, count=30, per_transaction=10)
        await wait_until(all_published, timeout=15)
    finally:
        stop.set()
        await relay
        await relay_db.dispose()
    published = await stream_ids(redis_client, stream)
    assert sorted(published) == sorted(ids)  # each event once
    for k in range(3):  # add_events gives the users their events in turn: user k has ids[k::3]
        assert [i for i in published if i in ids[k::3]] == ids[k::3]
    # A batch on a dropped connection was claimed again at once on a new one: no cycle failed.
    assert stats.snapshot().last_error is None


# --- a relay process SIGKILLed mid-batch --------------------------------------------------


async def test_a_relay_process_sigkilled_mid_batch_loses_nothing_and_applies_nothing_twice(db, db_url, key_prefix):
    """A real child process, killed with SIGKILL after its pipeline appended a batch and before its
    transaction committed the mark. Both databases; Redis is the server (a child process cannot
    reach the in-process fakeredis)."""
    redis_url = need("LAB_TEST_REDIS_URL")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    stream = stream_key(key_prefix)
    try:
        users = await make_users(db, 10)
        ids = await add_events(db, users=users, count=600, per_transaction=100)
        command = [sys.executable, "-m", "labbench.relay_process", db_url, redis_url, stream, "--hold", "0.3"]
        kills = 0
        for _ in range(6):
            child = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, cwd=REPO)
            while not (line := await asyncio.wait_for(child.stdout.readline(), 30)).startswith(b"appended"):
                assert line, "the relay process ended"
            child.send_signal(signal.SIGKILL)  # appended, not yet marked published
            assert await child.wait() == -signal.SIGKILL
            kills += 1
        appended_before = await client.xlen(stream)
        assert appended_before == 50 * kills  # each killed batch reached the stream ...
        assert (await status_counts(db))["published"] == 0  # ... and none was marked published
        child = await asyncio.create_subprocess_exec(*command, "--hold", "0", stdout=asyncio.subprocess.DEVNULL, cwd=REPO)
        try:
            await wait_until(lambda: _counts_are(db, published=600), timeout=60)
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        await run_consumer(db, client, stream, lambda: _applied_count(db, 600), timeout=60)
        await wait_until(lambda: _group_idle(client, stream))
        assert await applied_ids(db) == set(ids)  # none lost
        assert await applied_per_user(db) == Counter(users[i % 10] for i in range(600))  # none applied twice
        async with db.sessions() as session:
            deliveries = await session.scalar(select(func.sum(InboxEntry.deliveries)))
        assert await client.xlen(stream) == deliveries == 600 + 50 * kills  # the repeats, dropped by the inbox
    finally:
        await client.delete(stream, dead_letter_key(stream))
        await client.aclose()


# --- retention ----------------------------------------------------------------------------


async def test_trimming_keeps_every_entry_a_group_has_not_acknowledged(db, redis_client, stream):
    users = await make_users(db, 2)
    await add_events(db, users=users, count=10)
    await drain(db, redis_client, stream)
    await ensure_group(redis_client, stream=stream)
    read = await redis_client.xreadgroup(CONSUMER_GROUP, "c1", {stream: ">"}, count=6)
    delivered = [entry_id for entry_id, _ in read[0][1]]
    await redis_client.xack(stream, CONSUMER_GROUP, *delivered[:3], delivered[4])  # 3rd of 6 left unacknowledged
    assert await trim_stream(redis_client=redis_client, stream=stream, keep_for=0) == 3  # the first 3 only
    remaining = [entry_id for entry_id, _ in await redis_client.xrange(stream)]
    assert remaining[0] == delivered[3] and len(remaining) == 7  # the pending one and all after it
    await redis_client.xack(stream, CONSUMER_GROUP, delivered[3], delivered[5])
    assert await trim_stream(redis_client=redis_client, stream=stream, keep_for=0) == 3
    assert len(await redis_client.xrange(stream)) == 4  # the 4 never delivered stay
    assert await trim_stream(redis_client=redis_client, stream=stream, keep_for=3600) == 0  # too young


async def test_an_inbox_row_outlives_its_outbox_row(db, redis_client, stream):
    users = await make_users(db, 1)
    await add_events(db, users=users, count=3)
    await drain(db, redis_client, stream)
    await run_consumer(db, redis_client, stream, lambda: _applied_count(db, 3))
    async with db.sessions.begin() as session:  # one event keeps its outbox row (say, published later)
        kept = (await session.scalars(select(DomainEvent).limit(1))).one()
        kept.published_at = datetime.now(UTC) + timedelta(hours=1)
    await asyncio.sleep(0.05)
    assert await prune_tables(db=db, keep_for=0) == (2, 2)
    assert await applied_ids(db) == {kept.id}
    assert await resend_unapplied(db=db) == 0  # so it is not sent again as "never applied"


async def test_retention_keeps_tables_and_stream_bounded_under_a_long_run(
    db, db_url, redis_target, redis_client, embedded_server, stream
):
    users = await make_users(db, 10)
    publisher = LabPublisher(
        database_url=db_url, redis_target=redis_target, stream=stream, consumer_settings=CONSUMER,
        settings=RelaySettings(poll_interval=0.02, notify_fallback_poll=0.5),
        retention=RetentionSettings(keep_for=0.5, interval=0.25),
    )
    sizes = []
    publisher.start()
    try:
        total = 0
        for _ in range(60):  # 600 events over about 6 s or more
            total += len(await add_events(db, users=users, count=10, per_transaction=10))
            await asyncio.sleep(0.1)
            sizes.append(await _sizes(db, redis_client, stream))
        await wait_until(lambda: _all_applied(publisher, total))
    finally:
        assert publisher.stop()
    figures = publisher.snapshot()
    late = sizes[20:]  # once the first events are older than keep_for
    assert max(s[0] for s in late) < 250 and max(s[1] for s in late) < 250 and max(s[2] for s in late) < 250
    assert figures.pruned_outbox > 300 and figures.pruned_inbox > 300 and figures.trimmed_entries > 300
    assert figures.applied == total and figures.duplicates == 0 and figures.retention_error is None
    assert sum((await applied_per_user(db)).values()) == total  # the read model kept every event, once


async def _sizes(db, client, stream) -> tuple[int, int, int]:
    async with db.sessions() as session:
        outbox = await session.scalar(select(func.count()).select_from(DomainEvent))
        inbox = await session.scalar(select(func.count()).select_from(InboxEntry))
    return outbox, inbox, await client.xlen(stream)


async def _all_applied(publisher, total) -> bool:
    return publisher.snapshot().applied == total
