"""Section 5's arc on the learner's own outbox: the minimal relay and consumer
(source/outbox_minimal.py) and the lab's (outbox.relay_batch, inbox.apply_entries, reconcile.py) run
against the same failure, and an observer counts what each lost, applied twice or put out of order.

Everything runs on a throwaway outbox: the lab's own tables in a schema of their own (PostgreSQL:
`arc_<run>` in the app's database) or a file of their own (SQLite), and a stream of its own, all
removed afterwards; the shared publisher, its table and its stream are never touched. The failures
come from outside the code under test: a wrapper around its broker client makes it die right after
an append, and the observer deletes the stream's last entries as a Redis restarted from an older
snapshot would have lost them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from labbench.faults import Faults, FaultyBroker, SimulatedCrash, WrappedBroker
from labbench.progress import Report, silent
from labbench.throwaway import RELAY_TABLES, throwaway_tables
from source import outbox_minimal
from source.consumer import ensure_group, read_raw
from source.database import Database
from source.event_repository import DomainEventRepository
from source.inbox import apply_entries
from source.models import AggregateSequence, DomainEvent, InboxEntry, ScoreSummary, new_id
from source.outbox import RelaySettings, relay_batch
from source.partitions import Partitions
from source.reconcile import reconcile

FAILURES = {
    "crash": "The relay dies right after appending its batch, before its commit",
    "two relays": "Two relays run at once",
    "rollback": "Redis comes back without its last 20 entries (an older snapshot)",
}
USERS, EVENTS, BATCH = 4, 40, 20
TABLES = [AggregateSequence.__table__, DomainEvent.__table__, InboxEntry.__table__, ScoreSummary.__table__,
          *RELAY_TABLES]


@dataclass(frozen=True)
class ArcResult:
    code: str  # "minimal" or "lab"
    failure: str
    backend: str
    written: int  # events committed by the writer
    appended: int  # stream entries the relays appended
    applied: int  # distinct events the consumer applied
    applied_twice: int  # effects applied more than once
    inversions: int  # a user's event in the stream after a later one of the same user
    lost: int  # events never applied
    failed_cycles: int = 0  # relay cycles the database refused (SQLite: "database is locked")


@asynccontextmanager
async def throwaway_outbox(db: Database) -> AsyncIterator[Database]:
    """A Database whose sessions see the lab's outbox tables in a schema (or file) of their own."""
    async with throwaway_tables(db.url, name="arc", tables=TABLES, pool_size=3) as connect:
        own = connect()
        try:
            yield own
        finally:
            await own.dispose()


class _DiesAfterAppending(WrappedBroker):
    """The minimal relay's broker client: the `after`-th XADD is made, then the relay dies."""

    def __init__(self, client: aioredis.Redis, after: int) -> None:
        super().__init__(client, lambda pipeline: pipeline)
        self.left = after

    async def xadd(self, *args, **kwargs):
        entry = await self.client.xadd(*args, **kwargs)
        self.left -= 1
        if self.left == 0:
            raise SimulatedCrash(BATCH)
        return entry


async def _write(db: Database, users: list[str], count: int) -> None:
    for n in range(count):  # one transaction per score, as the app's writer commits them
        async with db.sessions.begin() as session:
            user = users[n % len(users)]
            await DomainEventRepository(session).add(DomainEvent(
                event_type="AIRScoreCalculated", aggregate_type="User", aggregate_id=user,
                payload={"score_id": new_id(), "user_id": user, "air_score": 50.0 + n % 40}))


async def _relay(own: Database, client, stream: str, *, lab: bool, partitions: Partitions,
                 failures: list | None = None) -> int:
    """One relay until nothing is due; a crash is a dead relay, whose successor starts over; a cycle
    the database refuses is counted in `failures` and tried again. The lab's relay claims under
    `partitions` (its identity: partitions.py); a successor keeps its predecessor's."""
    appended = 0
    while True:
        try:
            if lab:
                result = await relay_batch(db=own, redis_client=client, stream=stream,
                                           settings=RelaySettings(batch_size=BATCH), partitions=partitions)
                claimed, published = result.claimed, result.published
            else:
                claimed = published = await outbox_minimal.relay_once(
                    sessions=own.sessions, redis_client=client, stream=stream, batch_size=BATCH)
        except SimulatedCrash:
            client = getattr(client, "client", client)  # the relay's successor has a working broker
            continue
        except OperationalError as exc:  # SQLite: two relays' read locks, each waiting to write
            if failures is None or "locked" not in str(exc.orig):
                raise
            failures.append(exc)
            await asyncio.sleep(0.01)
            continue
        appended += published
        if not claimed:
            return appended
        await asyncio.sleep(0)  # let another relay in between batches


