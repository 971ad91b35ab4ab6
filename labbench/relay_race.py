"""Section 5's several-relays experiment: N relays, each on a thread of its own with its own event
loop, engine and Redis client, drain a burst of events with one claim design; then an outside
observer reads the stream (XRANGE) and compares each user's sequence with the database's order.

It runs on a throwaway outbox table (PostgreSQL: a schema `relays_<run>` in the app's database;
SQLite: a file of its own) and a throwaway stream, both removed afterwards: the lab's publisher,
its table and its stream are not touched.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import fakeredis
import redis.asyncio as aioredis
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

from labbench.faults import Faults, FaultyBroker, SimulatedCrash
from source import config
from source.database import Database
from source.event_repository import DomainEventRepository
from source.models import AggregateSequence, Base, DomainEvent, new_id
from source.outbox import RelaySettings, relay_batch
from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER
from source.redis_setup import RedisTarget, make_redis_client

DESIGNS = (AGGREGATE_ORDER, ANY_ORDER)
LIMITS = {"relays": (1, 8), "events": (100, 20_000), "users": (1, 1_000)}


@dataclass(frozen=True)
class RaceResult:
    design: str
    backend: str
    relays: int
    events: int  # created
    seconds: float  # from the relays' start until the last one found nothing pending
    appended: int  # entries the stream received
    duplicates: int  # entries of an event that was already in the stream
    inversions: int  # events that reached the stream after a later event of the same user
    missing: int  # events never appended
    per_relay: tuple[int, ...]  # events each relay published

    @property
    def events_per_s(self) -> float:
        return (self.appended - self.duplicates) / self.seconds if self.seconds else 0.0


def check_input(*, relays: int, events: int, users: int) -> dict[str, str]:
    """A message per field that is out of range (empty: all good)."""
    values = {"relays": relays, "events": events, "users": users}
    return {name: f"Choose {low:,} to {high:,}." for name, (low, high) in LIMITS.items()
            if not isinstance(values[name], int) or not low <= values[name] <= high}


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
    """A fresh outbox table holding a burst of `events` pending events over `users` users; yields a
    factory of Databases (each its own engine) whose sessions see that table. Removed on exit."""
    run, folder, schema = uuid.uuid4().hex[:10], None, None
    if make_url(database_url).get_backend_name() == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="lab2-relays-"))
        database_url = f"sqlite+aiosqlite:///{folder / 'relays.db'}"
    else:
        schema = f"relays_{run}"

    def connect() -> Database:
        db = Database(database_url, pool_size=2, max_overflow=2, application_name="lab2-relay-race")
        if schema:  # the model's unqualified table, rendered as relays_<run>.domain_events
            db.sessions = async_sessionmaker(
                db.engine.execution_options(schema_translate_map={None: schema}), expire_on_commit=False
            )
        return db

    admin = connect()
    try:
        async with admin.engine.begin() as conn:
            if schema:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                conn = await conn.execution_options(schema_translate_map={None: schema})
            await conn.run_sync(Base.metadata.create_all, tables=[AggregateSequence.__table__, DomainEvent.__table__])
        await add_burst(admin, events=events, users=users)
        if schema:  # as autovacuum soon would: without statistics the claim's plan is a poor guess
            async with admin.engine.begin() as conn:
                await conn.execute(text(f'ANALYZE "{schema}".domain_events'))
        yield connect
    finally:
        try:
            if schema:
                async with admin.engine.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await admin.dispose()
            if folder:
                shutil.rmtree(folder, ignore_errors=True)


async def add_burst(db: Database, *, events: int, users: int) -> None:
    """`events` events over `users` users, round robin, committed 500 at a time."""
    aggregates = [new_id() for _ in range(users)]
    for start in range(0, events, 500):
        async with db.sessions.begin() as session:
            await DomainEventRepository(session).add_all([
                DomainEvent(event_type="RelayRace", aggregate_type="User", aggregate_id=aggregates[i % users],
                            payload={"n": i})
                for i in range(start, min(start + 500, events))
            ])


async def pending(db: Database) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).where(DomainEvent.status == "pending"))


# --- the relays -------------------------------------------------------------------------------


async def _relay_until_drained(db: Database, client: aioredis.Redis, stream: str, settings: RelaySettings,
                               deadline: float, *, faulty: bool) -> int:
    published = 0
    while time.monotonic() < deadline:
        try:
            result = await relay_batch(db=db, redis_client=client, stream=stream, settings=settings)
        except SimulatedCrash:
            continue  # the relay died after appending: its transaction rolled back, the events stay pending
        published += result.published
        if result.error and not faulty:
            raise RuntimeError(result.error)
        if not result.claimed:
            if await pending(db) == 0:
                return published
            await asyncio.sleep(0.002)  # the rest is held by other relays
    raise TimeoutError("the relays did not drain the burst in time")


def _relay_thread(connect: Callable[[], Database], make_client: Callable[[], aioredis.Redis], stream: str,
                  settings: RelaySettings, deadline: float, out: list, index: int, faults: Faults | None) -> None:
    async def main() -> None:
        db, client = connect(), make_client()
        broker = client if faults is None else FaultyBroker(client, faults)
        try:
            out[index] = await _relay_until_drained(db, broker, stream, settings, deadline, faulty=faults is not None)
        finally:
            await client.aclose()
            await db.dispose()

    try:
        asyncio.run(main())  # this thread's own loop, engine and client
    except Exception as exc:
        out[index] = exc


async def race(*, database_url: str, redis_target: RedisTarget, fake_server: fakeredis.FakeServer | None = None,
               relays: int, design: str, events: int, users: int, batch_size: int = 100,
               key_prefix: str | None = None, timeout: float = 120.0, settings: RelaySettings | None = None,
               broker_failure_rate: float = 0.0, crash_rate: float = 0.0) -> RaceResult:
    """Run the experiment; raises ValueError for input out of range. With a broker failure rate or a
    crash rate, each relay's broker client is wrapped in the lab's faults (labbench.faults): a batch
    whose broker cannot be reached, or a relay that dies after appending, at those rates."""
    if problems := check_input(relays=relays, events=events, users=users):
        raise ValueError("; ".join(f"{name}: {why}" for name, why in problems.items()))
    if design not in DESIGNS:
        raise ValueError(f"design: one of {', '.join(DESIGNS)}")
    stream = f"{config.redis_prefix() if key_prefix is None else key_prefix}relay-race:{uuid.uuid4().hex[:10]}"
    settings = replace(settings or RelaySettings(), batch_size=batch_size, design=design)  # its back-off, say
    faulty = bool(broker_failure_rate or crash_rate)

    def make_client() -> aioredis.Redis:
        return make_redis_client(redis_target, timeout=5.0, fake_server=fake_server)

    observer = make_client()
    try:
        async with throwaway_outbox(database_url, events=events, users=users) as connect:
            db = connect()
            try:
                out: list = [0] * relays
                threads = [threading.Thread(target=_relay_thread, name=f"lab2-relay-race-{i}", daemon=True,
                                            args=(connect, make_client, stream, settings,
                                                  time.monotonic() + timeout, out, i,
                                                  Faults(broker_failure_rate=broker_failure_rate, crash_rate=crash_rate,
                                                         seed=i) if faulty else None))
                           for i in range(relays)]
                started = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    await asyncio.to_thread(thread.join)
                seconds = time.perf_counter() - started
                if failures := [o for o in out if isinstance(o, BaseException)]:
                    raise failures[0]
                async with db.sessions() as session:
                    order = (await session.execute(select(DomainEvent.aggregate_id, DomainEvent.id)
                                                   .order_by(DomainEvent.aggregate_id, DomainEvent.sequence))).all()
                backend = db.backend
            finally:
                await db.dispose()
        entries = [fields for _, fields in await observer.xrange(stream)]
        duplicates, inversions, missing = order_faults(entries, [tuple(row) for row in order])
        return RaceResult(design, backend, relays, events, seconds, len(entries), duplicates, inversions,
                          missing, tuple(out))
    finally:
        await observer.delete(stream)
        await observer.aclose()
