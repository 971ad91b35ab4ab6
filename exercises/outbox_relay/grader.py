"""The grader's side of sections 5 and 5b's exercises, outside the child: the lab's writer puts
events in the run's database, the run's Redis is read (and made to refuse) on the grader's own
client, the lab's consumer (source/inbox.py, with its inbox) applies what reached the stream, and an
observer counts, per event, what each relay lost, appended twice or put out of order (as
labbench/outbox_arc.py counts them for the lab's and the minimal relay). A relay is made to die at
the COMMIT of its marks by a deferred trigger the grader adds for that check.

The child's role may read the events and change only their delivery columns (status, published_at,
stream_id, attempts, next_attempt_at, last_error, updated_at): it cannot add, remove or renumber an
event, nor touch the consumer's inbox and read model, which only the grader writes."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy import text

from source.database import Database
from source.event_repository import DomainEventRepository
from source.inbox import PoisonEntry, apply_entries, parse_entry
from source.models import DomainEvent, new_id

DELIVERY_COLUMNS = "status, published_at, stream_id, attempts, next_attempt_at, last_error, updated_at"
REDIS_MAXMEMORY = "64mb"  # private_redis.CONFIG's
HOLD_SECONDS = 8  # how long the trigger holds a COMMIT; the grader kills the relay well before


async def grant_relay(run) -> None:
    """What a relay needs on the events, and nothing more."""
    role = run.database.name
    await run.sql(text(f"GRANT SELECT ON domain_events TO {role}"))
    await run.sql(text(f"GRANT UPDATE ({DELIVERY_COLUMNS}) ON domain_events TO {role}"))


def grader_database(run) -> Database:
    """The run's database as the grader (the cluster's superuser): not logged, not the child's."""
    return Database(run.cluster.admin_url(run.database.name), pool_size=2, max_overflow=2, pre_ping=False)


def new_stream() -> str:
    return f"outbox:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Written:
    event_id: str
    user: str
    sequence: int
    created_at: datetime
    writer: str


