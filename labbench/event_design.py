"""5b. The event-table design workbench: the learner's choices become a table definition (model
code and the DDL Alembic emits), and each choice's consequence is measured by running the same
workload on throwaway tables of its own, in the app's database, dropped afterwards. Nothing here
touches the lab's domain_events table.

- retention: a status column vs delete-on-publish (rows left, history, retries recorded);
- ordering: `created_at` from the writers' clocks vs a per-aggregate sequence number assigned in
  the transaction, with two writers racing on one aggregate, one of them with a skewed clock;
- versioning: a schema version and correlation/causation ids, and what a consumer does with them;
- waking: a polling relay vs LISTEN/NOTIFY (PostgreSQL), commit-to-stream latency and idle queries.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from labbench.recorder import record
from source.database import WRITE_TRANSACTION, Database

# --- the learner's choices -----------------------------------------------------------------

TABLE = "outbox_events"
COUNTER_TABLE = "event_aggregates"


@dataclass(frozen=True)
class Design:
    status_column: bool = True  # False: the relay deletes a row once it is published
    sequence: bool = True  # False: consumers order by created_at from the writer's clock
    versioned: bool = True  # schema_version, correlation_id and causation_id
    wake: str = "poll"  # "poll" or "notify" (LISTEN/NOTIFY, PostgreSQL only): a relay setting


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type_code: str  # as the generated code spells it
    type_: TypeEngine
    annotation: str
    nullable: bool = False
    primary_key: bool = False
    server_default: str | None = None
    comment: str = ""  # a code comment in the generated model, not a database comment


def _text_id(name: str, **kw) -> ColumnSpec:
    return ColumnSpec(name, "String(36)", String(36), "str | None" if kw.get("nullable") else "str", **kw)


def _when(name: str, nullable: bool = False, comment: str = "") -> ColumnSpec:
    return ColumnSpec(name, "DateTime(timezone=True)", DateTime(timezone=True),
                      "datetime | None" if nullable else "datetime", nullable=nullable, comment=comment)


def event_columns(design: Design) -> list[ColumnSpec]:
    columns = [
        _text_id("id", primary_key=True),
        ColumnSpec("aggregate_id", "String(36)", String(36), "str"),
        ColumnSpec("event_type", "String(100)", String(100), "str"),
        ColumnSpec("payload", "JSON", JSON(), "dict[str, Any]"),
        _when("created_at", comment="the writer's clock"),
    ]
    if design.sequence:
        columns.append(ColumnSpec("sequence", "Integer", Integer(), "int",
                                  comment=f"per aggregate, from {COUNTER_TABLE} in the same transaction"))
    if design.versioned:
        columns += [
            ColumnSpec("schema_version", "Integer", Integer(), "int", server_default="1",
                       comment="the payload's shape: consumers upcast or reject old versions"),
            _text_id("correlation_id", nullable=True, comment="the request this event belongs to"),
            _text_id("causation_id", nullable=True, comment="the event or command that caused it"),
        ]
    if design.status_column:
        columns += [
            ColumnSpec("status", "String(20)", String(20), "str", server_default="pending",
                       comment="pending -> published; published rows stay as history"),
            ColumnSpec("attempts", "Integer", Integer(), "int", server_default="0"),
            _when("published_at", nullable=True),
        ]
    return columns


def _constraints(design: Design, table: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(kind, name, columns) of the event table's constraints and indexes."""
    found = []
    if design.sequence:
        found.append(("unique", f"uq_{table}_aggregate_sequence", ("aggregate_id", "sequence")))
    if design.status_column:
        found.append(("index", f"ix_{table}_status_created_at", ("status", "created_at")))
    else:
        found.append(("index", f"ix_{table}_created_at", ("created_at",)))
    return found


def build_metadata(design: Design, *, table: str = TABLE, counter: str = COUNTER_TABLE) -> MetaData:
    """The design as SQLAlchemy Core tables (what the generated model code declares)."""
    metadata = MetaData()
    items: list = [
        Column(c.name, c.type_, primary_key=c.primary_key, nullable=c.nullable, server_default=c.server_default)
        for c in event_columns(design)
    ]
    for kind, name, cols in _constraints(design, table):
        items.append(UniqueConstraint(*cols, name=name) if kind == "unique" else Index(name, *cols))
    if design.sequence:
        Table(counter, metadata, Column("aggregate_id", String(36), primary_key=True),
              Column("last_sequence", Integer(), nullable=False, server_default="0"))
    Table(table, metadata, *items)
    return metadata


