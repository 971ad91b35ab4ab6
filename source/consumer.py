"""5. The consumer: a Redis consumer group on the outbox stream that applies each event once.

The relay delivers at least once, so an event can arrive twice. The consumer keeps an inbox: it
inserts the event's ID in the same transaction as the event's effect, and a second delivery
finds the ID there and changes nothing. It acknowledges an entry (XACK) only after that
transaction commits, and takes over entries that a dead consumer read but never acknowledged
(XAUTOCLAIM after a minimum idle time). The effect here is a read model: per user, how many
scores were applied and which one is the latest.

A *poison* entry, one the consumer cannot apply (a payload that is not JSON, a missing field, a
score that is not a number), must not hold the others back: each entry is applied in its own
savepoint, so a bad one undoes only itself; it stays unacknowledged and is delivered again, and
after `max_deliveries` deliveries (the count Redis keeps in the pending-entries list) it moves to
a dead-letter stream with its error and is acknowledged. A dead letter can be replayed once fixed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis
from sqlalchemy import case
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .database import WRITE_TRANSACTION, Database
from .models import InboxEntry, ScoreSummary
from .outbox_stats import Stats, describe

log = logging.getLogger("lab2.consumer")
CONSUMER_GROUP = "score-read-model"
Entry = tuple[str, dict[str, str]]  # (stream entry ID, fields)


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


def _insert(session: AsyncSession):
    return postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert


async def record_delivery(session: AsyncSession, *, event_id: str, stream_id: str) -> bool:
    """Insert the event's inbox row; True on its first delivery. A repeat only counts itself:
    ON CONFLICT waits for a concurrent first delivery to commit, so exactly one transaction wins."""
    insert = _insert(session)(InboxEntry).values(
        event_id=event_id, stream_id=stream_id, deliveries=1, applied_at=datetime.now(UTC)
    )
    statement = insert.on_conflict_do_update(
        index_elements=[InboxEntry.event_id], set_={"deliveries": InboxEntry.deliveries + 1}
    ).returning(InboxEntry.deliveries)
    return (await session.execute(statement)).scalar_one() == 1


class PoisonEntry(ValueError):
    """A stream entry the consumer cannot apply, however often it is delivered."""


def _identifier(fields: dict, name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= 36:
        raise PoisonEntry(f"{name} missing or not an ID of at most 36 characters: {value!r:.60}")
    return value


def parse_score_event(fields: dict[str, str]) -> tuple[str, str, float, datetime]:
    """(user ID, score ID, AI-R score, event time) of an AIRScoreCalculated entry, or PoisonEntry."""
    try:
        payload = json.loads(fields["payload"])
        created_at = datetime.fromisoformat(fields["created_at"])
    except (KeyError, ValueError, TypeError) as exc:
        raise PoisonEntry(f"unreadable payload or created_at: {describe(exc)}") from exc
    if not isinstance(payload, dict):
        raise PoisonEntry("payload is not a JSON object")
    air_score = payload.get("air_score")
    if isinstance(air_score, bool) or not isinstance(air_score, int | float):
        raise PoisonEntry(f"air_score is not a number: {air_score!r:.60}")
    if created_at.tzinfo is None:
        raise PoisonEntry("created_at has no time zone")
    return _identifier(fields, "aggregate_id"), _identifier(payload, "score_id"), float(air_score), created_at


async def apply_event(session: AsyncSession, fields: dict[str, str]) -> None:
    """The effect: count the score for its user; keep the newest as the latest, whatever order
    events arrive in (several relays do not keep an aggregate's order)."""
    if fields.get("event_type") != "AIRScoreCalculated":
        return
    user_id, score_id, air_score, created_at = parse_score_event(fields)
    now = datetime.now(UTC)
    insert = _insert(session)(ScoreSummary).values(
        user_id=user_id, scores_applied=1, latest_score_id=score_id,
        latest_air_score=air_score, latest_event_at=created_at, updated_at=now,
    )
    newer = insert.excluded.latest_event_at >= ScoreSummary.latest_event_at
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[ScoreSummary.user_id],
            set_={
                "scores_applied": ScoreSummary.scores_applied + 1,
                "latest_score_id": case((newer, insert.excluded.latest_score_id), else_=ScoreSummary.latest_score_id),
                "latest_air_score": case((newer, insert.excluded.latest_air_score), else_=ScoreSummary.latest_air_score),
                "latest_event_at": case((newer, insert.excluded.latest_event_at), else_=ScoreSummary.latest_event_at),
                "updated_at": now,
            },
        )
    )