async def write_events(db: Database, *, users: int, count: int, skew_ms: float = 0.0) -> list[Written]:
    """`count` events for `users` new users, numbered by the lab's writer (DomainEventRepository:
    each user's next numbers from its counter row), in one transaction. With skew_ms, the writes
    alternate between writer A and writer B, whose clock runs skew_ms behind A's, two writes per
    user in turn: each of B's events is numbered after A's, yet carries an earlier created_at,
    as when two app servers write for the same user one after the other."""
    ids = [new_id() for _ in range(users)]
    events, writers = [], []
    for n in range(count):
        writer = "B" if skew_ms and n % 2 else "A"
        user = ids[(n // 2) % users] if skew_ms else ids[n % users]
        stamp = datetime.now(UTC) - timedelta(milliseconds=skew_ms if writer == "B" else 0)
        events.append(DomainEvent(event_type="AIRScoreCalculated", aggregate_type="User", aggregate_id=user,
                                  created_at=stamp, payload={"score_id": new_id(), "user_id": user,
                                                             "air_score": 50.0 + n % 40}))
        writers.append(writer)
    async with db.sessions.begin() as session:
        await DomainEventRepository(session).add_all(events)
    return [Written(event.id, event.aggregate_id, event.sequence, event.created_at, writer)
            for event, writer in zip(events, writers, strict=True)]


async def set_aside_pending(run) -> None:
    """Events an earlier check left pending are set aside (discarded), so each check's relay
    starts from the events that check wrote."""
    await run.sql(text("UPDATE domain_events SET status = 'discarded' WHERE status = 'pending'"))


class Broker:
    """The run's Redis as the grader sees it: a redis-server read on the grader's own client
    (bytes, undecoded, as the lab's consumer reads it), or fakeredis inside the child, whose
    entries the child reports."""

    def __init__(self, run) -> None:
        self.run = run
        self.client = aioredis.Redis(unix_socket_path=str(run.redis.socket), password=run.redis.password,
                                     socket_timeout=5, socket_connect_timeout=5) if run.redis is not None else None

    @property
    def outside(self) -> bool:
        return self.client is not None

    async def entries(self, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
        if self.client is not None:
            return [(entry_id.decode(), fields) for entry_id, fields in await self.client.xrange(stream)]
        listed = (await self.run.call("fake_entries", stream=stream)).value or []
        return [(entry_id, {k.encode("latin-1"): v.encode("latin-1") for k, v in fields.items()})
                for entry_id, fields in listed]

    async def refuse(self) -> None:
        """Every write refused with Redis's own OOM error (maxmemory reached); reads still work."""
        if self.client is not None:
            await self.client.config_set("maxmemory", 1)
        else:
            await self.run.call("fake_refuse", refuse=True)

    async def accept(self) -> None:
        if self.client is not None:
            await self.client.config_set("maxmemory", REDIS_MAXMEMORY)
        else:
            await self.run.call("fake_refuse", refuse=False)

    async def refusals(self) -> int | None:
        """Writes Redis refused for memory, by its own count (INFO errorstats); None with fakeredis."""
        if self.client is None:
            return None
        return (await self.client.info("errorstats")).get("errorstat_OOM", {}).get("count", 0)

    async def xadds(self) -> int | None:
        """XADD commands Redis ran (INFO commandstats); None with fakeredis."""
        if self.client is None:
            return None
        return (await self.client.info("commandstats")).get("cmdstat_xadd", {}).get("calls", 0)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


@dataclass
class Outcome:
    """One check's events, observed: the stream (the grader's read), the events table and the
    consumer's inbox (the grader's own queries)."""

    written: int
    entries: int = 0  # stream entries of these events
    appended: int = 0  # distinct events in the stream
    twice: int = 0  # events appended more than once
    marked: int = 0  # events marked published in the table
    marked_not_appended: int = 0
    inversions: int = 0  # events that reached the stream after a later event (by sequence) of their user
    unreadable: list[str] = field(default_factory=list)  # entries the consumer cannot read, and why
    wrong_fields: list[str] = field(default_factory=list)  # entries whose fields do not match their event
    applied: int = 0  # events the lab's consumer has applied (its inbox), out of `written`
    repeats: int = 0  # deliveries its inbox dropped as repeats
    effects_twice: int = 0  # scores counted more than once in the read model
    statuses: Counter = field(default_factory=Counter)  # of the events never applied

    @property
    def lost(self) -> int:
        return self.written - self.applied

    def figures(self) -> dict:
        return {"events": self.written, "stream_entries": self.entries, "appended": self.appended,
                "published_twice": self.twice, "marked_published": self.marked,
                "marked_never_appended": self.marked_not_appended, "inversions": self.inversions,
                "applied_once": self.applied, "repeats_absorbed_by_inbox": self.repeats, "lost": self.lost}


async def stream_view(broker: Broker, stream: str, events: list[Written]) -> tuple[list, Outcome]:
    """The stream's entries and what they show of `events`: appended, twice, out of order, fields."""
    truth = {event.event_id: event for event in events}
    entries = await broker.entries(stream)
    outcome = Outcome(len(events))
    seen: Counter = Counter()
    highest: dict[str, int] = {}
    for entry_id, fields in entries:
        event_id = fields.get(b"event_id", b"").decode("utf-8", "replace")
        event = truth.get(event_id)
        if event is None:
            outcome.unreadable.append(f"entry {entry_id}: event_id {event_id[:40]!r} is no event of this check")
            continue
        outcome.entries += 1
        seen[event_id] += 1
        try:
            parsed = parse_entry(fields)
        except PoisonEntry as error:
            outcome.unreadable.append(f"entry {entry_id} (event {event_id[:8]}): {error}")
        else:
            if parsed.sequence != event.sequence or parsed.aggregate_id != event.user:
                outcome.wrong_fields.append(
                    f"entry {entry_id}: sequence {parsed.sequence}, aggregate_id {parsed.aggregate_id[:8]}; the event "
                    f"has sequence {event.sequence}, aggregate_id {event.user[:8]}")
        if seen[event_id] == 1:  # a repeat is no new order
            outcome.inversions += event.sequence < highest.get(event.user, 0)
            highest[event.user] = max(event.sequence, highest.get(event.user, 0))
    outcome.appended = len(seen)
    outcome.twice = sum(1 for count in seen.values() if count > 1)
    return entries, outcome


async def observe(run, db: Database, broker: Broker, stream: str, events: list[Written], *,
                  consume: bool = True) -> Outcome:
    """The stream and the table now; with consume, the lab's consumer then applies the stream's
    entries of these events (its inbox drops repeats) and the inbox is read."""
    entries, outcome = await stream_view(broker, stream, events)
    ids = [event.event_id for event in events]
    appended = {fields.get(b"event_id", b"").decode("utf-8", "replace") for _, fields in entries}
    status = dict((await run.sql(text("SELECT id, status FROM domain_events WHERE id = ANY(:ids)"), {"ids": ids})).all())
    marked = {event_id for event_id, value in status.items() if value == "published"}
    outcome.marked = len(marked)
    outcome.marked_not_appended = len(marked - appended)
    if consume:
        ours = [(entry_id, fields) for entry_id, fields in entries
                if fields.get(b"event_id", b"").decode("utf-8", "replace") in status]
        if ours:
            outcome.repeats = (await apply_entries(db=db, entries=ours)).duplicates
        done = set((await run.sql(text("SELECT event_id FROM consumer_inbox WHERE event_id = ANY(:ids)"),
                                  {"ids": ids})).scalars())
        outcome.applied = len(done)
        outcome.statuses = Counter(status.get(event_id, "?") for event_id in ids if event_id not in done)
        users = sorted({event.user for event in events})
        counted = (await run.sql(text("SELECT coalesce(sum(scores_applied), 0) FROM score_summaries "
                                      "WHERE user_id = ANY(:users)"), {"users": users})).scalar_one()
        outcome.effects_twice = int(counted) - len(done)
    return outcome


def created_at_inversions(events: list[Written]) -> int:
    """Events that a relay ordering by created_at would put after a later event of their user."""
    highest: dict[str, int] = {}
    inverted = 0
    for event in sorted(events, key=lambda e: (e.created_at, e.event_id)):
        inverted += event.sequence < highest.get(event.user, 0)
        highest[event.user] = max(event.sequence, highest.get(event.user, 0))
    return inverted


def follows_created_at(entries: list, events: list[Written]) -> bool:
    """Whether the stream's first entries of each event are in created_at order."""
    truth = {event.event_id: event for event in events}
    order, seen = [], set()
    for _, fields in entries:
        event = truth.get(fields.get(b"event_id", b"").decode("utf-8", "replace"))
        if event is not None and event.event_id not in seen:
            seen.add(event.event_id)
            order.append(event)
    return bool(order) and order == sorted(order, key=lambda e: (e.created_at, e.event_id))


def lost_statuses(outcome: Outcome) -> str:
    return ", ".join(f"{count} {status!r}" for status, count in outcome.statuses.most_common())


# --- a relay that dies at its COMMIT -------------------------------------------------------------

async def hold_commits(run, on: bool) -> None:
    """A deferred trigger that holds each COMMIT marking an event published (the grader's own:
    the run's role cannot alter the table, nor see the function)."""
    if on:
        await run.sql(text("CREATE FUNCTION exercise_hold_commit() RETURNS trigger LANGUAGE plpgsql AS "
                           f"$$BEGIN PERFORM pg_sleep({HOLD_SECONDS}); RETURN NULL; END$$"))
        await run.sql(text("CREATE CONSTRAINT TRIGGER exercise_relay_dies AFTER UPDATE ON domain_events DEFERRABLE "
                           "INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status = 'published') "
                           "EXECUTE FUNCTION exercise_hold_commit()"))
    else:
        await run.sql(text("DROP TRIGGER IF EXISTS exercise_relay_dies ON domain_events"))
        await run.sql(text("DROP FUNCTION IF EXISTS exercise_hold_commit()"))


async def held_backend(run, task: asyncio.Future, timeout: float) -> int | None:
    """The run's backend whose COMMIT the trigger holds, once it is there; None if the call ended
    first, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not task.done():
        pid = (await run.sql(text("SELECT pid FROM pg_stat_activity WHERE usename = :role AND wait_event = 'PgSleep' "
                                  "AND query ILIKE 'commit%'"),
                             {"role": run.database.name})).scalar()
        if pid is not None:
            return pid
        await asyncio.sleep(0.01)
    return None


async def cut(run, pid: int) -> None:
    """What the server does when a relay's process dies: its session ends and its open
    transaction rolls back (the server notices the closed socket within
    client_connection_check_interval; the grader does not wait for that)."""
    await run.sql(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    for _ in range(500):
        if not (await run.sql(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})).scalar():
            return
        await asyncio.sleep(0.01)
