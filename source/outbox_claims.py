"""5. How a relay claims its batch: which users go first, and each user's events in sequence order.

A claim takes the users (aggregates) of the oldest due events first, by `created_at`, so that no user
waits behind another's backlog; then, for each of those users in that order, its due events by
`sequence`, lowest first with none skipped, until the batch is full. `created_at` is the writer's
clock, which may disagree between app servers; `sequence` is the event's number within its user, in
commit order (models.AggregateSequence), so only it decides the order within a user.

The two designs differ when several relays run at once on PostgreSQL (several app processes):

- in aggregate order (the default): a relay first takes a transaction-scoped advisory lock per user,
  `pg_try_advisory_xact_lock`, passing over users another relay holds; then, in a second statement,
  the due events of the users it holds, `FOR UPDATE`. One relay at a time has a user's events in
  flight, and the next relay to hold the user starts after the previous one committed.
- any order: one statement, `FOR UPDATE SKIP LOCKED`. Relay B skips the rows relay A holds and takes
  the next ones, which may be later events of a user whose earlier events A is still appending:
  B's can reach the stream first. It never claims an event twice, but keeps no order across relays.

On SQLite one relay at a time holds the write lock, taken at BEGIN: both designs are one statement.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ARRAY, BigInteger, String, and_, exists, func, or_, select, true
from sqlalchemy import bindparam as param
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from .models import DomainEvent

ANY_ORDER, AGGREGATE_ORDER = "any order", "in aggregate order"
# How far past its batch a relay looks for users no other relay holds: the oldest
# WINDOW_PER_EVENT x limit due events.
WINDOW_PER_EVENT = 10

# The statements are built once, with named parameters (:now, :limit, ...) that each batch fills in:
# building a statement this size in Python costs more than PostgreSQL takes to run it.


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
        or_(earlier.status == "failed", and_(earlier.status == "pending", earlier.next_attempt_at.is_not(None))),
        # ... and that retry time is still to come.
        or_(earlier.status == "failed", earlier.next_attempt_at > now),
        earlier.sequence < event.sequence,
    )
    return and_(
        event.status == "pending",
        or_(event.next_attempt_at.is_(None), event.next_attempt_at <= now),
        ~waits_behind_a_retry,
    )


IS_DUE = _is_due(DomainEvent)


def _oldest_users(window):
    """The users of the oldest `window` due events, oldest first: (type, id, age)."""
    oldest = (
        select(DomainEvent.aggregate_type, DomainEvent.aggregate_id, DomainEvent.created_at)
        .where(IS_DUE).order_by(DomainEvent.created_at, DomainEvent.id).limit(window).subquery()
    )
    return (
        select(oldest.c.aggregate_type, oldest.c.aggregate_id, func.min(oldest.c.created_at).label("age"))
        .group_by(oldest.c.aggregate_type, oldest.c.aggregate_id)
    )


def _their_events(users, *, skip_locked: bool):
    """For each of `users` (a FROM with aggregate_type, aggregate_id and an order), up to :limit of
    its due events, lowest sequence first (PostgreSQL: one index range per user, ix_events_pending,
    read only as far as the batch needs), each row locked."""
    event = aliased(DomainEvent)
    return (
        select(event)
        .where(event.aggregate_type == users.c.aggregate_type, event.aggregate_id == users.c.aggregate_id,
               _is_due(event))
        .order_by(event.sequence)
        .limit(param("limit"))
        .with_for_update(skip_locked=skip_locked)
        .lateral("claimed")
    )


def _claim_in(users, order, *, skip_locked: bool):
    claimed = _their_events(users, skip_locked=skip_locked)
    return (
        select(aliased(DomainEvent, claimed))
        .select_from(users).join(claimed, true())
        .order_by(*order, claimed.c.sequence)
        .limit(param("limit"))
    )


# PostgreSQL, any order: the users of the oldest :limit due events, and their events, skipping rows
# another relay has locked. (The users are sorted before their events are read, so that reading
# stops, and locking too, once the batch is full.)
_OLDEST = _oldest_users(param("limit")).subquery()
_USERS = (select(_OLDEST).order_by(_OLDEST.c.age, _OLDEST.c.aggregate_type, _OLDEST.c.aggregate_id)
          .limit(param("limit")).subquery("users"))
ANY_ORDER_CLAIM = _claim_in(_USERS, (_USERS.c.age, _USERS.c.aggregate_type, _USERS.c.aggregate_id),
                            skip_locked=True)

LOCK_KEY = func.hashtextextended(DomainEvent.aggregate_type + "/" + DomainEvent.aggregate_id, 0, type_=BigInteger)


def _lock_oldest_users():
    """Up to :limit users among those of the oldest :window due events, oldest first, each one's
    advisory lock taken by this transaction; those that other relays hold are passed over. The
    locks are released at commit or rollback, and a relay that dies loses its connection and so
    its locks. (A hash collision only makes two users take turns.)"""
    users = _oldest_users(param("window")).subquery()
    key = func.hashtextextended(users.c.aggregate_type + "/" + users.c.aggregate_id, 0, type_=BigInteger)
    ordered = (
        select(users.c.aggregate_type, users.c.aggregate_id, key.label("lock_key"))
        .order_by(users.c.age, users.c.aggregate_type, users.c.aggregate_id)
        .limit(param("window"))  # no fewer rows, but PostgreSQL moves no condition below a LIMIT (see below)
        .subquery()
    )
    # The lock is tried above the LIMIT: in that order, one user at a time, until :limit are held.
    # (Without a LIMIT in between, the planner may evaluate it for every group and lock them all.)
    return (
        select(ordered.c.aggregate_type, ordered.c.aggregate_id)
        .where(func.pg_try_advisory_xact_lock(ordered.c.lock_key))
        .limit(param("limit"))
    )


LOCK_OLDEST_USERS = _lock_oldest_users()

# PostgreSQL, in aggregate order: the users this transaction holds (:types, :ids, oldest first), and
# their events, each row waited for, never skipped: skipping a row of a user we hold could skip its
# earlier event.
_HELD = (
    func.unnest(param("types", type_=ARRAY(String)), param("ids", type_=ARRAY(String)))
    .table_valued("aggregate_type", "aggregate_id", with_ordinality="held_order")
    .render_derived(name="held")
)
EVENTS_OF_HELD = _claim_in(_HELD, (_HELD.c.held_order,), skip_locked=False)

# SQLite: one relay at a time, so one statement and no row locks. It has no LATERAL: each user's events
# are bounded instead by its lowest pending number (at most :limit of them), and read users oldest
# first, each in sequence order, so that SQLite can stop at :limit without sorting.
def _sqlite_claim():
    oldest = _oldest_users(param("limit")).subquery()
    pending = aliased(DomainEvent)
    lowest = (select(func.min(pending.sequence))
              .where(pending.aggregate_type == oldest.c.aggregate_type, pending.aggregate_id == oldest.c.aggregate_id,
                     pending.status == "pending")
              .scalar_subquery())
    users = (select(oldest, lowest.label("lowest"))
             .order_by(oldest.c.age, oldest.c.aggregate_type, oldest.c.aggregate_id).subquery("users"))
    return (
        select(DomainEvent)
        .join(users, and_(DomainEvent.aggregate_type == users.c.aggregate_type,
                          DomainEvent.aggregate_id == users.c.aggregate_id,
                          DomainEvent.sequence < users.c.lowest + param("limit")))
        .where(IS_DUE)
        .order_by(users.c.age, users.c.aggregate_type, users.c.aggregate_id, DomainEvent.sequence)
        .limit(param("limit"))
    )


SQLITE_CLAIM = _sqlite_claim()


async def claim(session: AsyncSession, *, now: datetime, limit: int, design: str) -> list[DomainEvent]:
    """Lock and return the batch this relay publishes, in the session's transaction: each user's
    events in sequence order."""
    if (await session.connection()).dialect.name != "postgresql":
        return list((await session.scalars(SQLITE_CLAIM, {"now": now, "limit": limit})).all())
    if design == ANY_ORDER:
        return list((await session.scalars(ANY_ORDER_CLAIM, {"now": now, "limit": limit})).all())
    window = limit * WINDOW_PER_EVENT
    held = (await session.execute(LOCK_OLDEST_USERS, {"now": now, "window": window, "limit": limit})).all()
    if not held:
        return []
    # A second statement, so a second snapshot, taken after the locks are held: the relay that held
    # a user before us has committed, and we see its marks and retry times. Read in the first
    # statement's snapshot, its earlier event waiting for a retry would still look due, and the
    # events behind it would go out ahead of it.
    types, ids = [row.aggregate_type for row in held], [row.aggregate_id for row in held]
    return list((await session.scalars(EVENTS_OF_HELD, {"now": now, "types": types, "ids": ids, "limit": limit})).all())
