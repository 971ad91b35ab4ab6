"""5. The outbox's repository: events added in the writer's transaction, numbered within their
aggregate, and marked published by the relay. Like the others, it never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ARRAY, String, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .models import AggregateSequence, DomainEvent


def _next_sequence(insert):
    """Insert the aggregate's counter at :count, or add :count to it; the last number given. The row
    stays locked until the transaction ends, so a second writer of the same aggregate waits here for
    the first to commit: numbers follow commit order."""
    counter = AggregateSequence.__table__.c
    return (
        insert(AggregateSequence)
        .values(aggregate_type=bindparam("type"), aggregate_id=bindparam("id"), last_sequence=bindparam("count"))
        .on_conflict_do_update(index_elements=[counter.aggregate_type, counter.aggregate_id],
                               set_={"last_sequence": counter.last_sequence + bindparam("count")})
        .returning(counter.last_sequence)
    )


NEXT_SEQUENCE = {"postgresql": _next_sequence(postgresql.insert), "sqlite": _next_sequence(sqlite.insert)}


_EVENTS = DomainEvent.__table__.c


def _mark_as_published(entries, event_id):
    """Published, with the stream entry each event went to, if still pending."""
    return (
        update(DomainEvent.__table__)
        .where(_EVENTS.id == event_id, _EVENTS.status == "pending")
        .values(status="published", published_at=bindparam("now"), stream_id=entries)
    )


# The relay marks every batch, so the statement is built once and filled in per call. On PostgreSQL,
# one statement: the ids and entry IDs are two array parameters, turned into rows by unnest (an IN
# list of 100 parameters built per batch cost about 1 ms more). SQLite has no arrays: the statement
# runs once per event (executemany, in-process).
_MARKED = (func.unnest(bindparam("ids", type_=ARRAY(String)), bindparam("entries", type_=ARRAY(String)))
           .table_valued("id", "entry").render_derived(name="marked"))
MARK_AS_PUBLISHED = {
    "postgresql": _mark_as_published(_MARKED.c.entry, _MARKED.c.id),
    "sqlite": _mark_as_published(bindparam("entry"), bindparam("event_id")),
}


class DomainEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, event: DomainEvent) -> DomainEvent:
        """Number the event within its aggregate and add it to the session's transaction."""
        await self.add_all([event])
        return event

    async def add_all(self, events: Sequence[DomainEvent]) -> None:
        """Number the events, in the order given, within each of their aggregates (one statement per
        aggregate), and add them."""
        dialect = (await self.session.connection()).dialect.name
        by_aggregate: dict[tuple[str, str], list[DomainEvent]] = {}
        for event in events:
            by_aggregate.setdefault((event.aggregate_type, event.aggregate_id), []).append(event)
        for (kind, key), theirs in by_aggregate.items():
            last = (await self.session.execute(
                NEXT_SEQUENCE[dialect], {"type": kind, "id": key, "count": len(theirs)}
            )).scalar_one()
            for number, event in enumerate(theirs, start=last - len(theirs) + 1):
                event.sequence = number
        self.session.add_all(events)

    async def get_pending_events(self, limit: int = 100) -> Sequence[DomainEvent]:
        result = await self.session.execute(
            select(DomainEvent)
            .where(DomainEvent.status == "pending")
            .order_by(DomainEvent.created_at, DomainEvent.id)
            .limit(limit)
        )
        return result.scalars().all()

    async def mark_as_published(self, appended: Sequence[tuple[str, str]]) -> int:
        """Mark these events published, each with its stream entry ID, if still pending: (event ID,
        entry ID) pairs. Returns how many."""
        if not appended:
            return 0
        dialect, now = (await self.session.connection()).dialect.name, datetime.now(UTC)
        if dialect == "postgresql":
            given = {"ids": [event_id for event_id, _ in appended], "entries": [entry for _, entry in appended], "now": now}
        else:
            given = [{"event_id": event_id, "entry": entry, "now": now} for event_id, entry in appended]
        result = await self.session.execute(MARK_AS_PUBLISHED[dialect], given)
        return result.rowcount
