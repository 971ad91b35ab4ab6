"""5. Parked events: the relay parks an event as `failed` once it has failed max_attempts times,
the last of them refused by the broker (outbox.schedule_retries), and the later events of its user
wait behind it. An operator answers with one of two actions: try it again, or give up on it."""

from __future__ import annotations

from sqlalchemy import update

from .database import Database
from .models import DomainEvent


async def retry_failed_events(*, db: Database) -> int:
    """Give failed events a fresh set of attempts; returns how many. Each goes out before the
    later events of its aggregate, which waited behind it."""
    async with db.sessions.begin() as session:
        result = await session.execute(
            update(DomainEvent)
            .where(DomainEvent.status == "failed")
            .values(status="pending", attempts=0, next_attempt_at=None, last_error=None)
        )
    return result.rowcount


async def discard_failed_events(*, db: Database) -> int:
    """Give up on failed events (they stay in the table as discarded, never sent); returns how
    many. The later events of their aggregates are no longer held back."""
    async with db.sessions.begin() as session:
        result = await session.execute(
            update(DomainEvent).where(DomainEvent.status == "failed").values(status="discarded", next_attempt_at=None)
        )
    return result.rowcount
