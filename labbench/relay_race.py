"""Section 5's several-relays experiment: N relays, each on a thread of its own with its own event
loop, engine and Redis client, drain a burst of events with one claim design; then an outside
observer reads the stream (XRANGE) and compares each user's sequence with the database's order.

In aggregate order on PostgreSQL the relays first take their shares of the partitions
(source/partitions.py), read from the lease table, and only then does the clock start. One relay
can be stopped mid-run as if its process died: its batch appended, its transaction rolled back, no
more heartbeats. The observer then reads from the lease table when its partitions change hands.

It runs on throwaway tables (PostgreSQL: a schema `relays_<run>` in the app's database; SQLite: a
file of its own) and a throwaway stream, all removed afterwards: the lab's publisher, its tables
and its stream are not touched.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import fakeredis
import redis.asyncio as aioredis
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from labbench.faults import Faults, FaultyBroker, SimulatedCrash
from labbench.progress import Report, silent
from labbench.throwaway import RELAY_TABLES, throwaway_tables
from source import config
from source.database import Database
from source.event_repository import DomainEventRepository
from source.models import AggregateSequence, DomainEvent, new_id, partition_of
from source.outbox import RelaySettings, relay_batch
from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER
from source.partitions import LEASES, Partitions, fair_share
from source.redis_setup import RedisTarget, make_redis_client

DESIGNS = (AGGREGATE_ORDER, ANY_ORDER)
TABLES = [AggregateSequence.__table__, DomainEvent.__table__, *RELAY_TABLES]
LIMITS = {"relays": (1, 8), "events": (100, 20_000), "users": (1, 1_000)}
STOP_AFTER = 2  # the stopped relay publishes this many batches, then dies in its next one
LOOK = 0.02  # seconds between an idle relay's looks, and between the observer's reads of the leases


@dataclass(frozen=True)
class Holding:
    relay: int  # numbered from 1
    partitions: tuple[int, ...]  # held once the relays had settled (aggregate order on PostgreSQL)
    users: int  # users in those partitions
    published: int  # events this relay published (its own count; a batch it died in not included)


@dataclass(frozen=True)
class Stop:
    relay: int
    at: float  # seconds after the clock started: its transaction had rolled back
    in_flight: int  # events it had appended in the batch it died in
    partitions: tuple[int, ...]  # the leases it still held (the lease table, at its stop)
    taken_at: float | None = None  # seconds after the clock started: every one of them held by another relay
    taken_by: tuple[tuple[int, tuple[int, ...]], ...] = ()  # (relay, the partitions it took)


@dataclass(frozen=True)
class RaceResult:
    design: str
    backend: str
    relays: int
    events: int  # created
    users: int
    seconds: float  # from the clock's start until a relay found nothing pending
    settle_seconds: float  # from the relays' start until each was ready (holding its share, if leased)
    appended: int  # entries the stream received
    duplicates: int  # entries of an event that was already in the stream
    inversions: int  # events that reached the stream after a later event of the same user
    missing: int  # events never appended
    holdings: tuple[Holding, ...]
    partitioned: bool  # aggregate order on PostgreSQL: relays hold leased partitions
    stop: Stop | None = None
    locked_out: int = 0  # SQLite: batches that gave up waiting for the write lock, and were tried again

    @property
    def per_relay(self) -> tuple[int, ...]:
        return tuple(h.published for h in self.holdings)

    @property
    def events_per_s(self) -> float:
        return (self.appended - self.duplicates) / self.seconds if self.seconds else 0.0


def check_input(*, relays: int, events: int, users: int, stop: bool = False) -> dict[str, str]:
    """A message per field that is out of range (empty: all good)."""
    values = {"relays": relays, "events": events, "users": users}
    problems = {name: f"Choose {low:,} to {high:,}." for name, (low, high) in LIMITS.items()
                if not isinstance(values[name], int) or not low <= values[name] <= high}
    if stop and "relays" not in problems and relays < 2:
        problems["relays"] = "Choose 2 or more to stop one: another must take over."
    return problems


def order_faults(stream_entries: list[dict], database_order: list[tuple[str, str]]) -> tuple[int, int, int]:
    """(duplicates, inversions, missing) as an observer sees them: `stream_entries` are the stream's
    fields in stream order, `database_order` the (aggregate_id, event_id) pairs in each user's
    commit order (their sequence numbers). A repeat of an event is a duplicate, not an inversion."""
    rank = {event_id: i for i, (_, event_id) in enumerate(database_order)}
    seen: set[str] = set()
    latest: dict[str, int] = {}  # per aggregate, the highest rank appended so far
    duplicates = inversions = 0
    for fields in stream_entries:
        event_id, aggregate = fields["event_id"], fields["aggregate_id"]
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        if rank[event_id] < latest.get(aggregate, -1):
            inversions += 1
        latest[aggregate] = max(rank[event_id], latest.get(aggregate, -1))
    return duplicates, inversions, len(rank) - len(seen)


# --- the throwaway outbox --------------------------------------------------------------------


@asynccontextmanager
async def throwaway_outbox(database_url: str, *, events: int, users: int) -> AsyncIterator[Callable[[], Database]]:
    """Fresh outbox and lease tables, the outbox holding a burst of `events` pending events over
    `users` users; yields a factory of Databases (each its own engine) whose sessions see them."""
    async with throwaway_tables(database_url, name="relays", tables=TABLES) as connect:
        admin = connect()
        try:
            await add_burst(admin, events=events, users=users)
            if connect.schema:  # as autovacuum soon would: without statistics the claim's plan is a poor guess
                async with admin.engine.begin() as conn:
                    await conn.execute(text(f'ANALYZE "{connect.schema}".domain_events'))
        finally:
            await admin.dispose()
        yield connect


def race_event(n: int, user: str) -> DomainEvent:
    return DomainEvent(event_type="RelayRace", aggregate_type="User", aggregate_id=user, payload={"n": n})


async def add_burst(db: Database, *, events: int, users: int,
                    make: Callable[[int, str], DomainEvent] = race_event) -> None:
    """`events` events (the n-th: make(n, its user)) over `users` users, round robin, numbered per
    user by the lab's repository, committed 500 at a time."""
    aggregates = [new_id() for _ in range(users)]
    for start in range(0, events, 500):
        async with db.sessions.begin() as session:
            await DomainEventRepository(session).add_all(
                [make(i, aggregates[i % users]) for i in range(start, min(start + 500, events))])