async def _consume(own: Database, client, stream: str, *, lab: bool) -> None:
    """Read the stream to its end with a consumer group, as the minimal or the lab's consumer."""
    while True:
        if lab:
            reply = await read_raw(client, "XREADGROUP", "GROUP", "arc", "c1", "COUNT", 100, "BLOCK", 50,
                                   "STREAMS", stream, ">")
            entries = [(entry_id.decode(), fields) for _, batch in reply or [] for entry_id, fields in batch]
            if not entries:
                return
            await apply_entries(db=own, entries=entries)
            await client.xack(stream, "arc", *[entry_id for entry_id, _ in entries])
        elif not await outbox_minimal.consume_once(sessions=own.sessions, redis_client=client, stream=stream,
                                                   group="arc", consumer="c1"):
            return


async def _lose_last_entries(client, stream: str, count: int) -> None:
    """What a Redis restarted from an older snapshot loses: the stream's newest entries, unseen by
    the group (its last-delivered ID goes back with it, and nothing is pending)."""
    newest = await client.xrevrange(stream, count=count)
    await client.xdel(stream, *[entry_id for entry_id, _ in newest])


async def run(db: Database, redis_client: aioredis.Redis, *, prefix: str, failure: str, lab: bool,
              report: Report = silent) -> ArcResult:
    """The failure against the minimal code (lab=False) or the lab's (lab=True)."""
    if failure not in FAILURES:
        raise ValueError(f"failure: one of {', '.join(FAILURES)}")
    stream = f"{prefix}arc:{uuid.uuid4().hex[:10]}"
    code = "lab" if lab else "minimal"
    users = [new_id() for _ in range(USERS)]
    try:
        async with throwaway_outbox(db) as own:
            await ensure_group(redis_client, stream=stream, group="arc")
            count = {"two relays": EVENTS * 5, "rollback": EVENTS // 2}.get(failure, EVENTS)
            report(f"{code}: writing {count} scores' events", 0.1)
            await _write(own, users, count)
            relay_client = redis_client
            if failure == "crash":
                faults = Faults()
                faults.arm_crash()
                relay_client = FaultyBroker(redis_client, faults) if lab else _DiesAfterAppending(redis_client, BATCH)
            report(f"{code}: relaying", 0.4)
            relays, refused = [Partitions() for _ in range(2 if failure == "two relays" else 1)], []
            appended = sum(await asyncio.gather(*(_relay(own, relay_client, stream, lab=lab, partitions=relay,
                                                         failures=refused) for relay in relays)))
            if failure == "rollback":
                await _consume(own, redis_client, stream, lab=lab)
                report(f"{code}: {EVENTS // 2} more events appended, then Redis loses the last 20 entries", 0.6)
                await _write(own, users, EVENTS // 2)
                appended += await _relay(own, redis_client, stream, lab=lab, partitions=relays[0])
                await _lose_last_entries(redis_client, stream, EVENTS // 2)
                if lab:
                    await reconcile(db=own, redis_client=redis_client, stream=stream, keep_for=3600)
                    appended += await _relay(own, redis_client, stream, lab=lab, partitions=relays[0])
            report(f"{code}: consuming", 0.8)
            await _consume(own, redis_client, stream, lab=lab)
            result = await _observe(own, redis_client, stream, code=code, failure=failure, backend=db.backend)
            return replace(result, failed_cycles=len(refused))
    finally:
        await redis_client.delete(stream)


async def _observe(own: Database, client, stream: str, *, code: str, failure: str, backend: str) -> ArcResult:
    async with own.sessions() as session:
        rank = dict((await session.execute(select(DomainEvent.id, DomainEvent.sequence))).all())
        owner = dict((await session.execute(select(DomainEvent.id, DomainEvent.aggregate_id))).all())
        effects = await session.scalar(select(func.coalesce(func.sum(ScoreSummary.scores_applied), 0)))
        applied_ids = set(await session.scalars(select(InboxEntry.event_id)))
    entries = [fields.get("event_id") for _, fields in await client.xrange(stream)]
    if code == "minimal":  # no inbox: every entry the consumer read, which is every entry left
        applied_ids = set(entries)
    seen, latest, inversions = set(), {}, 0
    for event_id in entries:
        if event_id in seen:
            continue
        seen.add(event_id)
        user = owner[event_id]
        inversions += rank[event_id] < latest.get(user, 0)
        latest[user] = max(rank[event_id], latest.get(user, 0))
    info = await client.xinfo_stream(stream)
    return ArcResult(code=code, failure=failure, backend=backend, written=len(rank),
                     appended=info.get("entries-added", info["length"]), applied=len(applied_ids),
                     applied_twice=effects - len(applied_ids), inversions=inversions,
                     lost=len(rank) - len(applied_ids))
