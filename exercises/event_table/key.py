"""Section 5b: an event table that keeps each aggregate's order, its history and its attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String, UniqueConstraint, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class EventCounter(Base):
    """Each aggregate's last event number. A writer's upsert locks the row until it commits, so
    a second writer of the same aggregate waits for it: the numbers follow commit order."""

    __tablename__ = "event_counters"

    aggregate_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)


class OutboxEvent(Base):
    __tablename__ = "outbox_events"
    __table_args__ = (
        UniqueConstraint("aggregate_id", "sequence"),
        Index("ix_outbox_events_pending", "status", "aggregate_id", "sequence"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the writer's clock: shown, never ordered by
    sequence: Mapped[int] = mapped_column(BigInteger)  # 1, 2, 3, ... per aggregate, in commit order
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending -> published; the row stays
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # refused attempts
    last_error: Mapped[str | None] = mapped_column(String(500))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


async def add_event(session: AsyncSession, *, event_id: str, aggregate_id: str, event_type: str, payload: dict,
                    created_at: datetime) -> None:
    """Add the event to the writer's transaction (the caller commits it)."""
    numbered = insert(EventCounter).values(aggregate_id=aggregate_id, last_sequence=1).on_conflict_do_update(
        index_elements=[EventCounter.aggregate_id], set_={"last_sequence": EventCounter.last_sequence + 1})
    sequence = (await session.execute(numbered.returning(EventCounter.last_sequence))).scalar_one()
    session.add(OutboxEvent(id=event_id, aggregate_id=aggregate_id, event_type=event_type, payload=payload,
                            created_at=created_at, sequence=sequence))


async def next_batch(session: AsyncSession, *, limit: int) -> list[OutboxEvent]:
    """Up to `limit` events to publish next, in the order to publish them; [] when none is left."""
    return list((await session.scalars(
        select(OutboxEvent).where(OutboxEvent.status == "pending")
        .order_by(OutboxEvent.aggregate_id, OutboxEvent.sequence)  # which aggregate first: the relay's choice
        .limit(limit).with_for_update(skip_locked=True)
    )).all())


async def published(session: AsyncSession, event: OutboxEvent) -> None:
    event.status, event.published_at = "published", datetime.now(UTC)


async def refused(session: AsyncSession, event: OutboxEvent, error: str) -> None:
    event.attempts += 1
    event.last_error = error[:500]