async def pending(db: Database) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).where(DomainEvent.status == "pending"))


async def leases(db: Database) -> dict[int, str | None]:
    """Each partition's holder under a lease not yet expired, as the lease table says now."""
    async with db.sessions() as session:
        rows = await session.execute(select(LEASES.partition, LEASES.holder, LEASES.expires_at > func.now()))
        return {partition: holder if live else None for partition, holder, live in rows}


async def users_per_partition(db: Database) -> dict[int, int]:
    key = partition_of(DomainEvent.aggregate_type, DomainEvent.aggregate_id)
    async with db.sessions() as session:
        rows = await session.execute(select(key, func.count(DomainEvent.aggregate_id.distinct())).group_by(key))
        return dict(rows.all())


# --- the relays -------------------------------------------------------------------------------


@dataclass
class _Shared:
    """What the relay threads and the observer share."""

    deadline: float
    go: threading.Event = field(default_factory=threading.Event)  # the clock starts
    finish: threading.Event = field(default_factory=threading.Event)  # drained relays may end
    drained_at: float | None = None  # when a relay first found nothing pending (perf_counter)


@dataclass
class _Relay:
    """One relay thread: set up by the race, written by its thread, read once it ended."""

    number: int
    partitions: Partitions
    faults: Faults | None
    stop_after: int | None  # batches before it dies; None: it runs until the burst is drained
    ready: bool = False
    published: int = 0
    stopped_at: float | None = None
    in_flight: int = 0
    locked_out: int = 0
    error: BaseException | None = None
    thread: threading.Thread | None = None


async def _get_ready(relay: _Relay, db: Database, client, shared: _Shared, *, leased: bool) -> None:
    """Connected, and in aggregate order holding its share: heartbeats until the clock starts."""
    while not shared.go.is_set():
        if time.monotonic() > shared.deadline:
            raise TimeoutError("the relays did not take their partitions in time")
        if leased or not relay.ready:
            if leased:
                await relay.partitions.refresh(db)
            else:
                await pending(db)
                await client.ping()
            relay.ready = True
        await asyncio.sleep(LOOK)


