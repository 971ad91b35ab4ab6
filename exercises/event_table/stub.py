"""Section 5b: design the outbox's event table, and the few functions that use it.

A writer adds an event in the same transaction as the change it reports. A relay (the lab's,
calling your functions) takes batches of events, appends each to a Redis stream and tells your
code what happened. Your table decides three things, and the checks measure each one on section
5b's workload:

1. Order: a consumer must get each aggregate's events in the order their transactions committed,
   even when two writers race on one aggregate and writer B's clock runs 200 ms behind writer A's.
2. History: a published event stays in the table, where it can be listed and sent again (section
   5's reconcile sends again published events a broker lost); deleting old events is a retention
   job's work, not the relay's.
3. Attempts: each refused attempt is counted on the event's row, in a column named `attempts`.
"""

from __future__ import annotations

from datetime import UTC, datetime  # noqa: F401 - you will likely need these
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, UniqueConstraint, select  # noqa: F401
from sqlalchemy.dialects.postgresql import insert  # noqa: F401
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class OutboxEvent(Base):
    """The event table. Keep these five columns; add what your design needs (and other tables
    of this Base, if it needs them)."""

    __tablename__ = "outbox_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the writer's clock


async def add_event(session: AsyncSession, *, event_id: str, aggregate_id: str, event_type: str, payload: dict,
                    created_at: datetime) -> None:
    """Add the event to the writer's transaction (the caller commits it)."""
    raise NotImplementedError("write add_event")


async def next_batch(session: AsyncSession, *, limit: int) -> list[OutboxEvent]:
    """Up to `limit` events to publish next, in the order to publish them; [] when none is left.
    The relay commits the batch's changes when the batch is done."""
    raise NotImplementedError("write next_batch")


async def published(session: AsyncSession, event: OutboxEvent) -> None:
    """The event was appended to the stream."""
    raise NotImplementedError("write published")


async def refused(session: AsyncSession, event: OutboxEvent, error: str) -> None:
    """The stream refused the event; the next batch tries it again."""
    raise NotImplementedError("write refused")
