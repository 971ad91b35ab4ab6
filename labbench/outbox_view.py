"""Section 5's view of the pipeline: counts and recent rows read now from the outbox, the inbox,
the read model and the stream (XINFO), and where one learner's event is."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from source.consumer import CONSUMER_GROUP, read_raw
from source.database import Database
from source.models import DomainEvent, InboxEntry, ScoreSummary


@dataclass(frozen=True)
class InboxFigures:
    applied: int  # events applied: one inbox row each
    delivered: int  # deliveries, repeats included
    duplicates: int  # repeats dropped


async def inbox_figures(session: AsyncSession) -> InboxFigures:
    rows, deliveries = (await session.execute(
        select(func.count(), func.coalesce(func.sum(InboxEntry.deliveries), 0))
    )).one()
    return InboxFigures(applied=rows, delivered=deliveries, duplicates=deliveries - rows)


async def read_model(session: AsyncSession, *, limit: int = 20) -> list[dict]:
    summaries = (await session.scalars(
        select(ScoreSummary).order_by(ScoreSummary.updated_at.desc()).limit(limit)
    )).all()
    return [
        {"user": s.user_id[:8], "scores applied": s.scores_applied, "latest AI-R": s.latest_air_score,
         "latest score": s.latest_score_id[:8], "updated": s.updated_at}
        for s in summaries
    ]


@dataclass(frozen=True)
class OutboxOverview:
    created: int
    pending: int
    published: int
    failed: int
    appended: int | None  # entries ever added to the stream (None: Redis did not answer)
    stream_length: int | None
    consumer_pending: int | None  # delivered to a consumer, not yet acknowledged
    consumer_lag: int | None  # in the stream, not yet delivered to the group
    delivered: int
    applied: int
    duplicates: int
    events: list[dict] = field(default_factory=list)
    read_model: list[dict] = field(default_factory=list)


def _event_row(event: DomainEvent) -> dict:
    return {
        "event": event.id[:8],
        "type": event.event_type,
        "user": event.aggregate_id[:8],
        "no.": event.sequence,
        "status": event.status,
        "attempts": event.attempts,
        "next attempt": event.next_attempt_at if event.status == "pending" else None,
        "last error": event.last_error or "",
        "created": event.created_at,
        "appended": appended_at(event.stream_id),
        "marked published": event.published_at,
    }


def appended_at(entry_id: str | None) -> datetime | None:
    """When Redis appended the entry: its ID starts with the server's clock, in milliseconds."""
    if not entry_id:
        return None
    return datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, UTC)


@dataclass(frozen=True)
class EventProgress:
    """Where one event is now: its outbox row, and the consumer's inbox row once applied."""

    status: str  # pending, published or failed
    created_at: datetime  # the writer's clock, at the insert
    stream_id: str | None  # the entry of its last append, as the relay recorded it with its mark
    published_at: datetime | None  # the relay's clock, when it marked the event (after the append)
    applied_at: datetime | None  # the consumer's clock, when it applied the event
    applied_stream_id: str | None  # the entry the consumer applied (an earlier one, after a crash)
    attempts: int
    last_error: str | None

    @property
    def settled(self) -> bool:
        """Nothing more will happen without a change: applied, parked as failed, or retrying."""
        return self.applied_at is not None or self.status == "failed" or self.attempts > 0


async def event_progress(*, db: Database, event_id: str) -> EventProgress | None:
    """None if the event is gone (the lab data was reset)."""
    async with db.sessions() as session:
        event = await session.get(DomainEvent, event_id)
        if event is None:
            return None
        applied = await session.get(InboxEntry, event_id)
        return EventProgress(
            status=event.status, created_at=event.created_at, stream_id=event.stream_id,
            published_at=event.published_at,
            applied_at=applied.applied_at if applied else None,
            applied_stream_id=applied.stream_id if applied else None, attempts=event.attempts,
            last_error=event.last_error,
        )


async def outbox_overview(*, db: Database, redis_client: aioredis.Redis, stream: str, limit: int = 12) -> OutboxOverview:
    """Counts and recent rows, read now from the database and the stream."""
    async with db.sessions() as session:
        counts = dict((await session.execute(select(DomainEvent.status, func.count()).group_by(DomainEvent.status))).all())
        recent = (await session.scalars(
            select(DomainEvent).order_by(DomainEvent.created_at.desc(), DomainEvent.id.desc()).limit(limit)
        )).all()
        inbox = await inbox_figures(session)
        summaries = await read_model(session, limit=limit)
    appended = length = pending = lag = None
    try:
        if await redis_client.exists(stream):
            # Read as bytes: XINFO STREAM shows the first and last entries, which may not be UTF-8.
            reply = await read_raw(redis_client, "XINFO", "STREAM", stream)
            pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
            info = {key.decode() if isinstance(key, bytes) else key: value for key, value in pairs}
            length, appended = info["length"], info.get("entries-added", info["length"])
            group = next((g for g in await redis_client.xinfo_groups(stream) if g["name"] == CONSUMER_GROUP), None)
            if group is not None:
                pending, lag = group["pending"], group.get("lag")
        else:
            appended = length = 0
    except (redis.RedisError, OSError):
        pass
    return OutboxOverview(
        created=sum(counts.values()), pending=counts.get("pending", 0), published=counts.get("published", 0),
        failed=counts.get("failed", 0), appended=appended, stream_length=length, consumer_pending=pending,
        consumer_lag=lag, delivered=inbox.delivered, applied=inbox.applied, duplicates=inbox.duplicates,
        events=[_event_row(e) for e in recent], read_model=summaries,
    )