async def _drain(relay: _Relay, db: Database, broker, stream: str, settings: RelaySettings, shared: _Shared,
                 *, faulty: bool) -> None:
    batches = 0
    while time.monotonic() < shared.deadline:
        dying = relay.stop_after is not None and batches >= relay.stop_after
        if dying and not relay.faults.crash_armed:
            relay.faults.arm_crash()  # its next batch is appended, then its transaction rolls back
        try:
            result = await relay_batch(db=db, redis_client=broker, stream=stream, settings=settings,
                                       partitions=relay.partitions)
        except SimulatedCrash as crash:
            if dying:  # as if its process died: no commit, no more heartbeats, no leave
                relay.in_flight, relay.stopped_at = crash.appended, time.perf_counter()
                return
            continue  # a crash of the fault rate: the relay starts again, its events still pending
        except OperationalError as exc:
            if db.backend != "sqlite" or "locked" not in str(exc):
                raise
            # SQLite's busy timeout ran out: the relay that commits begins its next batch at once, while a
            # waiting one only looks between sleeps. Tried again, as the publisher does.
            relay.locked_out += 1
            continue
        relay.published += result.published
        if result.error and not faulty:
            raise RuntimeError(result.error)
        if result.claimed:
            batches += 1
            continue
        if relay.stop_after is not None:  # nothing of its own left: it dies idle, its leases still held
            relay.stopped_at = time.perf_counter()
            return
        if await pending(db) == 0:
            shared.drained_at = shared.drained_at or time.perf_counter()
            if shared.finish.is_set():
                return
        await asyncio.sleep(LOOK)  # the rest is held by other relays, or waits for a take-over
    raise TimeoutError("the relays did not drain the burst in time")


def _relay_thread(relay: _Relay, connect: Callable[[], Database], make_client: Callable[[], aioredis.Redis],
                  stream: str, settings: RelaySettings, shared: _Shared, leased: bool, faulty: bool) -> None:
    async def main() -> None:
        db, client = connect(), make_client()
        broker = client if relay.faults is None else FaultyBroker(client, relay.faults)
        try:
            await _get_ready(relay, db, client, shared, leased=leased)
            await _drain(relay, db, broker, stream, settings, shared, faulty=faulty)
        finally:
            await client.aclose()
            await db.dispose()

    try:
        asyncio.run(main())  # this thread's own loop, engine and client
    except Exception as exc:
        relay.error = exc


# --- the observer -----------------------------------------------------------------------------


async def _settled(db: Database, relays: list[_Relay], *, leased: bool) -> dict[int, str | None] | None:
    """The lease table once every relay holds its fair share (in aggregate order), else None."""
    if not all(relay.ready for relay in relays):
        return None
    if not leased:
        return {}
    held = await leases(db)
    members = sorted(relay.partitions.relay_id for relay in relays)
    for relay in relays:
        me = relay.partitions.relay_id
        if sum(holder == me for holder in held.values()) != fair_share(members, me):
            return None
    return held


async def _watch(db: Database, relays: list[_Relay], shared: _Shared, started: float, *, leased: bool,
                 progress: Callable[[], Awaitable[None]]) -> Stop | None:
    """Until the relay threads end: the stopped relay's leases, read until others hold every one."""
    stopping = next((relay for relay in relays if relay.stop_after is not None), None)
    if stopping is None or not leased:
        shared.finish.set()
    stop: Stop | None = None
    names = {relay.partitions.relay_id: relay.number for relay in relays}
    while any(relay.thread.is_alive() for relay in relays):
        await progress()
        if stopping is not None and stopping.stopped_at is not None and leased and not shared.finish.is_set():
            now, held = time.perf_counter(), await leases(db)
            me = stopping.partitions.relay_id
            if stop is None:
                theirs = tuple(p for p, holder in sorted(held.items()) if holder == me)
                stop = Stop(stopping.number, stopping.stopped_at - started, stopping.in_flight, theirs)
            elif all(held[p] not in (None, me) for p in stop.partitions):
                takers = sorted({names[held[p]] for p in stop.partitions})
                stop = replace(stop, taken_at=now - started, taken_by=tuple(
                    (n, tuple(p for p in stop.partitions if names[held[p]] == n)) for n in takers))
                shared.finish.set()
        await asyncio.sleep(LOOK)
    if stop is None and stopping is not None and stopping.stopped_at is not None:
        stop = Stop(stopping.number, stopping.stopped_at - started, stopping.in_flight, ())
    return stop


