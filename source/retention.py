"""5. Retention: the outbox, the inbox and the stream would otherwise grow without bound.

Published outbox rows and inbox rows older than `keep_for` are deleted; the stream is trimmed
(XTRIM MINID) below the oldest entry every group still needs: the oldest one delivered and not
acknowledged, or the first not yet delivered. An inbox row goes only once its event's outbox row
has gone, so that no published event is ever without the row that makes its repeat a no-op.
`keep_for` must exceed the longest time an event can take to be applied; the dead letters are
kept until they are replayed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy import delete, exists

from .database import WRITE_TRANSACTION, Database
from .models import DomainEvent, InboxEntry
from .outbox_stats import Stats, describe

log = logging.getLogger("lab2.retention")


@dataclass(frozen=True)
class RetentionSettings:
    keep_for: float = 24 * 3600.0  # seconds a published event, its inbox row and its entry are kept
    interval: float = 60.0  # how often the publisher prunes


@dataclass(frozen=True)
class Pruned:
    outbox_rows: int = 0
    inbox_rows: int = 0
    stream_entries: int = 0


async def prune_tables(*, db: Database, keep_for: float) -> tuple[int, int]:
    """Delete published outbox rows and inbox rows older than keep_for; (outbox, inbox) counts."""
    cutoff = datetime.now(UTC) - timedelta(seconds=keep_for)
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        outbox = await session.execute(
            delete(DomainEvent)
            .where(DomainEvent.status == "published", DomainEvent.published_at < cutoff)
            .execution_options(synchronize_session=False)
        )
        inbox = await session.execute(
            delete(InboxEntry)
            .where(InboxEntry.applied_at < cutoff, ~exists().where(DomainEvent.id == InboxEntry.event_id))
            .execution_options(synchronize_session=False)
        )
    return outbox.rowcount, inbox.rowcount


def _after(entry_id: str) -> str:
    milliseconds, sequence = entry_id.split("-")
    return f"{milliseconds}-{int(sequence) + 1}"


async def trim_stream(*, redis_client: aioredis.Redis, stream: str, keep_for: float) -> int:
    """XTRIM MINID below what every group has acknowledged and below keep_for; entries removed."""
    groups = await redis_client.xinfo_groups(stream) if await redis_client.exists(stream) else []
    if not groups:  # no group has read it yet: nothing is known to be done with
        return 0
    seconds, micros = await redis_client.time()
    floor = f"{int((seconds + micros / 1e6 - keep_for) * 1000)}-0"  # entries older than keep_for ...
    for group in groups:  # ... that every group is done with
        # Read after the group's last-delivered ID: an entry delivered in between is above it.
        pending = await redis_client.xpending(stream, group["name"])
        # The oldest entry delivered and not acknowledged, else the first this group has not been given.
        needed = pending["min"] if pending["pending"] else _after(group["last-delivered-id"])
        floor = min(floor, needed, key=lambda entry_id: tuple(map(int, entry_id.split("-"))))
    # Exact (not `~`): the lab's figures count entries. `~` trims whole nodes only, cheaper in production.
    return await redis_client.xtrim(stream, minid=floor, approximate=False)


async def prune(*, db: Database, redis_client: aioredis.Redis, stream: str, keep_for: float) -> Pruned:
    outbox, inbox = await prune_tables(db=db, keep_for=keep_for)
    entries = await trim_stream(redis_client=redis_client, stream=stream, keep_for=keep_for)
    return Pruned(outbox_rows=outbox, inbox_rows=inbox, stream_entries=entries)


async def retention_loop(
    *, db: Database, redis_client: aioredis.Redis, stream: str, stop: asyncio.Event, settings: RetentionSettings,
    stats: Stats,
) -> None:
    """Prune every `interval` seconds until `stop` is set. Never raises: errors go to `stats`."""
    while not stop.is_set():
        try:
            pruned = await prune(db=db, redis_client=redis_client, stream=stream, keep_for=settings.keep_for)
            stats.add(pruned_outbox=pruned.outbox_rows, pruned_inbox=pruned.inbox_rows,
                      trimmed_entries=pruned.stream_entries)
        except Exception as exc:
            log.warning("pruning failed: %s", type(exc).__name__)
            stats.set(retention_error=describe(exc))
        try:
            await asyncio.wait_for(stop.wait(), settings.interval)
        except TimeoutError:
            pass