def model_code(design: Design) -> str:
    """The design as declarative model code, the way the lab's own models are written."""
    imports = {"DateTime", "Index", "Integer", "JSON", "String"}
    if design.sequence:
        imports.add("UniqueConstraint")
    lines = [
        '"""The event table of your design (generated by the lab from your choices)."""',
        "",
        "from datetime import datetime",
        "from typing import Any",
        "",
        f"from sqlalchemy import {', '.join(sorted(imports))}",
        "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column",
        "",
        "",
        "class Base(DeclarativeBase):",
        "    pass",
        "",
        "",
    ]
    if design.sequence:
        lines += [
            "class EventAggregate(Base):",
            '    """One row per aggregate: its last sequence number, taken under a row lock."""',
            "",
            f'    __tablename__ = "{COUNTER_TABLE}"',
            "",
            "    aggregate_id: Mapped[str] = mapped_column(String(36), primary_key=True)",
            '    last_sequence: Mapped[int] = mapped_column(Integer, server_default="0")',
            "",
            "",
        ]
    lines += ["class OutboxEvent(Base):", f'    __tablename__ = "{TABLE}"', "    __table_args__ = ("]
    for kind, name, cols in _constraints(design, TABLE):
        quoted = ", ".join(f'"{c}"' for c in cols)
        if kind == "unique":
            lines.append(f'        UniqueConstraint({quoted}, name="{name}"),')
        else:
            lines.append(f'        Index("{name}", {quoted}),')
    lines += ["    )", ""]
    for c in event_columns(design):
        args = [c.type_code]
        if c.primary_key:
            args.append("primary_key=True")
        if c.server_default is not None:
            args.append(f'server_default="{c.server_default}"')
        line = f"    {c.name}: Mapped[{c.annotation}] = mapped_column({', '.join(args)})"
        lines.append(line + (f"  # {c.comment}" if c.comment else ""))
    return "\n".join(lines) + "\n"


def alembic_ddl(design: Design, dialect: str) -> str:
    """The SQL Alembic emits for `op.create_table` of the design on `dialect` (its offline mode)."""
    return metadata_ddl(build_metadata(design), dialect)


def metadata_ddl(metadata: MetaData, dialect: str) -> str:
    """What Alembic's create_table emits for each table of `metadata`, in dependency order."""
    from alembic.runtime.migration import MigrationContext

    buffer = io.StringIO()
    context = MigrationContext.configure(dialect_name=dialect, opts={"as_sql": True, "output_buffer": buffer})
    for table in metadata.sorted_tables:
        context.impl.create_table(table)
    return buffer.getvalue().strip() + "\n"


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


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive datetimes


# --- 1. a status column vs delete-on-publish -------------------------------------------------


@dataclass(frozen=True)
class RetentionResult:
    keeps_status: bool
    events: int
    published: int  # events the broker accepted
    failed_attempts: int  # publish attempts the broker refused (each retried)
    rows_left: int  # rows in the table after the relay drained it
    history_rows: int  # published events the table can still list (and a relay could replay)
    attempts_recorded: int  # failed attempts the table records


FAIL_EVERY = 5  # the page's run: the broker refuses the first attempt of every 5th event


class FlakyBroker:
    """Refuses the first attempt of every `fail_every`-th event (a broker blip), accepts the rest."""

    def __init__(self, fail_every: int) -> None:
        self.fail_every, self.accepted, self.refused, self._seen = fail_every, [], 0, {}

    def publish(self, event_id: str, number: int) -> bool:
        attempt = self._seen[event_id] = self._seen.get(event_id, 0) + 1
        if self.fail_every and number % self.fail_every == 0 and attempt == 1:
            self.refused += 1
            return False
        self.accepted.append(event_id)
        return True


