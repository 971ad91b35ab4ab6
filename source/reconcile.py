"""5. A broker that comes back with less than it acknowledged: find the lost events, send them again.

Redis acknowledges XADD once the entry is in memory. Restarted from an RDB snapshot (its default
persistence), or from an AOF that lost its last second, it brings the stream and its consumer group
back as they were then: the entries appended since are gone, and nothing looks missing to the group
(no pending entry, no lag). Their events stay `published` in the outbox and are never applied.

So the relay keeps each event's entry ID with its mark (outbox.relay_batch), and this check, run at
start and every `interval` seconds, looks each published event the consumer has not applied up in
the stream by that ID. Those no longer there go back to pending; the relay sends them again, and the
inbox drops any that had been applied after all. Events older than the retention window are left
alone (their entries may have been trimmed; the outbox deletes them), and so are dead letters, whose
entries stay in the stream: nothing is sent again forever.

A broker that lost the whole stream (one that keeps nothing across a restart, or was flushed) loses
the consumer group too: whoever makes the group again runs resend_unapplied (below; publisher.py
does at start and through the consumer's on_group_created).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from redis.client import NEVER_DECODE
from sqlalchemy import exists, select, update

from .database import WRITE_TRANSACTION, Database
from .models import DomainEvent, InboxEntry
from .outbox_stats import Stats, describe

log = logging.getLogger("lab2.reconcile")
CHUNK = 500  # lookups per pipeline


@dataclass(frozen=True)
class ReconcileSettings:
    interval: float = 5.0  # seconds between checks: a lost event is pending again within about this
    margin: float = 60.0  # events within this of the retention cutoff are left alone too


def _unapplied():
    return (DomainEvent.status == "published", DomainEvent.stream_id.is_not(None),
            ~exists().where(InboxEntry.event_id == DomainEvent.id))


async def missing_from_stream(*, db: Database, redis_client: aioredis.Redis, stream: str, keep_for: float,
                              margin: float = 60.0) -> list[str]:
    """IDs of published, unapplied events whose recorded entry is not in the stream, or holds
    another event (a server whose clock went back can give a lost entry's ID to a new one)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=max(keep_for - margin, 0))
    async with db.sessions() as session:
        rows = (await session.execute(
            select(DomainEvent.id, DomainEvent.stream_id).where(*_unapplied(), DomainEvent.published_at >= cutoff)
        )).all()
    missing = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        async with redis_client.pipeline(transaction=False) as pipe:
            for _, entry_id in chunk:
                pipe.execute_command("XRANGE", stream, entry_id, entry_id, **{NEVER_DECODE: True})
            found = await pipe.execute()
        missing += [event_id for (event_id, _), entries in zip(chunk, found, strict=True)
                    if not entries or entries[0][1].get(b"event_id") != event_id.encode()]
    return missing


async def send_again(*, db: Database, event_ids: list[str]) -> int:
    """Back to pending, unless applied meanwhile; how many. The relay's NOTIFY trigger fires."""
    if not event_ids:
        return 0
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        result = await session.execute(
            update(DomainEvent)
            .where(DomainEvent.id.in_(event_ids), *_unapplied())
            .values(status="pending", published_at=None, stream_id=None, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount


async def reconcile(*, db: Database, redis_client: aioredis.Redis, stream: str, keep_for: float,
                    margin: float = 60.0) -> int:
    """One check: the events the broker lost are pending again; how many."""
    missing = await missing_from_stream(db=db, redis_client=redis_client, stream=stream, keep_for=keep_for,
                                        margin=margin)
    return await send_again(db=db, event_ids=missing)


async def reconcile_loop(
    *, db: Database, redis_client: aioredis.Redis, stream: str, stop: asyncio.Event, settings: ReconcileSettings,
    keep_for: float, stats: Stats,
) -> None:
    """Check at start and every `interval` seconds until `stop` is set. Never raises."""
    while not stop.is_set():
        try:
            sent = await reconcile(db=db, redis_client=redis_client, stream=stream, keep_for=keep_for,
                                   margin=settings.margin)
            stats.add(resent=sent)
            stats.set(last_reconciled_at=datetime.now(UTC), reconcile_error=None)
        except Exception as exc:  # Redis or the database is down: the next check tries again
            log.warning("reconciling the stream failed: %s", type(exc).__name__)
            stats.set(reconcile_error=describe(exc))
        try:
            await asyncio.wait_for(stop.wait(), settings.interval)
        except TimeoutError:
            pass


async def resend_unapplied(*, db: Database) -> int:
    """Put published events that were never applied back to pending, so that the relay sends them
    again; returns how many. For a broker that lost its stream: one that keeps nothing across a
    restart (the embedded Redis, a Redis without persistence) or was flushed. The consumer calls
    it when it has to create its group again. Repeats of events that were in flight are dropped
    by the inbox. (Here the consumer's inbox is in the relay's database; across services, the
    consumer would report which events it has applied.)"""
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        result = await session.execute(
            update(DomainEvent)
            .where(DomainEvent.status == "published", ~exists().where(InboxEntry.event_id == DomainEvent.id))
            .values(status="pending", published_at=None, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount
