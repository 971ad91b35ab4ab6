"""5. The consumer's side of "exactly once": each stream entry checked, then applied in the same
transaction as its inbox row.

The relay delivers at least once, so an event can arrive twice. The inbox has one row per event
applied, inserted in the same transaction as the event's effect: a second delivery finds the row and
changes nothing. The effect here is a read model: per user, how many scores were applied and which
one is the latest (the highest sequence number, so the arrival order does not matter).

Each entry is checked before the database sees it (every field decoded, every character and range
checked), and applied in a savepoint of its own: an entry that cannot be applied, a *poison*, undoes
only itself, and the good entries of its batch commit. A database error is the entry's fault only
when the database rejected its data (SQLSTATE class 22, data exception; 23, integrity violation);
any other error (a lost connection, a statement timeout, a deadlock) rolls back the whole batch,
which is delivered again.

Each user's events carry their sequence number. The consumer compares it with the highest number it
has applied for that user: a number further on means a gap (events not yet arrived, or never coming:
discarded or dead-lettered), a lower one means a late event (sent again after the broker lost it).
Both are applied and counted; nothing waits for a missing event, so no user is ever held back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import case, func, select, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .database import WRITE_TRANSACTION, Database
from .models import InboxEntry, ScoreSummary
from .outbox_stats import describe

Entry = tuple[str, dict[bytes, bytes]]  # (stream entry ID, its fields as Redis holds them)
MAX_FIELD_BYTES = 64 * 1024
MAX_SEQUENCE = 2**63 - 1  # a BIGINT


class PoisonEntry(ValueError):
    """A stream entry the consumer cannot apply, however often it is delivered."""


@dataclass(frozen=True)
class Event:
    """A checked entry: every field is text the database accepts."""

    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    sequence: int | None  # None on entries appended before revision 0006
    created_at: datetime
    payload: dict


def _decoded(fields: dict[bytes, bytes]) -> dict[str, str]:
    text = {}
    for name, value in fields.items():
        if len(value) > MAX_FIELD_BYTES:
            raise PoisonEntry(f"field {name[:40]!r} holds {len(value):,} bytes (at most {MAX_FIELD_BYTES:,})")
        try:
            text[name.decode()] = value.decode()
        except UnicodeDecodeError as exc:
            raise PoisonEntry(f"field {name[:40]!r} is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    return text


def _identifier(fields: dict, name: str, max_length: int = 36) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_length or not value.isprintable():
        raise PoisonEntry(f"{name} missing, or not printable text of at most {max_length} characters: {value!r:.60}")
    return value


def _sequence(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_SEQUENCE:
        raise PoisonEntry(f"sequence is not a whole number from 1 to 2^63-1: {text!r:.40}")
    return int(text)


def _moment(text: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat(text or "")
    except ValueError as exc:
        raise PoisonEntry(f"created_at is not an ISO 8601 time: {text!r:.60}") from exc
    if moment.tzinfo is None:
        raise PoisonEntry("created_at has no time zone")
    try:
        return moment.astimezone(UTC)  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
    except OverflowError as exc:
        raise PoisonEntry(f"created_at is out of range in UTC: {text!r:.60}") from exc


def parse_entry(fields: dict[bytes, bytes]) -> Event:
    """The entry's event, or PoisonEntry saying what is wrong with it."""
    text = _decoded(fields)
    try:
        payload = json.loads(text.get("payload", ""))
    except ValueError as exc:
        raise PoisonEntry(f"payload is not JSON: {describe(exc)}") from exc
    if not isinstance(payload, dict):
        raise PoisonEntry("payload is not a JSON object")
    return Event(
        event_id=_identifier(text, "event_id"), event_type=_identifier(text, "event_type", 100),
        aggregate_type=_identifier(text, "aggregate_type", 100), aggregate_id=_identifier(text, "aggregate_id"),
        sequence=_sequence(text.get("sequence")), created_at=_moment(text.get("created_at")), payload=payload,
    )


def parse_score(event: Event) -> tuple[str, float]:
    """(score ID, AI-R score) of an AIRScoreCalculated event, or PoisonEntry."""
    air_score = event.payload.get("air_score")
    if isinstance(air_score, bool) or not isinstance(air_score, int | float) or not math.isfinite(air_score) \
            or not 0 <= air_score <= 100:
        raise PoisonEntry(f"air_score is not a number from 0 to 100: {air_score!r:.60}")
    return _identifier(event.payload, "score_id"), float(air_score)


