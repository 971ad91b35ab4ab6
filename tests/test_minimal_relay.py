"""The bench's anchor (labbench/minimal_relay.py) must do the lab relay's work, or the ratios that
bench.py prints against it mean nothing: on PostgreSQL, in both claim designs, it appends the
fields the lab's relay would, once each, in each user's order, marks them published, and leaves
alone the events queued behind a parked one."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import Text, cast, select, update

from labbench.minimal_relay import HOLD_ALL, minimal_relay_batch
from source import DomainEvent
from source.outbox import stream_fields
from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER
from tests.test_outbox import add_events, make_users


@pytest.mark.parametrize("backend", ["postgresql"])  # raw asyncpg
@pytest.mark.parametrize("redis_kind", ["redis"])
@pytest.mark.parametrize("design", [ANY_ORDER, AGGREGATE_ORDER])
async def test_the_minimal_relay_appends_what_the_lab_relay_would_and_waits_behind_a_parked_event(
    db, redis_client, key_prefix, design
):
    users = await make_users(db, 3)
    ids = await add_events(db, users=users, count=30, per_transaction=10)  # user k has ids[k::3]
    async with db.sessions.begin() as session:  # user 0's first event is parked: the rest of user 0's wait
        await session.execute(update(DomainEvent).where(DomainEvent.id == ids[0]).values(status="failed"))
    stream = f"{key_prefix}minimal"
    connection = await asyncpg.connect(db.asyncpg_dsn)
    relay = "the-anchor" if design == AGGREGATE_ORDER else None
    try:
        if relay:
            await connection.execute(HOLD_ALL, relay)
        batches = []
        while published := await minimal_relay_batch(connection, redis_client, stream, batch_size=7, relay=relay):
            batches.append(published)
    finally:
        await connection.close()

    entries = [fields for _, fields in await redis_client.xrange(stream)]
    appended = [fields["event_id"] for fields in entries]
    assert sorted(appended) == sorted(ids[1::3] + ids[2::3]) and sum(batches) == 20
    for k in (1, 2):
        assert [i for i in appended if i in ids[k::3]] == ids[k::3]
    async with db.sessions() as session:
        events = {e.id: e for e in (await session.scalars(select(DomainEvent))).all()}
        rows = {row.id: row for row in (await session.execute(select(
            DomainEvent.id, DomainEvent.event_type, DomainEvent.aggregate_type, DomainEvent.aggregate_id,
            DomainEvent.sequence, DomainEvent.created_at, cast(DomainEvent.payload, Text).label("payload")))).all()}
    assert entries == [stream_fields(rows[i]) for i in appended]  # the lab relay's fields
    assert {i for i, e in events.items() if e.status == "published"} == set(appended)
    assert {i for i, e in events.items() if e.status == "pending"} == set(ids[3::3])
