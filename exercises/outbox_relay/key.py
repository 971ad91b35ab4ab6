"""Section 5: the outbox relay's batch step: claim, append, mark, in one transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from source.models import DomainEvent

PENDING = DomainEvent.status == "pending"


def entry_fields(event: DomainEvent) -> dict[str, str]:
    return {"event_id": event.id, "event_type": event.event_type, "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id, "sequence": str(event.sequence),
            "created_at": event.created_at.isoformat(), "payload": json.dumps(event.payload)}


async def relay_batch(session: AsyncSession, redis: Redis, stream: str, *, batch_size: int = 100) -> int:
    """Claim up to `batch_size` pending events, append each to `stream`, mark them published and
    commit; return how many were published (0 when none is pending)."""
    # Users take turns by the age of their oldest pending event, so none waits behind another's
    # backlog. Within a user, `sequence` decides, not created_at: that is a writer's clock, and
    # two app servers' clocks disagree.
    users = (select(DomainEvent.aggregate_type, DomainEvent.aggregate_id,
                    func.min(DomainEvent.created_at).label("oldest"))
             .where(PENDING).group_by(DomainEvent.aggregate_type, DomainEvent.aggregate_id).subquery())
    events = (await session.scalars(
        select(DomainEvent)
        .join(users, and_(users.c.aggregate_type == DomainEvent.aggregate_type,
                          users.c.aggregate_id == DomainEvent.aggregate_id))
        .where(PENDING)
        .order_by(users.c.oldest, users.c.aggregate_type, users.c.aggregate_id, DomainEvent.sequence)
        .limit(batch_size)
        # Locked until the commit; another relay skips them (and takes other rows) instead of waiting.
        .with_for_update(of=DomainEvent, skip_locked=True)
    )).all()
    if not events:
        return 0
    # One round trip for the batch. A refusal raises here, before anything is marked: the caller
    # rolls back and the events stay pending.
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.xadd(stream, entry_fields(event))
        await pipe.execute()
    # Marked only once appended, in the claim's transaction, with one UPDATE for the batch.
    await session.execute(update(DomainEvent).where(DomainEvent.id.in_([event.id for event in events]))
                          .values(status="published", published_at=datetime.now(UTC)))
    await session.commit()
    return len(events)
