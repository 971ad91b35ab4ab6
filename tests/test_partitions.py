"""Ordered relays that scale (source/partitions.py): each relay holds a fair share of the users'
partitions under a lease; a relay that joins gets its share (rebalance), one that dies has its
partitions taken over once its leases expire, and a batch in flight fences its partitions until it
commits. PostgreSQL, the only backend where relays run side by side (on SQLite they take turns under
the write lock): on the shared server here, and on the embedded one in CI's second pass."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select, text

from labbench.relay_race import order_faults
from source import DomainEvent
from source.consumer import dead_letter_key
from source.models import partition_of
from source.outbox_claims import AGGREGATE_ORDER, claim
from source.partitions import PARTITIONS, LeaseSettings, Partitions, fair_share, split_by_load
from tests.conftest import need
from tests.test_outbox import add_events, make_users, status_counts, wait_until
from tests.test_outbox_faults import (
    REPO,
    _applied_count,
    _group_idle,
    applied_ids,
    applied_per_user,
    run_consumer,
)

QUICK = LeaseSettings(heartbeat=0.1, ttl=1.0)


def test_the_partitions_are_shared_out_as_evenly_as_the_members_allow():
    for count in (1, 2, 3, 5, 32, 40):
        members = [f"relay-{i:02}" for i in range(count)]
        shares = [fair_share(members, me) for me in members]
        assert sum(shares) == PARTITIONS and max(shares) - min(shares) <= 1


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_relay_that_joins_gets_half_and_the_two_never_share_a_partition(db):
    first, second = Partitions("relay-a", QUICK), Partitions("relay-b", QUICK)
    assert await first.refresh(db) == tuple(range(PARTITIONS))
    assert await second.refresh(db) == ()  # every partition is held, and not yet expired
    assert len(await first.refresh(db)) == PARTITIONS // 2  # it sees a second member: gives half back
    assert len(await second.refresh(db)) == PARTITIONS // 2  # ... which the newcomer takes
    assert set(first.held) | set(second.held) == set(range(PARTITIONS)) and not set(first.held) & set(second.held)
    async with db.engine.connect() as conn:
        holders = Counter((await conn.execute(text("SELECT holder FROM relay_leases"))).scalars())
    assert holders == {"relay-a": 16, "relay-b": 16}
    await second.leave(db)  # a relay that stops gives its partitions back at once
    assert await first.refresh(db) == tuple(range(PARTITIONS))


def test_a_relay_gives_back_about_its_share_of_pending_events_not_just_of_partitions():
    pending = {p: 500 * (p % 3 == 0) + 500 * (p % 7 == 0) for p in range(PARTITIONS)}  # a few busy partitions
    keep, give = split_by_load(list(range(PARTITIONS)), pending, 16)
    assert len(keep) == len(give) == 16 and not set(keep) & set(give)
    kept, given = sum(pending[p] for p in keep), sum(pending[p] for p in give)
    assert abs(kept - given) <= max(pending.values())  # within one partition's events
    assert split_by_load(list(range(8)), {}, 6) == ([0, 1, 2, 3, 4, 5], [6, 7])  # nothing waiting: the highest go


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_relay_that_joins_a_backlog_gets_about_half_of_its_events(db):
    users = await make_users(db, 20)
    await add_events(db, users=users, count=2_000, per_transaction=500)
    first, second = Partitions("relay-a", QUICK), Partitions("relay-b", QUICK)
    for relay in (first, second, first, second):
        await relay.refresh(db)
    async with db.sessions() as session:
        per_partition = dict((await session.execute(
            select(partition_of(DomainEvent.aggregate_type, DomainEvent.aggregate_id), func.count())
            .group_by(partition_of(DomainEvent.aggregate_type, DomainEvent.aggregate_id)))).all())
    loads = [sum(per_partition.get(p, 0) for p in relay.held) for relay in (first, second)]
    assert sum(loads) == 2_000 and abs(loads[0] - loads[1]) <= max(per_partition.values()), loads


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_silent_relays_partitions_are_taken_over_once_its_leases_expire(db):
    first, second = Partitions("relay-a", QUICK), Partitions("relay-b", QUICK)
    await first.refresh(db)
    await second.refresh(db)
    await first.refresh(db)
    await second.refresh(db)
    silent_since = time.monotonic()  # relay-a stops renewing: it died
    while len(await second.refresh(db)) < PARTITIONS:
        assert time.monotonic() - silent_since < 10, "not taken over"
        await asyncio.sleep(QUICK.heartbeat)
    # Not before its leases (renewed at its last heartbeat) expired, on the database's clock.
    assert time.monotonic() - silent_since >= QUICK.ttl - 0.2
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT relay_id FROM relay_members"))).scalars().all() == ["relay-b"]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_each_relay_claims_only_the_users_of_its_partitions(db):
    users = await make_users(db, 60)
    await add_events(db, users=users, count=240, per_transaction=120)
    relays = [Partitions("relay-a", QUICK), Partitions("relay-b", QUICK)]
    for relay in relays * 2:
        await relay.refresh(db)
    now, claimed = datetime.now(UTC), {}
    async with db.sessions.begin() as first, db.sessions.begin() as second:  # at once, in two transactions
        for relay, session in zip(relays, (first, second), strict=True):
            claimed[relay.relay_id] = await claim(session, now=now, limit=500, design=AGGREGATE_ORDER,
                                                  relay=relay.relay_id)
        async with db.sessions() as session:
            partitions = dict((await session.execute(select(
                DomainEvent.aggregate_id, partition_of(DomainEvent.aggregate_type, DomainEvent.aggregate_id)))).all())
    for relay in relays:
        rows = claimed[relay.relay_id]
        assert rows and {partitions[row.aggregate_id] for row in rows} <= set(relay.held)
        for user in {row.aggregate_id for row in rows}:  # all of a user's events, in sequence order
            assert [row.sequence for row in rows if row.aggregate_id == user] == [1, 2, 3, 4]
    assert sum(len(rows) for rows in claimed.values()) == 240


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_batch_in_flight_fences_its_users_partitions_until_it_commits(db):
    """Relay A's leases expire while its batch is still open: relay B takes none of the partitions
    of the users in that batch until A's transaction ends (their lease rows are locked FOR SHARE),
    and afterwards A claims nothing under the leases it lost."""
    users = await make_users(db, 40)
    await add_events(db, users=users, count=80, per_transaction=80)
    first, second = Partitions("relay-a", QUICK), Partitions("relay-b", QUICK)
    await first.refresh(db)
    async with db.sessions() as session:
        partition = dict((await session.execute(select(
            DomainEvent.aggregate_id, partition_of(DomainEvent.aggregate_type, DomainEvent.aggregate_id)))).all())
    async with db.sessions.begin() as in_flight:
        batch = await claim(in_flight, now=datetime.now(UTC), limit=10, design=AGGREGATE_ORDER, relay="relay-a")
        fenced = {partition[row.aggregate_id] for row in batch}
        assert batch and fenced
        await asyncio.sleep(QUICK.ttl + 0.2)  # A's leases expire while its batch is open
        # B may take A's other partitions (A is silent; the plan decides which lease rows the claim read).
        assert not fenced & set(await second.refresh(db))
    assert len(await second.refresh(db)) == PARTITIONS  # A's batch ended: B takes the rest
    async with db.sessions.begin() as late:
        assert await claim(late, now=datetime.now(UTC), limit=10, design=AGGREGATE_ORDER, relay="relay-a") == []


async def test_a_relay_process_sigkilled_while_holding_partitions_is_taken_over_losing_nothing(
    db, db_url, backend, key_prefix
):
    """Two relay processes in aggregate order; one is SIGKILLed between an append and its commit,
    holding half the partitions. The other takes them over: every event is published, none applied
    twice, none out of its user's order (the killed batch is appended again: a duplicate, expected).
    On SQLite the relays take turns under the write lock and there are no leases to take over."""
    redis_url = need("LAB_TEST_REDIS_URL")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"{key_prefix}take-over"
    try:
        await _kill_one_of_two(db, db_url, backend, redis_url, client, stream)
    finally:
        await client.delete(stream, dead_letter_key(stream))
        await client.aclose()


async def _kill_one_of_two(db, db_url, backend, redis_url, client, stream) -> None:
    users = await make_users(db, 20)
    ids = await add_events(db, users=users, count=3_000, per_transaction=500)
    command = [sys.executable, "-m", "labbench.relay_process", db_url, redis_url, stream, "--batch", "50"]
    # The victim holds each batch 2 s between its append and its commit: killed when it says it
    # appended, it is almost surely inside that hold.
    victim = await asyncio.create_subprocess_exec(*command, "--hold", "2", stdout=asyncio.subprocess.PIPE, cwd=REPO)
    survivor = None
    try:
        if backend == "postgresql":  # both hold partitions of their own before the kill
            survivor = await _start(command)
            await wait_until(lambda: _holders_are(db, 2), timeout=30)
        while not (line := await asyncio.wait_for(victim.stdout.readline(), 30)).startswith(b"appended"):
            assert line, "the relay process ended"
        victim.send_signal(signal.SIGKILL)  # appended, not yet marked published
        assert await victim.wait() == -signal.SIGKILL
        survivor = survivor or await _start(command)  # SQLite: the relays would take turns anyway
        killed_at = time.monotonic()
        await wait_until(lambda: _counts_are_published(db, 3_000), timeout=120)
        print(f"every event published {time.monotonic() - killed_at:.2f} s after the kill")
        if backend == "postgresql":
            assert await _holders_are(db, 1)
    finally:
        for child in (survivor, victim):
            if child is not None and child.returncode is None:
                child.send_signal(signal.SIGKILL)
                await child.wait()
    async with db.sessions() as session:
        order = (await session.execute(select(DomainEvent.aggregate_id, DomainEvent.id)
                                       .order_by(DomainEvent.aggregate_id, DomainEvent.sequence))).all()
    entries = [fields for _, fields in await client.xrange(stream)]
    duplicates, inversions, missing = order_faults(entries, [tuple(row) for row in order])
    assert (inversions, missing) == (0, 0) and 0 < duplicates <= 50  # the killed batch, appended again
    await run_consumer(db, client, stream, lambda: _applied_count(db, 3_000), timeout=60)
    await wait_until(lambda: _group_idle(client, stream))
    assert await applied_ids(db) == set(ids)  # none lost
    assert await applied_per_user(db) == Counter(users[i % 20] for i in range(3_000))  # none applied twice


async def _start(command):
    return await asyncio.create_subprocess_exec(*command, "--hold", "0.05", stdout=asyncio.subprocess.DEVNULL, cwd=REPO)


async def _holders_are(db, count: int) -> bool:
    async with db.sessions() as session:
        holders = await session.scalar(text("SELECT count(DISTINCT holder) FROM relay_leases WHERE holder IS NOT NULL"))
    return holders == count


async def _counts_are_published(db, count: int) -> bool:
    return (await status_counts(db))["published"] == count


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_relay_reads_its_partitions_oldest_events_from_their_index_even_in_a_generic_plan(db):
    """Revision 0008's index of each partition's pending events: the claim reads it, also once
    PostgreSQL runs the prepared statement with a generic plan (as it may from the sixth run on),
    so a relay reads each partition's few oldest events, however long the backlog."""
    from labbench.minimal_relay import claim_sql

    users = await make_users(db, 50)
    await add_events(db, users=users, count=5_000, per_transaction=500)
    await Partitions("relay-a").refresh(db)
    sql, names = claim_sql(ordered=True, batch_size=100, per_partition=4)
    types = {"relay": "varchar", "now": "timestamptz"}
    async with db.engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        await conn.exec_driver_sql(f"PREPARE the_claim ({', '.join(types[name] for name in names)}) AS {sql}")
        given = {"relay": "'relay-a'", "now": f"'{datetime.now(UTC).isoformat()}'"}
        plan = "\n".join(row[0] for row in (await conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, TIMING OFF) EXECUTE the_claim ({', '.join(given[name] for name in names)})")).all())
        await conn.rollback()
    # (PostgreSQL 18, the embedded one, prints rows with two decimals.)
    assert "ix_events_partition" in plan and re.search(r"actual rows=100(\.00)? loops=1", plan.splitlines()[0]), plan
