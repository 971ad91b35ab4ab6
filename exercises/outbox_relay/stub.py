"""Section 5: the outbox relay's batch step.

The writer committed each score together with its event row (`DomainEvent`, status "pending"),
and numbered each user's events 1, 2, 3, ... in commit order (`sequence`). The relay moves the
events on: it claims a batch of pending rows, appends each to a Redis stream, and marks them
published. The lab's consumer reads the stream and applies each event once (its inbox drops an
event delivered twice).
"""

from __future__ import annotations

import json  # noqa: F401 - you will likely need these
from datetime import UTC, datetime  # noqa: F401

from redis.asyncio import Redis
from sqlalchemy import func, select, update  # noqa: F401
from sqlalchemy.ext.asyncio import AsyncSession

from source.models import DomainEvent  # noqa: F401


async def relay_batch(session: AsyncSession, redis: Redis, stream: str, *, batch_size: int = 100) -> int:
    """Claim up to `batch_size` pending events, append each to `stream`, mark them published and
    commit; return how many were published (0 when none is pending).

    - Claim: events with status "pending", locked until the commit, so that a second relay
      running at the same time passes over them and takes others. Each user's events in
      `sequence` order, never a later one before an earlier one, even when the writers' clocks
      (`created_at`) disagree. Which user goes first is yours to choose.
    - Append: one stream entry per event, with the fields the consumer reads, all text: event_id,
      event_type, aggregate_type, aggregate_id, sequence, created_at (ISO 8601), payload (JSON).
    - Mark: status "published" and published_at, in the claim's transaction, then
      `await session.commit()`. No event may be marked published that was not appended.
    - If the stream refuses an append, raise: the caller rolls back, and the events stay pending
      for the next call. A relay that dies after its appends and before its commit has its
      events appended again by the next one; the consumer's inbox drops the repeats.

    The checks count the statements PostgreSQL receives for a batch of 20: at most 3, in one
    transaction.
    """
    raise NotImplementedError("write relay_batch")