def entrys_fault(error: sa_exc.StatementError) -> bool:
    """Did the database reject the entry's data, rather than fail? SQLSTATE class 22 (data exception)
    or 23 (integrity violation), or a value the driver could not even send; not a lost connection
    (08), a statement timeout or cancel (57), a deadlock or serialization failure (40), or anything
    else, which the batch is delivered again for."""
    if isinstance(error, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if not isinstance(error, sa_exc.DBAPIError):  # raised while binding a value, before sending
        return not isinstance(error.orig, ConnectionError | OSError | TimeoutError)
    sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
    return sqlstate[:2] in ("22", "23")


def _insert(session: AsyncSession):
    return postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert


async def record_delivery(session: AsyncSession, *, event: Event, stream_id: str) -> bool:
    """Insert the event's inbox row; True on its first delivery. A repeat only counts itself:
    ON CONFLICT waits for a concurrent first delivery to commit, so exactly one transaction wins."""
    insert = _insert(session)(InboxEntry).values(
        event_id=event.event_id, stream_id=stream_id, deliveries=1, applied_at=datetime.now(UTC),
        aggregate_type=event.aggregate_type, aggregate_id=event.aggregate_id, sequence=event.sequence,
    )
    statement = insert.on_conflict_do_update(
        index_elements=[InboxEntry.event_id], set_={"deliveries": InboxEntry.deliveries + 1}
    ).returning(InboxEntry.deliveries)
    return (await session.execute(statement)).scalar_one() == 1


async def apply_event(session: AsyncSession, event: Event) -> None:
    """The effect: count the score for its user; keep the one with the highest sequence number as
    the latest, whatever order events arrive in."""
    if event.event_type != "AIRScoreCalculated":
        return
    score_id, air_score = parse_score(event)
    now = datetime.now(UTC)
    insert = _insert(session)(ScoreSummary).values(
        user_id=event.aggregate_id, scores_applied=1, latest_score_id=score_id, latest_air_score=air_score,
        latest_event_at=event.created_at, latest_sequence=event.sequence, updated_at=now,
    )
    newer = insert.excluded.latest_sequence > func.coalesce(ScoreSummary.latest_sequence, 0)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[ScoreSummary.user_id],
            set_={"scores_applied": ScoreSummary.scores_applied + 1, "updated_at": now} | {
                column: case((newer, getattr(insert.excluded, column)), else_=getattr(ScoreSummary, column))
                for column in ("latest_score_id", "latest_air_score", "latest_event_at", "latest_sequence")
            },
        )
    )


async def highest_applied(session: AsyncSession, events: Sequence[Event]) -> dict[tuple[str, str], int]:
    """The highest sequence number applied so far for each of these events' users (one statement)."""
    users = {(e.aggregate_type, e.aggregate_id) for e in events if e.sequence is not None}
    if not users:
        return {}
    user = tuple_(InboxEntry.aggregate_type, InboxEntry.aggregate_id)
    rows = await session.execute(
        select(InboxEntry.aggregate_type, InboxEntry.aggregate_id, func.max(InboxEntry.sequence))
        .where(user.in_(sorted(users))).group_by(InboxEntry.aggregate_type, InboxEntry.aggregate_id)
    )
    return {(kind, key): highest for kind, key, highest in rows if highest is not None}


@dataclass(frozen=True)
class Applied:
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    gaps: int = 0  # numbers skipped: an event arrived while earlier ones of its user had not been applied
    late: int = 0  # events applied after a later event of their user
    failures: dict[str, str] = field(default_factory=dict)  # stream entry ID -> why it was not applied


async def apply_entries(*, db: Database, entries: Sequence[Entry]) -> Applied:
    """Apply a batch of stream entries in one transaction, each in its own savepoint: an event's
    inbox row and effect commit together; an entry that cannot be applied undoes only itself and
    is listed in `failures`. A database that fails (not the entry's fault) rolls back the batch."""
    failures: dict[str, str] = {}
    checked: list[tuple[str, Event]] = []
    for stream_id, fields in entries:
        try:
            checked.append((stream_id, parse_entry(fields)))
        except PoisonEntry as exc:
            failures[stream_id] = describe(exc)
    applied = duplicates = gaps = late = 0
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        highest = await highest_applied(session, [event for _, event in checked])
        for stream_id, event in checked:
            try:
                async with session.begin_nested():  # SAVEPOINT ... RELEASE, or ROLLBACK TO it
                    first = await record_delivery(session, event=event, stream_id=stream_id)
                    if first:
                        await apply_event(session, event)
            except PoisonEntry as exc:
                failures[stream_id] = describe(exc)
                continue
            except sa_exc.StatementError as exc:
                if not entrys_fault(exc):
                    raise
                failures[stream_id] = describe(exc)
                continue
            if not first:
                duplicates += 1
                continue
            applied += 1
            user, before = (event.aggregate_type, event.aggregate_id), highest.get((event.aggregate_type, event.aggregate_id))
            if event.sequence is not None and before is not None:
                gaps += max(event.sequence - before - 1, 0)
                late += event.sequence < before
            if event.sequence is not None:
                highest[user] = max(before or 0, event.sequence)
    return Applied(delivered=len(entries), applied=applied, duplicates=duplicates, gaps=gaps, late=late,
                   failures=failures)
