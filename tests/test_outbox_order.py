"""Several relays at once: with the aggregate-order claim (the default) no user's events reach the
stream out of order; with the any-order claim on PostgreSQL they do; on SQLite the write lock makes
relays take turns, so neither design inverts. Inversions are counted as an outside observer would:
XRANGE the stream and compare each user's events with their sequence numbers (their commit order)."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select, text

from labbench.relay_race import STOP_AFTER, check_input, order_faults, race
from source import DomainEvent, RelaySettings
from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER, claim
from source.partitions import PARTITIONS, Partitions
from tests.conftest import need
from tests.test_outbox import add_events, make_users, status_counts, wait_until
from tests.test_outbox_faults import REPO


@pytest.fixture
def redis_kind(backend):
    """Pairs each database with its Redis: SQLite with fakeredis, PostgreSQL with the server."""
    return "fakeredis" if backend == "sqlite" else "redis"


async def _race(db_url, redis_target, fake_server, key_prefix, *, relays, design, events=10_000, users=5):
    return await race(database_url=db_url, redis_target=redis_target, fake_server=fake_server, relays=relays,
                      design=design, events=events, users=users, key_prefix=key_prefix)


# --- the observer's count -----------------------------------------------------------------


def test_a_repeat_is_a_duplicate_and_a_later_event_first_is_an_inversion():
    order = [("u", "1"), ("v", "2"), ("u", "3"), ("u", "4")]
    entry = [{"aggregate_id": a, "event_id": e} for a, e in order]
    assert order_faults(entry, order) == (0, 0, 0)
    assert order_faults(entry[:3] + entry[:3] + entry[3:], order) == (3, 0, 0)  # sent again after a crash
    assert order_faults([entry[0], entry[3], entry[1], entry[2]], order) == (0, 1, 0)  # 4 before 3
    assert order_faults([entry[2], entry[1]], order) == (0, 0, 2)


def test_out_of_range_input_gets_a_message_per_field():
    assert check_input(relays=2, events=10_000, users=5) == {}
    assert set(check_input(relays=0, events=50, users=5000)) == {"relays", "events", "users"}


# --- relays on threads of their own, both backend pairs -------------------------------------


async def test_two_relays_in_aggregate_order_invert_nothing_over_10000_events(
    db_url, backend, redis_target, fake_server, key_prefix
):
    result = await _race(db_url, redis_target, fake_server, key_prefix, relays=2, design=AGGREGATE_ORDER)
    assert (result.missing, result.duplicates, result.inversions) == (0, 0, 0)
    assert result.appended == sum(result.per_relay) == 10_000
    if backend == "postgresql":  # the clock started once each held its fair share, as the lease table said
        assert result.partitioned and [len(h.partitions) for h in result.holdings] == [16, 16]
        assert sorted(p for h in result.holdings for p in h.partitions) == list(range(PARTITIONS))
        assert sum(h.users for h in result.holdings) == 5
        assert all(h.published == 0 for h in result.holdings if h.users == 0)
    else:  # no partitions: one relay at a time holds the write lock
        assert not result.partitioned and all(h.partitions == () for h in result.holdings)


async def test_a_relay_stopped_mid_run_loses_nothing_inverts_nothing_and_its_partitions_are_taken_over(
    db_url, backend, redis_target, fake_server, key_prefix
):
    """Relay 1 dies in its third batch, after appending and before its commit, and renews nothing
    more: its batch is appended again (duplicates), and on PostgreSQL its partitions pass to the
    other relays once its leases expire, read from the lease table."""
    result = await race(database_url=db_url, redis_target=redis_target, fake_server=fake_server, relays=3,
                        design=AGGREGATE_ORDER, events=3_000, users=100, key_prefix=key_prefix, stop_one=True)
    stop = result.stop
    assert (result.missing, result.inversions) == (0, 0)
    assert stop is not None and stop.relay == 1
    assert result.duplicates == stop.in_flight and result.appended == 3_000 + stop.in_flight
    assert sum(result.per_relay) == 3_000
    if backend == "postgresql":  # 100 users: relay 1's partitions hold more than three batches
        assert stop.in_flight == 100 and result.holdings[0].published == STOP_AFTER * 100
        assert stop.partitions == result.holdings[0].partitions and len(stop.partitions) == 11  # 32 = 11 + 11 + 10
        assert stop.taken_at is not None and stop.taken_at > stop.at
        assert sorted(p for _, taken in stop.taken_by for p in taken) == list(stop.partitions)
        assert {relay for relay, _ in stop.taken_by} <= {2, 3}
    else:  # it dies in its third batch, or idle if the write lock went to the others until the end
        assert stop.partitions == () and stop.taken_at is None
        assert result.holdings[0].published <= STOP_AFTER * 100


def test_stopping_a_relay_needs_another_to_take_over():
    assert check_input(relays=1, events=1_000, users=5, stop=True) == {
        "relays": "Choose 2 or more to stop one: another must take over."}
    assert check_input(relays=2, events=1_000, users=5, stop=True) == {}


async def test_two_ordered_relays_with_a_failing_broker_and_crashing_relays_lose_nothing_and_invert_nothing(
    db_url, backend, redis_target, fake_server, key_prefix
):
    """A fifth of the batches find the broker unreachable and a tenth of the relays die after
    appending: every event reaches the stream, each user's first appearances stay in order, and the
    crashes show as duplicates (at least once)."""
    result = await race(database_url=db_url, redis_target=redis_target, fake_server=fake_server, relays=2,
                        design=AGGREGATE_ORDER, events=2_000, users=10, key_prefix=key_prefix,
                        settings=RelaySettings(backoff_base=0.02, backoff_max=0.2),
                        broker_failure_rate=0.2, crash_rate=0.1)
    assert (result.missing, result.inversions) == (0, 0)
    assert result.duplicates > 0  # the crashed batches, appended again
    assert result.appended == 2_000 + result.duplicates


async def test_four_any_order_relays_invert_events_on_postgresql_and_take_turns_on_sqlite(
    db_url, backend, redis_target, fake_server, key_prefix
):
    result = await _race(db_url, redis_target, fake_server, key_prefix, relays=4, design=ANY_ORDER)
    assert (result.missing, result.duplicates) == (0, 0)
    if backend == "postgresql":  # SKIP LOCKED lets a relay take a user's later rows while another holds earlier ones
        assert result.inversions > 0
    else:  # BEGIN IMMEDIATE: one relay's whole cycle, append included, at a time
        assert result.inversions == 0


# --- the claim itself, on PostgreSQL ---------------------------------------------------------


async def test_the_claim_takes_users_oldest_first_each_in_sequence_and_any_order_skips_rows_not_users(db):
    users = await make_users(db, 150)
    await add_events(db, users=users, count=450, per_transaction=150)  # three events per user
    now = datetime.now(UTC)
    if db.backend == "sqlite":  # no partitions: the same claim in both designs, under the write lock
        async with db.sessions.begin() as session:
            ordered = await claim(session, now=now, limit=100, design=AGGREGATE_ORDER)
            assert [e.id for e in ordered] == [e.id for e in await claim(session, now=now, limit=100, design=ANY_ORDER)]
        return
    await Partitions("relay-a").refresh(db)  # alone: every partition
    async with db.sessions.begin() as first:
        batch = await claim(first, now=now, limit=100, design=AGGREGATE_ORDER, relay="relay-a")
        # Each user's events in sequence order, users oldest first, the last one cut.
        assert len(batch) == 100 and len({e.aggregate_id for e in batch}) == 34
        assert [e.sequence for e in batch] == [1, 2, 3] * 33 + [1]
    async with db.sessions.begin() as first, db.sessions.begin() as second:
        # The any-order claim skips only the rows: while another relay holds a user's first event, it
        # takes that user's later ones, still pending behind it.
        earliest = await first.scalar(select(DomainEvent).where(DomainEvent.sequence == 1).limit(1).with_for_update())
        skipping = await claim(second, now=now, limit=450, design=ANY_ORDER)
        theirs = [e.sequence for e in skipping if e.aggregate_id == earliest.aggregate_id]
        assert theirs == [2, 3] and earliest.id not in {e.id for e in skipping}


# --- relays in separate processes ------------------------------------------------------------


async def test_two_relay_processes_in_aggregate_order_invert_nothing_over_10000_events(db, db_url, key_prefix):
    """Real child processes (python -m labbench.relay_process) on the lab's own table; Redis is the
    server, which a child process can reach."""
    redis_url = need("LAB_TEST_REDIS_URL")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"{key_prefix}ordered-processes"
    users = await make_users(db, 5)
    await add_events(db, users=users, count=10_000, per_transaction=500)
    if db.backend == "postgresql":
        async with db.engine.begin() as conn:
            await conn.execute(text("ANALYZE domain_events"))
    command = [sys.executable, "-m", "labbench.relay_process", db_url, redis_url, stream, "--hold", "0", "--batch", "100"]
    children = [await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL, cwd=REPO)
                for _ in range(2)]
    try:
        await wait_until(lambda: _none_pending(db), timeout=60)
    finally:
        for child in children:
            child.send_signal(signal.SIGKILL)
            await child.wait()
    try:
        async with db.sessions() as session:
            order = (await session.execute(select(DomainEvent.aggregate_id, DomainEvent.id)
                                           .order_by(DomainEvent.aggregate_id, DomainEvent.sequence))).all()
        entries = [fields for _, fields in await client.xrange(stream)]
        assert order_faults(entries, [tuple(row) for row in order]) == (0, 0, 0)
        assert len(entries) == 10_000
    finally:
        await client.delete(stream)
        await client.aclose()


@pytest.mark.parametrize("backend", ["postgresql"])  # the minimal relay and NOTIFY are PostgreSQL's
@pytest.mark.parametrize("relay", [["--design", AGGREGATE_ORDER], ["--design", ANY_ORDER], ["--minimal"]])
async def test_a_relay_as_deployed_for_the_bench_publishes_and_stops_cleanly_at_sigterm(db, db_url, key_prefix, relay):
    """bench.py's commit-to-stream runs each relay so: after SIGTERM none of its events is left
    pending (a relay killed between its XADD and its commit would leave one to be sent again)."""
    redis_url = need("LAB_TEST_REDIS_URL")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"{key_prefix}as-deployed"
    command = [sys.executable, "-m", "labbench.relay_process", db_url, redis_url, stream, "--as-deployed", *relay]
    child = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, cwd=REPO)
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
        users = await make_users(db, 3)
        await add_events(db, users=users, count=300, per_transaction=10)
        await wait_until(lambda: _none_pending(db), timeout=30)
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 10) == 0
        assert await status_counts(db) == {"published": 300}
        assert await client.xlen(stream) == 300
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await client.delete(stream)
        await client.aclose()


async def _none_pending(db) -> bool:
    return (await status_counts(db))["pending"] == 0


def test_the_relay_defaults_to_the_aggregate_order_claim():
    from source import RelaySettings

    assert RelaySettings().design == AGGREGATE_ORDER


async def test_the_experiment_leaves_no_schema_and_no_stream_behind(db_url, backend, redis_target, fake_server,
                                                                     key_prefix, redis_client):
    await _race(db_url, redis_target, fake_server, key_prefix, relays=2, design=AGGREGATE_ORDER, events=200)
    assert [key async for key in redis_client.scan_iter(match=f"{key_prefix}*")] == []
    if backend == "postgresql":
        from source import Database

        db = Database(db_url)
        try:
            async with db.engine.connect() as conn:
                schemas = await conn.scalar(text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'relays_%'"))
        finally:
            await db.dispose()
        assert schemas == 0
