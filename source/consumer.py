"""5. The consumer: a Redis consumer group on the outbox stream that applies each event once.

It reads entries with XREADGROUP, applies them (inbox.py: each checked, then applied with its inbox
row, in one transaction), and acknowledges them (XACK) only after that transaction commits. It takes
over entries that a dead consumer read but never acknowledged (XAUTOCLAIM after a minimum idle time).
Entries are read as bytes and decoded one by one, so an entry that is not UTF-8 is one poison among
good entries instead of an error for the whole read.

A poison entry stays unacknowledged and is delivered again; after `max_deliveries` deliveries (the
count Redis keeps in the pending-entries list) it moves to a dead-letter stream, its fields kept as
the bytes they were, with its error, and is acknowledged. A dead letter can be replayed once fixed.

With the default claim, relays in any number of processes append each user's events in sequence
order (outbox_claims.py, partitions.py); the any-order claim can append them out of order, and a broker that lost
entries has them sent again later. Either way the read model comes out the same (inbox.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis
from redis.client import NEVER_DECODE

from .database import Database
from .inbox import Entry, apply_entries
from .outbox_stats import Stats, describe

log = logging.getLogger("lab2.consumer")
CONSUMER_GROUP = "score-read-model"


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = 100
    block: float = 0.25  # XREADGROUP BLOCK: how long one read waits for new entries
    claim_min_idle: float = 5.0  # an entry unacknowledged this long is taken from its consumer
    claim_interval: float = 1.0
    max_deliveries: int = 3  # an entry that failed this many deliveries goes to the dead letters
    forget_idle_after: float = 60.0  # at start: consumers idle this long with nothing pending are removed


def dead_letter_key(stream: str) -> str:
    return f"{stream}:dead-letters"


def consumer_name() -> str:
    """Unique per run, so that a restarted process does not inherit a dead one's entries by name."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def ensure_group(redis_client: aioredis.Redis, *, stream: str, group: str = CONSUMER_GROUP) -> bool:
    """Create the group (and the stream) if missing; a new group reads the stream from its start.
    True if this call created it."""
    try:
        await redis_client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


async def forget_idle_consumers(
    redis_client: aioredis.Redis, *, stream: str, group: str, keep: str, min_idle: float
) -> int:
    """Remove consumers that hold no entry and have been idle min_idle seconds: each run of the
    app names a new consumer, and without this the dead ones pile up in the group."""
    removed = 0
    for consumer in await redis_client.xinfo_consumers(stream, group):
        if consumer["name"] != keep and consumer["pending"] == 0 and consumer["idle"] >= min_idle * 1000:
            await redis_client.xgroup_delconsumer(stream, group, consumer["name"])
            removed += 1
    return removed


async def read_raw(redis_client: aioredis.Redis, *command):
    """A command whose reply holds entries, read as bytes (the client would decode it whole and fail
    on the first entry that is not UTF-8)."""
    return await redis_client.execute_command(*command, **{NEVER_DECODE: True})


def _entries(batch) -> list[Entry]:
    """(ID, fields) of each entry still in the stream (XAUTOCLAIM gives None for deleted ones)."""
    return [(entry_id.decode(), fields) for entry_id, fields in batch if fields]


async def delivery_counts(redis_client: aioredis.Redis, *, stream: str, group: str, ids: Sequence[str]) -> dict[str, int]:
    """How many times each entry has been delivered (XPENDING keeps the count per entry)."""
    counts = {}
    for entry_id in ids:
        for pending in await redis_client.xpending_range(stream, group, min=entry_id, max=entry_id, count=1):
            counts[pending["message_id"]] = pending["times_delivered"]
    return counts


async def dead_letter(
    redis_client: aioredis.Redis, *, stream: str, group: str, entry: Entry, error: str, deliveries: int
) -> None:
    """Move an entry to the dead-letter stream with its error, and acknowledge it, atomically."""
    entry_id, fields = entry
    record = {**fields, b"dead_stream_id": entry_id, b"dead_error": error, b"dead_deliveries": str(deliveries)}
    async with redis_client.pipeline(transaction=True) as pipe:  # MULTI ... EXEC
        pipe.xadd(dead_letter_key(stream), record)
        pipe.xack(stream, group, entry_id)
        await pipe.execute()