async def retention_experiment(db: Database, *, keeps_status: bool, events: int = 20,
                               fail_every: int = FAIL_EVERY) -> RetentionResult:
    run = run_id()
    design = Design(status_column=keeps_status, sequence=False, versioned=False)
    metadata, table, _ = scratch_metadata(design, run, "keep" if keeps_status else "delete")
    broker = FlakyBroker(fail_every)
    async with Scratch(db, metadata):
        start = _now()
        async with writing(db) as conn:
            await conn.execute(insert(table), [
                {"id": f"{n:04d}-{run}", "aggregate_id": "user-1", "event_type": "AIRScoreCalculated",
                 "payload": {"n": n}, "created_at": start + timedelta(milliseconds=n)} for n in range(1, events + 1)
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
                    if broker.publish(event_id, payload["n"]):
                        if keeps_status:
                            await conn.execute(update(table).where(table.c.id == event_id)
                                               .values(status="published", published_at=_now()))
                        else:
                            await conn.execute(delete(table).where(table.c.id == event_id))
                    elif keeps_status:
                        await conn.execute(update(table).where(table.c.id == event_id)
                                           .values(attempts=table.c.attempts + 1))
        async with db.engine.connect() as conn:
            rows_left = await conn.scalar(select(func.count()).select_from(table))
            history = recorded = 0
            if keeps_status:
                history = await conn.scalar(select(func.count()).select_from(table)
                                            .where(table.c.status == "published"))
                recorded = await conn.scalar(select(func.coalesce(func.sum(table.c.attempts), 0)))
    return RetentionResult(keeps_status, events, len(set(broker.accepted)), broker.refused,
                           rows_left, history, recorded)


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
    behind writer A's. Each stamps created_at from its clock as it builds the event, then in one
    transaction takes the aggregate's counter row (UPDATE ... RETURNING: a row lock on
    PostgreSQL; on SQLite the write lock taken at BEGIN IMMEDIATE) and inserts the event with that
    sequence number. Writers hold the lock until they commit, so the order in which they take it is
    the commit order: it is recorded here, while the lock is held, as the truth."""
    run = run_id()
    metadata, table, counter = scratch_metadata(Design(status_column=False, sequence=True, versioned=False),
                                                run, "order")
    aggregate = "user-1"
    committed: list[str] = []  # event ids in the order their transactions took the lock
    writer_of: dict[str, str] = {}
    async with Scratch(db, metadata):
        async with writing(db) as conn:
            await conn.execute(insert(counter).values(aggregate_id=aggregate, last_sequence=0))

        async def writer(name: str, offset: timedelta) -> None:
            for n in range(per_writer):
                event_id = f"{name}{n:03d}-{run}"
                created_at = _now() - offset  # this writer's app clock
                async with writing(db) as conn:
                    sequence = (await conn.execute(
                        update(counter).where(counter.c.aggregate_id == aggregate)
                        .values(last_sequence=counter.c.last_sequence + 1).returning(counter.c.last_sequence)
                    )).scalar_one()
                    committed.append(event_id)
                    writer_of[event_id] = name
                    await conn.execute(insert(table).values(
                        id=event_id, aggregate_id=aggregate, event_type="AIRScoreCalculated",
                        payload={"writer": name}, created_at=created_at, sequence=sequence))
                await asyncio.sleep(random.uniform(0, 0.003))  # think time: the writers interleave

        await asyncio.gather(writer("A", timedelta(0)), writer("B", timedelta(milliseconds=skew_ms)))
        async with db.engine.connect() as conn:
            by_time = (await conn.scalars(select(table.c.id).order_by(table.c.created_at, table.c.id))).all()
            by_sequence = (await conn.scalars(select(table.c.id).order_by(table.c.sequence))).all()
            sequences = (await conn.scalars(select(table.c.sequence).order_by(table.c.sequence))).all()
            rows = {r.id: r for r in (await conn.execute(select(table))).all()}
    first = [{"commit order": n + 1, "writer": writer_of[i], "sequence": rows[i].sequence,
              "created_at": f"{_aware(rows[i].created_at):%H:%M:%S.%f}"[:-3]} for n, i in enumerate(committed[:8])]
    switches = sum(1 for a, b in zip(committed, committed[1:], strict=False) if writer_of[a] != writer_of[b])
    return OrderingResult(skew_ms, len(committed), inversions(committed, by_time), inversions(committed, by_sequence),
                          list(sequences) == list(range(1, len(committed) + 1)), switches, first)


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
    start, rows = _now(), []
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


# --- 4. how the relay wakes: polling vs LISTEN/NOTIFY ------------------------------------------


@dataclass(frozen=True)
class WakeResult:
    mode: str
    interval: float  # polling: seconds between looks; notify: seconds without a wake before it looks anyway
    idle_seconds: float
    idle_queries: int  # statements the relay sent while nothing was written
    latencies_ms: list[float]  # from sending COMMIT to the stream's reply to XADD, per event
    appended: int  # entries the stream holds afterwards

    @property
    def idle_queries_per_second(self) -> float:
        return self.idle_queries / self.idle_seconds

    @property
    def median_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[len(ordered) // 2]


def _asyncpg_dsn(db: Database) -> str:
    return db.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def wake_experiment(db: Database, redis_client, *, prefix: str, mode: str = "poll", interval: float = 0.5, fallback: float = 5.0,
                          idle_seconds: float = 2.0, events: int = 5) -> WakeResult:
    """A relay on a throwaway table appends pending rows to a throwaway stream. First it runs
    `idle_seconds` with nothing to do (its statements are counted); then `events` rows are
    committed at random moments and each one's latency is taken from sending COMMIT to the
    reply to XADD. "notify": the writer calls pg_notify in its transaction (delivered at
    commit); the relay listens and looks when woken, or after `fallback` seconds without a wake
    (in case a notification is missed, e.g. while the listening connection reconnects)."""
    if mode == "notify" and db.backend != "postgresql":
        raise ValueError("LISTEN/NOTIFY exists on PostgreSQL only")
    run = run_id()
    metadata, table, _ = scratch_metadata(Design(status_column=True, sequence=False, versioned=False), run, "wake")
    stream, channel = f"{prefix}evd:{run}:wake", f"evd_{run}"
    committing: dict[str, float] = {}
    appended_at: dict[str, float] = {}
    woken, stop, looked = asyncio.Event(), asyncio.Event(), asyncio.Event()
    listener = None
    counted = {"queries": 0}
    wait = fallback if mode == "notify" else interval

    async def relay() -> None:
        with record(db) as log:
            while not stop.is_set():
                woken.clear()  # before looking: a commit's notification after this wakes the next look
                async with writing(db) as conn:
                    rows = (await conn.execute(select(table.c.id).where(table.c.status == "pending")
                                               .order_by(table.c.created_at))).all()
                    for (event_id,) in rows:
                        await redis_client.xadd(stream, {"id": event_id})
                        appended_at[event_id] = time.perf_counter()
                    if rows:
                        await conn.execute(update(table).where(table.c.id.in_([r[0] for r in rows]))
                                           .values(status="published", published_at=_now()))
                counted["queries"] = log.count
                looked.set()
                try:
                    await asyncio.wait_for(_first(woken.wait(), stop.wait()), wait)
                except TimeoutError:
                    pass

    task: asyncio.Task | None = None
    try:
        async with Scratch(db, metadata):
            try:
                if mode == "notify":
                    import asyncpg

                    listener = await asyncpg.connect(_asyncpg_dsn(db))
                    await listener.add_listener(channel, lambda *_: woken.set())
                task = asyncio.create_task(relay())
                await _first(looked.wait(), asyncio.shield(task))  # the relay's first look, before the idle window
                if task.done():
                    task.result()  # the relay failed: raise its error
                before = counted["queries"]
                await asyncio.sleep(idle_seconds)
                idle = counted["queries"] - before
                for n in range(events):
                    await asyncio.sleep(random.uniform(0.05, max(0.1, interval)))
                    event_id = f"w{n:03d}-{run}"
                    async with writing(db) as conn:
                        await conn.execute(insert(table).values(
                            id=event_id, aggregate_id="user-1", event_type="AIRScoreCalculated",
                            payload={"n": n}, created_at=_now()))
                        if mode == "notify":
                            await conn.execute(text("SELECT pg_notify(:channel, :id)"),
                                               {"channel": channel, "id": event_id})
                        committing[event_id] = time.perf_counter()  # the block's end sends COMMIT
                deadline = time.perf_counter() + wait + 5
                while len(appended_at) < events and time.perf_counter() < deadline and not task.done():
                    await asyncio.sleep(0.01)
                stop.set()
                await task
                length = await redis_client.xlen(stream)
            finally:  # the relay and the listener stop before their table goes
                stop.set()
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                if listener is not None:
                    await listener.close()
    finally:
        await redis_client.delete(stream)
    latencies = [(appended_at[i] - committing[i]) * 1000 for i in committing if i in appended_at]
    return WakeResult(mode, wait, idle_seconds, idle, latencies, length)


async def _first(*awaitables) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
