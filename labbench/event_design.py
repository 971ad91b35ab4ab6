"""5b. The event-table workbench: each table choice's consequence, measured by running the same
workload on throwaway tables of its own (named `evd_<run>_...`) in the app's database, dropped
afterwards. Nothing here touches the lab's domain_events table.

- retention: a status column vs delete-on-publish (rows left, history, retries recorded), the events
  appended to a throwaway stream on the lab's Redis;
- ordering: `created_at` from the writers' clocks vs a per-aggregate sequence number assigned in
  the transaction, with two writers racing on one aggregate, one of them with a skewed clock;
- versioning: a schema version and correlation/causation ids, and what a consumer does with them.

How the relay wakes is measured in relay_wake.py; the definition itself is event_table.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy import MetaData, Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from labbench.event_table import Design, build_metadata
from labbench.outbox_arc import throwaway_outbox
from source.database import WRITE_TRANSACTION, Database
from source.event_repository import DomainEventRepository
from source.models import DomainEvent

# --- throwaway tables ----------------------------------------------------------------------


def run_id() -> str:
    return uuid.uuid4().hex[:10]


@asynccontextmanager
async def writing(db: Database) -> AsyncIterator[AsyncConnection]:
    """A transaction that may read, then write. On SQLite it takes the write lock at BEGIN: a
    deferred transaction reads a snapshot, and a write after someone else's commit on it fails at
    once with "database is locked" (the section 5 publisher commits all the time)."""
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(**WRITE_TRANSACTION)
        async with conn.begin():
            yield conn


class Scratch:
    """Tables made for one run (names prefixed `evd_<run>_`), dropped on exit."""

    def __init__(self, db: Database, metadata: MetaData) -> None:
        self.db, self.metadata = db, metadata

    async def __aenter__(self) -> Scratch:
        async with writing(self.db) as conn:
            await conn.run_sync(self.metadata.create_all)
        return self

    async def __aexit__(self, *exc) -> None:
        async with writing(self.db) as conn:
            await conn.run_sync(self.metadata.drop_all)


def scratch_metadata(design: Design, run: str, part: str) -> tuple[MetaData, Table, Table | None]:
    name, counter = f"evd_{run}_{part}", f"evd_{run}_{part}_agg"
    metadata = build_metadata(design, table=name, counter=counter)
    return metadata, metadata.tables[name], metadata.tables.get(counter)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive datetimes


# --- 1. a status column vs delete-on-publish -------------------------------------------------


@dataclass(frozen=True)
class RetentionResult:
    keeps_status: bool
    events: int
    published: int  # distinct events in the run's stream on the lab's Redis (XRANGE), read afterwards
    failed_attempts: int  # publish attempts refused (each retried on the next cycle)
    rows_left: int  # rows in the table after the relay drained it
    history_rows: int  # published events the table can still list (and a relay could replay)
    attempts_recorded: int  # failed attempts the table records


FAIL_EVERY = 5  # the page's run: the first attempt of every 5th event is refused


class RefusedByTheLab(Exception):
    """The refusal this experiment injects: raised where Redis's error reply would come."""


async def retention_experiment(db: Database, redis_client: aioredis.Redis, *, prefix: str, keeps_status: bool,
                               events: int = 20, fail_every: int = FAIL_EVERY) -> RetentionResult:
    """A relay drains the table into a stream of its own on the lab's Redis (`<prefix>evd-<run>-...`,
    deleted afterwards). The first attempt of every `fail_every`-th event is refused by the lab, as
    section 5's Refuse switch does; every other attempt is a real XADD."""
    run = run_id()
    design = Design(status_column=keeps_status, sequence=False, versioned=False)
    metadata, table, _ = scratch_metadata(design, run, "keep" if keeps_status else "delete")
    stream, tried, refused = f"{prefix}evd-{run}-events", set(), 0

    async def publish(event_id: str, number: int) -> None:
        first_attempt = event_id not in tried
        tried.add(event_id)
        if fail_every and number % fail_every == 0 and first_attempt:
            raise RefusedByTheLab(event_id)
        await redis_client.xadd(stream, {"event_id": event_id})

    try:
        async with Scratch(db, metadata):
            start = utc_now()
            async with writing(db) as conn:
                await conn.execute(insert(table), [
                    {"id": f"{n:04d}-{run}", "aggregate_id": "user-1", "event_type": "AIRScoreCalculated",
                     "payload": {"n": n}, "created_at": start + timedelta(milliseconds=n)}
                    for n in range(1, events + 1)
                ])
            for _cycle in range(10):  # the relay: each cycle publishes what is pending, oldest first
                async with writing(db) as conn:
                    query = select(table.c.id, table.c.payload).order_by(table.c.created_at)
                    if keeps_status:
                        query = query.where(table.c.status == "pending")
                    rows = (await conn.execute(query)).all()
                    if not rows:
                        break
                    for event_id, payload in rows:
                        try:
                            await publish(event_id, payload["n"])
                        except RefusedByTheLab:
                            refused += 1
                            if keeps_status:
                                await conn.execute(update(table).where(table.c.id == event_id)
                                                   .values(attempts=table.c.attempts + 1))
                            continue
                        if keeps_status:
                            await conn.execute(update(table).where(table.c.id == event_id)
                                               .values(status="published", published_at=utc_now()))
                        else:
                            await conn.execute(delete(table).where(table.c.id == event_id))
            async with db.engine.connect() as conn:
                rows_left = await conn.scalar(select(func.count()).select_from(table))
                history = recorded = 0
                if keeps_status:
                    history = await conn.scalar(select(func.count()).select_from(table)
                                                .where(table.c.status == "published"))
                    recorded = await conn.scalar(select(func.coalesce(func.sum(table.c.attempts), 0)))
        published = len({fields["event_id"] for _, fields in await redis_client.xrange(stream)})
    finally:
        await redis_client.delete(stream)
    return RetentionResult(keeps_status, events, published, refused, rows_left, history, recorded)


# --- 2. created_at from the writers' clocks vs a sequence assigned in the transaction ------------


@dataclass(frozen=True)
class OrderingResult:
    skew_ms: float
    events: int
    created_at_inversions: int  # pairs a consumer ordering by created_at sees opposite to commit order
    sequence_inversions: int  # the same, ordering by the per-aggregate sequence number
    sequences_unique_and_gapless: bool
    writer_switches: int  # how often the commit order passed from one writer to the other
    first_rows: list[dict] = field(default_factory=list)  # the start of the commit order, for the page


def inversions(truth: Sequence[str], seen: Sequence[str]) -> int:
    """Pairs of events that `seen` orders opposite to `truth`."""
    position = {event_id: n for n, event_id in enumerate(truth)}
    order = [position[event_id] for event_id in seen]
    return sum(1 for i in range(len(order)) for j in range(i + 1, len(order)) if order[i] > order[j])


async def ordering_experiment(db: Database, *, skew_ms: float = 50.0, per_writer: int = 20) -> OrderingResult:
    """Two writers append events to one aggregate at once; writer B's app clock runs `skew_ms`
    behind writer A's. Each writes as the lab's own writer does, on a throwaway copy of the lab's
    outbox tables: created_at from its clock, and the number from DomainEventRepository.add, which
    increments the aggregate's counter row (a row lock on PostgreSQL; on SQLite the write lock
    taken at BEGIN IMMEDIATE). Writers hold the lock until they commit, so the order in which they
    take it is the commit order: it is recorded here, while the lock is held, as the truth."""
    aggregate = f"user-{run_id()}"
    committed: list[str] = []  # event ids in the order their transactions took the lock
    writer_of: dict[str, str] = {}
    async with throwaway_outbox(db) as own:

        async def writer(name: str, offset: timedelta) -> None:
            for n in range(per_writer):
                event = DomainEvent(id=f"{name}{n:03d}-{aggregate}"[:36], event_type="AIRScoreCalculated",
                                    aggregate_type="User", aggregate_id=aggregate, payload={"writer": name},
                                    created_at=utc_now() - offset)  # this writer's app clock
                async with own.sessions.begin() as session:
                    await session.connection(execution_options=WRITE_TRANSACTION)
                    await DomainEventRepository(session).add(event)
                    committed.append(event.id)
                    writer_of[event.id] = name
                await asyncio.sleep(random.uniform(0, 0.003))  # think time: the writers interleave

        await asyncio.gather(writer("A", timedelta(0)), writer("B", timedelta(milliseconds=skew_ms)))
        async with own.sessions() as session:
            rows = {event.id: event for event in await session.scalars(select(DomainEvent))}
    by_time = [e.id for e in sorted(rows.values(), key=lambda e: (e.created_at, e.id))]
    by_sequence = [e.id for e in sorted(rows.values(), key=lambda e: e.sequence)]
    sequences = sorted(e.sequence for e in rows.values())
    first = [{"commit order": n + 1, "writer": writer_of[i], "sequence": rows[i].sequence,
              "created_at": f"{_aware(rows[i].created_at):%H:%M:%S.%f}"[:-3]} for n, i in enumerate(committed[:8])]
    switches = sum(1 for a, b in zip(committed, committed[1:], strict=False) if writer_of[a] != writer_of[b])
    return OrderingResult(skew_ms, len(committed), inversions(committed, by_time), inversions(committed, by_sequence),
                          sequences == list(range(1, len(committed) + 1)), switches, first)


# --- 3. schema version and correlation/causation ids -------------------------------------------


@dataclass(frozen=True)
class VersioningResult:
    versioned: bool
    events: int
    applied: int
    upcast: int  # old-version events the consumer converted to the current shape
    rejected: int
    chain: list[str]  # the request's events, found by correlation id, in causation order
    old_events: int  # written in version 1's shape


def upcast(version: int, payload: dict) -> dict:
    """Version 1 said {"score": n}; version 2 says {"air_score": n, "scale": 100}."""
    if version == 1:
        return {"air_score": payload["score"], "scale": 100}
    return payload


async def versioning_experiment(db: Database, *, versioned: bool, old_events: int = 5,
                                new_events: int = 5) -> VersioningResult:
    """A producer deployed in two versions wrote events of both shapes, and one request made a
    chain of three events. The consumer reads the current shape (version 2). With a schema
    version it upcasts version 1 and applies everything; without one it cannot tell an old
    payload from a broken one, so it rejects what is not in the current shape. With correlation
    and causation ids it finds the request's events and their order of cause."""
    run = run_id()
    design = Design(status_column=False, sequence=False, versioned=versioned)
    metadata, table, _ = scratch_metadata(design, run, "ver" if versioned else "nover")
    start, rows = utc_now(), []
    for n in range(old_events + new_events):
        old = n < old_events
        row = {"id": f"e{n:03d}-{run}", "aggregate_id": "user-1", "event_type": "AIRScoreCalculated",
               "payload": {"score": 70 + n} if old else {"air_score": 70 + n, "scale": 100},
               "created_at": start + timedelta(milliseconds=n)}
        if versioned:  # every row names every column: an executemany takes its columns from the first row
            row.update(schema_version=1 if old else 2, correlation_id=None, causation_id=None)
        rows.append(row)
    request = str(uuid.uuid4())
    chain = [("ScoreRequested", None), ("AIRScoreCalculated", 0), ("NotificationQueued", 1)]
    chain_ids = [f"c{n}-{run}" for n in range(len(chain))]
    for n, (kind, cause) in enumerate(chain):
        row = {"id": chain_ids[n], "aggregate_id": "user-2", "event_type": kind,
               "payload": {"air_score": 90, "scale": 100}, "created_at": start + timedelta(seconds=1, milliseconds=n)}
        if versioned:
            row.update(schema_version=2, correlation_id=request,
                       causation_id=None if cause is None else chain_ids[cause])
        rows.append(row)
    async with Scratch(db, metadata):
        async with writing(db) as conn:
            await conn.execute(insert(table), rows)
        applied = upcasted = rejected = 0
        async with db.engine.connect() as conn:
            columns = [table.c.payload] + ([table.c.schema_version] if versioned else [])
            for found in (await conn.execute(select(*columns).order_by(table.c.created_at))).all():
                payload = found.payload if isinstance(found.payload, dict) else json.loads(found.payload)
                version = found.schema_version if versioned else None
                if version is not None and version < 2:
                    payload, upcasted = upcast(version, payload), upcasted + 1
                if "air_score" in payload:
                    applied += 1
                else:
                    rejected += 1
            linked: list[str] = []
            if versioned:
                events = {r.id: r for r in (await conn.execute(
                    select(table.c.id, table.c.event_type, table.c.causation_id).where(table.c.correlation_id == request)
                )).all()}
                caused_by = {r.causation_id: r for r in events.values()}
                step = caused_by.get(None)
                while step is not None:
                    linked.append(step.event_type)
                    step = caused_by.get(step.id)
    return VersioningResult(versioned, len(rows), applied, upcasted, rejected, linked, old_events)
