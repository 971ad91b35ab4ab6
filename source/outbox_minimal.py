"""5. The outbox at its simplest: a relay and a consumer before any hardening.

The writer already did the hard part: the score and its event row commit together
(services.calculate_and_store_airscore), so no event is lost before it reaches the table. The
relay copies pending rows to a Redis stream and marks them published, in one transaction; the
consumer reads the stream with a consumer group, applies each entry and acknowledges it.

Section 5 runs these on tables and a stream of your own, then breaks them: a relay that dies
between its appends and its commit, two relays at once, a Redis that loses its last entries.
outbox.py, inbox.py and reconcile.py are what each of those failures adds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import DomainEvent, ScoreSummary


async def relay_once(*, sessions: async_sessionmaker[AsyncSession], redis_client: aioredis.Redis, stream: str,
                     batch_size: int = 100) -> int:
    """Claim pending events, append each to the stream, mark them published; how many."""
    async with sessions.begin() as session:  # commits the marks at the end, or rolls them back
        events = (await session.scalars(
            select(DomainEvent).where(DomainEvent.status == "pending")
            .order_by(DomainEvent.created_at).limit(batch_size)
            .with_for_update(skip_locked=True)  # another relay skips the rows this one holds
        )).all()
        for event in events:
            await redis_client.xadd(stream, {"event_id": event.id, "user_id": event.aggregate_id,
                                             "payload": json.dumps(event.payload)})
            event.status, event.published_at = "published", datetime.now(UTC)
    return len(events)


async def consume_once(*, sessions: async_sessionmaker[AsyncSession], redis_client: aioredis.Redis, stream: str,
                       group: str, consumer: str) -> int:
    """Read new entries, apply each, acknowledge it; how many."""
    reply = await redis_client.xreadgroup(group, consumer, {stream: ">"}, count=100, block=50)
    applied = 0
    for _, entries in reply or []:
        for entry_id, fields in entries:
            async with sessions.begin() as session:
                await count_score(session, user_id=fields["user_id"])
            await redis_client.xack(stream, group, entry_id)  # after the commit
            applied += 1
    return applied


async def count_score(session: AsyncSession, *, user_id: str) -> None:
    """The effect: one more score for the user in the read model."""
    summary = await session.get(ScoreSummary, user_id)
    if summary is None:
        summary = ScoreSummary(user_id=user_id, scores_applied=0, latest_score_id="-", latest_air_score=0.0,
                               latest_event_at=datetime.now(UTC))
        session.add(summary)
    summary.scores_applied += 1