async def replay_dead_letter(redis_client: aioredis.Redis, *, stream: str, dead_id: str) -> str | None:
    """Append a dead letter's original fields to the stream again and remove it from the dead
    letters; the new entry ID, or None if there is no such dead letter."""
    found = await read_raw(redis_client, "XRANGE", dead_letter_key(stream), dead_id, dead_id)
    if not found:
        return None
    original = {k: v for k, v in found[0][1].items() if not k.startswith(b"dead_")}
    async with redis_client.pipeline(transaction=True) as pipe:
        pipe.xadd(stream, original)
        pipe.xdel(dead_letter_key(stream), dead_id)
        new_id, _ = await pipe.execute()
    return new_id


async def claim_abandoned(
    redis_client: aioredis.Redis, *, stream: str, group: str, name: str, min_idle: float, count: int
) -> list[Entry]:
    """Entries read by some consumer (maybe this one) and not acknowledged for min_idle seconds."""
    _cursor, entries, *_deleted = await read_raw(
        redis_client, "XAUTOCLAIM", stream, group, name, int(min_idle * 1000), "0-0", "COUNT", count
    )
    return _entries(entries)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def event_consumer(
    *,
    db: Database,
    redis_client: aioredis.Redis,
    stream: str,
    stop: asyncio.Event,
    settings: ConsumerSettings,
    stats: Stats,
    group: str = CONSUMER_GROUP,
    name: str | None = None,
    on_group_created: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Read, apply, acknowledge, until `stop` is set. Never raises: errors are recorded in
    `stats` and the unacknowledged entries are claimed again later."""
    name = name or consumer_name()
    stats.set(consumer_name=name)
    group_ready = False
    next_claim = 0.0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            if not group_ready:
                created = await ensure_group(redis_client, stream=stream, group=group)
                if created and on_group_created is not None:
                    await on_group_created()  # the broker forgot the group: see reconcile.resend_unapplied
                removed = await forget_idle_consumers(
                    redis_client, stream=stream, group=group, keep=name, min_idle=settings.forget_idle_after
                )
                stats.add(consumers_removed=removed)
                group_ready = True
            entries: list[Entry] = []
            if loop.time() >= next_claim:
                entries = await claim_abandoned(
                    redis_client, stream=stream, group=group, name=name,
                    min_idle=settings.claim_min_idle, count=settings.batch_size,
                )
                stats.add(claimed=len(entries))  # counted when claimed, whatever happens next
                next_claim = loop.time() + settings.claim_interval
            if not entries:
                reply = await read_raw(redis_client, "XREADGROUP", "GROUP", group, name, "COUNT", settings.batch_size,
                                       "BLOCK", int(settings.block * 1000), "STREAMS", stream, ">")
                entries = [entry for _, batch in reply or [] for entry in _entries(batch)]
            if not entries:
                continue
            result = await apply_entries(db=db, entries=entries)
            done = [entry_id for entry_id, _ in entries if entry_id not in result.failures]
            if done:
                await redis_client.xack(stream, group, *done)  # after commit
            stats.add(delivered=result.delivered - len(result.failures), applied=result.applied,
                      duplicates=result.duplicates, gaps=result.gaps, late=result.late)
            if result.failures:
                await _handle_failures(redis_client, stream=stream, group=group, entries=entries,
                                       failures=result.failures, settings=settings, stats=stats)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or its group is gone (flushed, reset): make it again
                group_ready = False
                continue
            stats.set(consumer_error=describe(exc), consumer_error_at=datetime.now(UTC))
            await _sleep(stop, 0.5)
        except Exception as exc:
            log.warning("consumer cycle failed: %s", type(exc).__name__)
            stats.set(consumer_error=describe(exc), consumer_error_at=datetime.now(UTC))
            await _sleep(stop, 0.5)


async def _handle_failures(
    redis_client: aioredis.Redis, *, stream: str, group: str, entries: Sequence[Entry], failures: dict[str, str],
    settings: ConsumerSettings, stats: Stats,
) -> None:
    """Entries that failed stay unacknowledged (XAUTOCLAIM delivers them again after claim_min_idle)
    until they have failed max_deliveries deliveries; then they become dead letters."""
    counts = await delivery_counts(redis_client, stream=stream, group=group, ids=list(failures))
    for entry in entries:
        entry_id = entry[0]
        if entry_id in failures and counts.get(entry_id, 0) >= settings.max_deliveries:
            await dead_letter(redis_client, stream=stream, group=group, entry=entry,
                              error=failures[entry_id], deliveries=counts[entry_id])
            stats.add(dead_lettered=1)
    last_id, last_error = next(reversed(failures.items()))
    stats.set(consumer_error=f"entry {last_id} not applied ({len(failures)} in its batch): {last_error}"[:500],
              consumer_error_at=datetime.now(UTC))