async def race(*, database_url: str, redis_target: RedisTarget, fake_server: fakeredis.FakeServer | None = None,
               relays: int, design: str, events: int, users: int, batch_size: int = 100, stop_one: bool = False,
               key_prefix: str | None = None, timeout: float = 120.0, settings: RelaySettings | None = None,
               broker_failure_rate: float = 0.0, crash_rate: float = 0.0, report: Report = silent) -> RaceResult:
    """Run the experiment; raises ValueError for input out of range. `stop_one`: relay 1 publishes
    STOP_AFTER batches, then dies in its next one (or when it first finds nothing to claim). With a
    broker failure rate or a crash rate, each relay's broker client is wrapped in the lab's faults
    (labbench.faults): a batch whose broker cannot be reached, or a relay that dies after appending
    and starts again, at those rates."""
    if problems := check_input(relays=relays, events=events, users=users, stop=stop_one):
        raise ValueError("; ".join(f"{name}: {why}" for name, why in problems.items()))
    if design not in DESIGNS:
        raise ValueError(f"design: one of {', '.join(DESIGNS)}")
    run = uuid.uuid4().hex[:10]
    stream = f"{config.redis_prefix() if key_prefix is None else key_prefix}relay-race:{run}"
    settings = replace(settings or RelaySettings(), batch_size=batch_size, design=design)  # its back-off, say
    faulty = bool(broker_failure_rate or crash_rate)

    def make_client() -> aioredis.Redis:
        return make_redis_client(redis_target, timeout=5.0, fake_server=fake_server)

    observer = make_client()
    try:
        report(f"Storing {events:,} events over {users:,} users in a throwaway table", 0.0)
        async with throwaway_outbox(database_url, events=events, users=users) as connect:
            db = connect()
            try:
                leased = db.backend == "postgresql" and design == AGGREGATE_ORDER
                shared = _Shared(deadline=time.monotonic() + timeout)
                crew = [_Relay(n, Partitions(f"relay-{n}-{run}"),
                               Faults(broker_failure_rate=broker_failure_rate, crash_rate=crash_rate, seed=n)
                               if faulty or (stop_one and n == 1) else None,
                               STOP_AFTER if stop_one and n == 1 else None)
                        for n in range(1, relays + 1)]
                for relay in crew:
                    relay.thread = threading.Thread(
                        target=_relay_thread, name=f"lab2-relay-race-{relay.number}", daemon=True,
                        args=(relay, connect, make_client, stream, settings, shared, leased, faulty))
                    relay.thread.start()
                began = time.perf_counter()
                report("The relays take their shares of the partitions" if leased else "The relays connect", 0.0)
                while (held := await _settled(db, crew, leased=leased)) is None:
                    if time.monotonic() > shared.deadline or any(r.error for r in crew):
                        break
                    await asyncio.sleep(LOOK)
                started = time.perf_counter()
                shared.go.set()

                async def progress() -> None:
                    appended = await observer.xlen(stream)
                    report(f"{appended:,} entries in the stream", min(appended / events, 1.0))

                stop = await _watch(db, crew, shared, started, leased=leased, progress=progress)
                if failures := [relay.error for relay in crew if relay.error]:
                    raise failures[0]
                async with db.sessions() as session:
                    order = (await session.execute(select(DomainEvent.aggregate_id, DomainEvent.id)
                                                   .order_by(DomainEvent.aggregate_id, DomainEvent.sequence))).all()
                per_partition = await users_per_partition(db) if leased else {}
                backend = db.backend
            finally:
                await db.dispose()
        entries = [fields for _, fields in await observer.xrange(stream)]
        duplicates, inversions, missing = order_faults(entries, [tuple(row) for row in order])
        holdings = tuple(Holding(relay.number, mine := tuple(p for p, h in sorted((held or {}).items())
                                                             if h == relay.partitions.relay_id),
                                 sum(per_partition.get(p, 0) for p in mine), relay.published)
                         for relay in crew)
        return RaceResult(design, backend, relays, events, users, shared.drained_at - started, started - began,
                          len(entries), duplicates, inversions, missing, holdings, leased, stop,
                          sum(relay.locked_out for relay in crew))
    finally:
        await observer.delete(stream)
        await observer.aclose()