@dataclass(frozen=True)
class Applied:
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # stream entry ID -> why it was not applied


async def apply_entries(*, db: Database, entries: Sequence[Entry]) -> Applied:
    """Apply a batch of stream entries in one transaction, each in its own savepoint: an event's
    inbox row and effect commit together; an entry that cannot be applied undoes only itself and
    is listed in `failures`. (A database that fails outright rolls back the batch, as before.)"""
    applied = duplicates = 0
    failures: dict[str, str] = {}
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        for stream_id, fields in entries:
            try:
                async with session.begin_nested():  # SAVEPOINT ... RELEASE, or ROLLBACK TO it
                    first = await record_delivery(session, event_id=_identifier(fields, "event_id"), stream_id=stream_id)
                    if first:
                        await apply_event(session, fields)
            except (PoisonEntry, sa_exc.DataError, sa_exc.IntegrityError) as exc:
                failures[stream_id] = describe(exc)
                continue
            applied += first
            duplicates += not first
    return Applied(delivered=len(entries), applied=applied, duplicates=duplicates, failures=failures)


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
    record = {**fields, "dead_stream_id": entry_id, "dead_error": error, "dead_deliveries": str(deliveries)}
    async with redis_client.pipeline(transaction=True) as pipe:  # MULTI ... EXEC
        pipe.xadd(dead_letter_key(stream), record)
        pipe.xack(stream, group, entry_id)
        await pipe.execute()


async def replay_dead_letter(redis_client: aioredis.Redis, *, stream: str, dead_id: str) -> str | None:
    """Append a dead letter's original fields to the stream again and remove it from the dead
    letters; the new entry ID, or None if there is no such dead letter."""
    found = await redis_client.xrange(dead_letter_key(stream), min=dead_id, max=dead_id)
    if not found:
        return None
    original = {k: v for k, v in found[0][1].items() if not k.startswith("dead_")}
    async with redis_client.pipeline(transaction=True) as pipe:
        pipe.xadd(stream, original)
        pipe.xdel(dead_letter_key(stream), dead_id)
        new_id, _ = await pipe.execute()
    return new_id


async def claim_abandoned(
    redis_client: aioredis.Redis, *, stream: str, group: str, name: str, min_idle: float, count: int
) -> list[Entry]:
    """Entries read by some consumer (maybe this one) and not acknowledged for min_idle seconds."""
    _cursor, entries, *_deleted = await redis_client.xautoclaim(
        stream, group, name, min_idle_time=int(min_idle * 1000), start_id="0-0", count=count
    )
    return [(entry_id, fields) for entry_id, fields in entries if fields]


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
                    await on_group_created()  # the broker forgot the group: see outbox.resend_unapplied
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
                reply = await redis_client.xreadgroup(
                    group, name, {stream: ">"}, count=settings.batch_size, block=int(settings.block * 1000)
                )
                entries = [(entry_id, fields) for _, batch in reply or [] for entry_id, fields in batch]
            if not entries:
                continue
            result = await apply_entries(db=db, entries=entries)
            done = [entry_id for entry_id, _ in entries if entry_id not in result.failures]
            if done:
                await redis_client.xack(stream, group, *done)  # after commit
            stats.add(delivered=result.delivered - len(result.failures), applied=result.applied,
                      duplicates=result.duplicates)
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
