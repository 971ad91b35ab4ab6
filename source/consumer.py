"""5. The consumer: a Redis consumer group on the outbox stream that applies each event once.

The relay delivers at least once, so an event can arrive twice. The consumer keeps an inbox: it
inserts the event's ID in the same transaction as the event's effect, and a second delivery
finds the ID there and changes nothing. It acknowledges an entry (XACK) only after that
transaction commits, and takes over entries that a dead consumer read but never acknowledged
(XAUTOCLAIM after a minimum idle time). The effect here is a read model: per user, how many
scores were applied and which one is the latest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis
from sqlalchemy import case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .database import WRITE_TRANSACTION, Database
from .models import InboxEntry, ScoreSummary
from .outbox_stats import Stats

log = logging.getLogger("lab2.consumer")
CONSUMER_GROUP = "score-read-model"
Entry = tuple[str, dict[str, str]]  # (stream entry ID, fields)


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = 100
    block: float = 0.25  # XREADGROUP BLOCK: how long one read waits for new entries
    claim_min_idle: float = 5.0  # an entry unacknowledged this long is taken from its consumer
    claim_interval: float = 1.0


def consumer_name() -> str:
    """Unique per run, so that a restarted process does not inherit a dead one's entries by name."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def ensure_group(redis_client: aioredis.Redis, *, stream: str, group: str = CONSUMER_GROUP) -> None:
    """Create the group (and the stream) if missing; a new group reads the stream from its start."""
    try:
        await redis_client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


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


async def apply_event(session: AsyncSession, fields: dict[str, str]) -> None:
    """The effect: count the score for its user; keep the newest as the latest, whatever order
    events arrive in (several relays do not keep an aggregate's order)."""
    if fields["event_type"] != "AIRScoreCalculated":
        return
    payload = json.loads(fields["payload"])
    now = datetime.now(UTC)
    insert = _insert(session)(ScoreSummary).values(
        user_id=fields["aggregate_id"], scores_applied=1, latest_score_id=payload["score_id"],
        latest_air_score=payload["air_score"], latest_event_at=datetime.fromisoformat(fields["created_at"]),
        updated_at=now,
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


async def apply_entries(*, db: Database, entries: Sequence[Entry]) -> Applied:
    """Apply a batch of stream entries in one transaction: each event's inbox row and effect
    commit together, or none of the batch does (and nothing is acknowledged)."""
    applied = duplicates = 0
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        for stream_id, fields in entries:
            if await record_delivery(session, event_id=fields["event_id"], stream_id=stream_id):
                await apply_event(session, fields)
                applied += 1
            else:
                duplicates += 1
    return Applied(delivered=len(entries), applied=applied, duplicates=duplicates)


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
                await ensure_group(redis_client, stream=stream, group=group)
                group_ready = True
            entries: list[Entry] = []
            claimed = 0
            if loop.time() >= next_claim:
                entries = await claim_abandoned(
                    redis_client, stream=stream, group=group, name=name,
                    min_idle=settings.claim_min_idle, count=settings.batch_size,
                )
                claimed = len(entries)
                next_claim = loop.time() + settings.claim_interval
            if not entries:
                reply = await redis_client.xreadgroup(
                    group, name, {stream: ">"}, count=settings.batch_size, block=int(settings.block * 1000)
                )
                entries = [(entry_id, fields) for _, batch in reply or [] for entry_id, fields in batch]
            if not entries:
                continue
            malformed = [entry_id for entry_id, fields in entries if "event_id" not in fields]
            good = [(entry_id, fields) for entry_id, fields in entries if "event_id" in fields]
            result = await apply_entries(db=db, entries=good) if good else Applied()
            await redis_client.xack(stream, group, *(entry_id for entry_id, _ in entries))  # after commit
            stats.add(delivered=result.delivered, applied=result.applied, duplicates=result.duplicates, claimed=claimed)
            if malformed:
                stats.set(consumer_error=f"acknowledged {len(malformed)} entries without an event_id")
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted (lab reset): make the group again
                group_ready = False
                continue
            stats.set(consumer_error=f"{type(exc).__name__}: {exc}"[:500])
            await _sleep(stop, 0.5)
        except Exception as exc:
            log.warning("consumer cycle failed: %s", type(exc).__name__)
            stats.set(consumer_error=f"{type(exc).__name__}: {exc}"[:500])
            await _sleep(stop, 0.5)
