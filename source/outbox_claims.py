"""5. How a relay claims its batch: which users go first, and each user's events in sequence order.

A claim takes the users (aggregates) of the oldest due events first, by `created_at`, so that no user
waits behind another's backlog; then, for each of those users in that order, its due events by
`sequence`, lowest first with none skipped, until the batch is full. `created_at` is the writer's
clock, which may disagree between app servers; `sequence` is the event's number within its user, in
commit order (models.AggregateSequence), so only it decides the order within a user.

The two designs differ when several relays run at once on PostgreSQL (several app processes):

- in aggregate order (the default): a relay claims only the users of the partitions it holds
  (partitions.py), each lease row locked FOR SHARE until the batch commits, and their events
  `FOR UPDATE`. One relay at a time publishes a user, and a partition changes hands only between
  batches: the next holder starts after the previous one committed. One statement, no waiting.
- any order: no partitions, `FOR UPDATE SKIP LOCKED`. Relay B skips the rows relay A holds and takes
  the next ones, which may be later events of a user whose earlier events A is still appending:
  B's can reach the stream first. It never claims an event twice, but keeps no order across relays.

On SQLite one relay at a time holds the write lock, taken at BEGIN: one statement, no partitions.

A claim returns rows, not ORM objects: the relay only reads them, and the payload comes as the JSON
text it was stored as, sent on without being parsed and written again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Integer, Row, Text, and_, cast, exists, func, literal_column, or_, select, true
from sqlalchemy import bindparam as param
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from .models import PARTITIONS, DomainEvent, partition_of
from .partitions import LEASES

ANY_ORDER, AGGREGATE_ORDER = "any order", "in aggregate order"

# The statements are built once, with named parameters (:now, :limit, ...) that each batch fills in:
# building a statement this size in Python costs more than PostgreSQL takes to run it. The statuses
# are literals, not parameters: after five runs of a prepared statement PostgreSQL may switch to a
# generic plan, and only `status = 'pending'` written out proves that a partial index
# (WHERE status = 'pending') applies; with `status = $1` the claim fell back to scans (150 ms a batch).
PENDING, FAILED = literal_column("'pending'"), literal_column("'failed'")
# So are the sizes (written into the statement at each run; a relay's are the same every time): with
# LIMIT $1, the generic plan guessed a handful of rows and sorted, and so locked, every event of every
# user it read (4,400 for a batch of 100).
LIMIT, PER_PARTITION = (param(name, type_=Integer, literal_execute=True) for name in ("limit", "per_partition"))


def _is_due(event):
    """Pending and due, except events queued behind an earlier event (by sequence) of the same user
    that waits for its retry or is parked as failed: a parked event holds its user until it is
    retried or discarded."""
    now = param("now")
    earlier = aliased(DomainEvent)
    waits_behind_a_retry = exists().where(
        earlier.aggregate_type == event.aggregate_type,
        earlier.aggregate_id == event.aggregate_id,
        # Parked, or pending with a retry time (the condition of the index that holds only such
        # events: models.HOLDING_EVENTS, written out so that SQLite, which matches it term by term,
        # uses that index too) ...
        or_(earlier.status == FAILED, and_(earlier.status == PENDING, earlier.next_attempt_at.is_not(None))),
        # ... and that retry time is still to come.
        or_(earlier.status == FAILED, earlier.next_attempt_at > now),
        earlier.sequence < event.sequence,
    )
    return and_(
        event.status == PENDING,
        or_(event.next_attempt_at.is_(None), event.next_attempt_at <= now),
        ~waits_behind_a_retry,
    )


IS_DUE = _is_due(DomainEvent)


def _by_age(oldest):
    """The users of the events in `oldest`, each aged by its oldest one, oldest first; up to :limit of
    them, sorted (and cut: a subquery with a LIMIT keeps its order) before their events are read, so
    that reading stops, and locking too, once the batch is full."""
    users = (
        select(oldest.c.aggregate_type, oldest.c.aggregate_id, func.min(oldest.c.created_at).label("age"))
        .group_by(oldest.c.aggregate_type, oldest.c.aggregate_id)
        .subquery()
    )
    return (select(users).order_by(users.c.age, users.c.aggregate_type, users.c.aggregate_id)
            .limit(LIMIT).subquery("users"))


def _oldest_users():
    """The users of the oldest :limit due events."""
    return _by_age(
        select(DomainEvent.aggregate_type, DomainEvent.aggregate_id, DomainEvent.created_at)
        .where(IS_DUE).order_by(DomainEvent.created_at, DomainEvent.id).limit(LIMIT).subquery()
    )


def _sent(event):
    """The columns the relay sends (and `attempts`, for a retry), the payload as its stored text."""
    return (event.id, event.event_type, event.aggregate_type, event.aggregate_id, event.sequence,
            event.created_at, cast(event.payload, Text).label("payload"), event.attempts)


def _claim(users, *, skip_locked: bool):
    """For each of `users` in order, its due events, lowest sequence first (PostgreSQL: one index
    range per user, ix_events_pending, read only as far as the batch needs), each row locked; up
    to :limit in all."""
    event = aliased(DomainEvent)
    claimed = (
        select(*_sent(event))
        .where(event.aggregate_type == users.c.aggregate_type, event.aggregate_id == users.c.aggregate_id,
               _is_due(event))
        .order_by(event.sequence)
        .limit(LIMIT)
        .with_for_update(skip_locked=skip_locked)
        .lateral("claimed")
    )
    return (
        select(claimed).select_from(users).join(claimed, true())
        .order_by(users.c.age, users.c.aggregate_type, users.c.aggregate_id, claimed.c.sequence)
        .limit(LIMIT)
    )


# PostgreSQL, any order: the users of the oldest due events, and their events, skipping rows another
# relay has locked.
ANY_ORDER_CLAIM = _claim(_oldest_users(), skip_locked=True)

# PostgreSQL, in aggregate order: only the users of the partitions this relay (:relay) holds under a
# lease not yet expired, each lease row locked FOR SHARE until the batch commits (no other relay can
# take the partition meanwhile). From each partition, the users of its :per_partition oldest due
# events (ix_events_partition: a short index range each, however long the backlog); then those users
# oldest first, and their events, waited for, never skipped: skipping a row of a user we publish
# could skip its earlier event.
HELD_PARTITIONS = (
    select(LEASES.partition)
    .where(LEASES.holder == param("relay"), LEASES.expires_at > func.now())
    .with_for_update(read=True)
)


def _partitioned_claim():
    held = HELD_PARTITIONS.subquery("held")
    event = aliased(DomainEvent)
    oldest = (
        select(event.aggregate_type, event.aggregate_id, event.created_at)
        .where(partition_of(event.aggregate_type, event.aggregate_id) == held.c.partition, _is_due(event))
        .order_by(event.created_at, event.id).limit(PER_PARTITION)
        .lateral("oldest")
    )
    return _claim(_by_age(select(oldest).select_from(held).join(oldest, true()).subquery()), skip_locked=False)


PARTITIONED_CLAIM = _partitioned_claim()


# SQLite: one relay at a time, so one statement and no row locks. It has no LATERAL: each user's events
# are bounded instead by its lowest pending number (at most :limit of them), and read users oldest
# first, each in sequence order, so that SQLite can stop at :limit without sorting.
def _sqlite_claim():
    oldest = _oldest_users()
    pending = aliased(DomainEvent)
    lowest = (select(func.min(pending.sequence))
              .where(pending.aggregate_type == oldest.c.aggregate_type, pending.aggregate_id == oldest.c.aggregate_id,
                     pending.status == PENDING)
              .scalar_subquery())
    users = select(oldest, lowest.label("lowest")).subquery("users_from")
    event = DomainEvent
    return (
        select(*_sent(event))
        .join(users, and_(event.aggregate_type == users.c.aggregate_type,
                          event.aggregate_id == users.c.aggregate_id,
                          event.sequence < users.c.lowest + LIMIT))
        .where(IS_DUE)
        .order_by(users.c.age, users.c.aggregate_type, users.c.aggregate_id, event.sequence)
        .limit(LIMIT)
    )


SQLITE_CLAIM = _sqlite_claim()


def per_partition(limit: int, partitions_held: int) -> int:
    """How many of each held partition's oldest events to read: enough users to fill the batch, from
    each partition its share of them."""
    return -(-limit // max(partitions_held, 1))


async def claim(session: AsyncSession, *, now: datetime, limit: int, design: str,
                relay: str | None = None, partitions_held: int = PARTITIONS) -> Sequence[Row]:
    """Lock and return the batch this relay publishes, in the session's transaction: each user's
    events in sequence order. In aggregate order on PostgreSQL, `relay` is the id under which the
    relay holds its partitions (partitions.Partitions), about `partitions_held` of them."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        statement, given = SQLITE_CLAIM, {}
    elif design == ANY_ORDER:
        statement, given = ANY_ORDER_CLAIM, {}
    elif relay is None:
        raise ValueError("a relay in aggregate order claims under its partitions' leases: pass its id")
    else:
        statement, given = PARTITIONED_CLAIM, {"relay": relay, "per_partition": per_partition(limit, partitions_held)}
    return (await connection.execute(statement, {"now": now, "limit": limit, **given})).all()
