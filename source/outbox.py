"""5. The transactional outbox relay: pending events go from the database to a Redis stream.

The score and its event were committed together (services.calculate_and_store_airscore). The
relay moves events on: it claims due pending rows (how: outbox_claims.py), appends them to a
stream with one pipeline, and marks them published in the same transaction. Delivery is at least
once: a relay that dies between the append and the mark appends the same events again on its next
cycle; the consumer (consumer.py) turns that into an effect applied exactly once. publisher.py runs the relay and the
consumer on a thread of their own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
import redis.asyncio as aioredis
from sqlalchemy import Row, bindparam, update
from sqlalchemy.exc import DBAPIError

from . import config
from .database import WRITE_TRANSACTION, Database
from .event_repository import DomainEventRepository
from .models import DomainEvent
from .outbox_claims import AGGREGATE_ORDER, claim
from .outbox_stats import Stats, describe
from .partitions import Partitions

log = logging.getLogger("lab2.outbox")
NOTIFY_CHANNEL = "domain_events_pending"  # revision 0002's trigger notifies it on PostgreSQL


def stream_key(prefix: str | None = None) -> str:
    """The stream the relay appends to; under the lab's key prefix like every key it writes."""
    return f"{config.redis_prefix() if prefix is None else prefix}domain-events"


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 100
    poll_interval: float = 0.2  # how often the relay looks when nothing wakes it (SQLite)
    use_notify: bool = True  # PostgreSQL: wake on LISTEN/NOTIFY ...
    notify_fallback_poll: float = 1.0  # ... and still look this often, in case a NOTIFY is missed
    max_attempts: int = 6
    backoff_base: float = 0.5  # seconds before the first retry; doubles with each attempt
    backoff_max: float = 10.0
    redis_timeout: float = 0.5
    # With several relays on PostgreSQL: AGGREGATE_ORDER keeps each user's events in order, ANY_ORDER
    # only keeps any event from going out twice (outbox_claims.py). One relay, or SQLite: the same.
    design: str = AGGREGATE_ORDER


# --- one relay cycle ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    claimed: int = 0
    published: int = 0
    retried: int = 0
    failed: int = 0
    next_retry_at: datetime | None = None
    error: str | None = None
    changes: tuple[dict, ...] = ()  # schedule_retries: what to write to each event


def stream_fields(event: Row) -> dict[str, str]:
    """A claimed row as stream fields; the payload is the JSON text the writer stored, sent as is."""
    return {
        "event_id": event.id,
        "event_type": event.event_type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": str(event.sequence),  # the consumer applies each user's events in this order
        "created_at": event.created_at.isoformat(),
        "payload": event.payload,
    }


def backoff(*, attempts: int, settings: RelaySettings, rng: random.Random) -> float:
    """Exponential back-off with jitter, so that relays retrying after an outage spread out."""
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** (attempts - 1))
    return ceiling * rng.uniform(0.5, 1.0)


def claims_under_leases(db: Database, settings: RelaySettings) -> bool:
    """In aggregate order on PostgreSQL a relay claims its partitions' users (partitions.py)."""
    return db.backend == "postgresql" and settings.design == AGGREGATE_ORDER


async def relay_batch(
    *,
    db: Database,
    redis_client: aioredis.Redis,
    stream: str,
    settings: RelaySettings,
    partitions: Partitions | None = None,
    rng: random.Random | None = None,
) -> BatchResult:
    """Claim a batch of due events, append them to the stream, mark them published, all inside
    one database transaction that holds the claimed rows until it ends. In aggregate order on
    PostgreSQL the relay claims under its partitions' leases (by default the ones this engine's relay
    holds), renewed first when a heartbeat is due."""
    rng = rng or random.Random()
    leased = claims_under_leases(db, settings)
    partitions = partitions or Partitions.of(db)
    if leased and partitions.heartbeat_due():
        await partitions.refresh(db)
    now = datetime.now(UTC)
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        events = await claim(session, now=now, limit=settings.batch_size, design=settings.design,
                             relay=partitions.relay_id if leased else None, partitions_held=len(partitions.held))
        if not events:
            return BatchResult()
        try:
            async with redis_client.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(stream, stream_fields(event))
                entry_ids = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            result = schedule_retries(events, error=exc, now=now, settings=settings, rng=rng)
            await session.execute(RECORD_FAILURE, result.changes)
            return result
        # Each event's entry ID is kept with its mark, so a broker that loses entries is noticed (reconcile.py).
        appended = [(event.id, _text(entry_id)) for event, entry_id in zip(events, entry_ids, strict=True)]
        await DomainEventRepository(session).mark_as_published(appended)
    return BatchResult(claimed=len(events), published=len(events))


def _text(entry_id: str | bytes) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def refused(error: BaseException) -> bool:
    """Did the broker answer "no" (an error reply, e.g. OOM)? A connection that fails is not a
    refusal, and a timeout is not either: its outcome is unknown, since Redis may have run the
    commands and only the reply was lost. Only refusals count toward parking an event."""
    return isinstance(error, redis.ResponseError)


_EVENT = DomainEvent.__table__.c
RECORD_FAILURE = (  # one row per event: its attempts, its error, and its retry time or its parking
    update(DomainEvent.__table__).where(_EVENT.id == bindparam("event_id"))
    .values(attempts=bindparam("attempts"), last_error=bindparam("last_error"), status=bindparam("status"),
            next_attempt_at=bindparam("next_attempt_at"))
)


def schedule_retries(
    events: Sequence[Row], *, error: BaseException, now: datetime, settings: RelaySettings, rng: random.Random,
) -> BatchResult:
    """Record the error on each event and retry later, with back-off capped at backoff_max, so
    events drain by themselves after an outage of any length. Park an event as failed only when
    the broker refused it and it has max_attempts failed attempts. (The changes, in `changes`, are
    written by the claiming transaction: RECORD_FAILURE.)"""
    retried = failed = 0
    next_retry: datetime | None = None
    if isinstance(error, redis.TimeoutError | TimeoutError):
        note = "outcome unknown, sent again (the inbox drops a repeat): "
    elif refused(error):
        note = "refused: "
    else:
        note = "broker unreachable: "
    changes = []
    for event in events:
        attempts = event.attempts + 1
        change = {"event_id": event.id, "attempts": attempts, "last_error": (note + describe(error))[:500],
                  "status": "pending", "next_attempt_at": None}
        if refused(error) and attempts >= settings.max_attempts:
            change["status"] = "failed"
            failed += 1
        else:
            change["next_attempt_at"] = now + timedelta(seconds=backoff(attempts=attempts, settings=settings, rng=rng))
            next_retry = min(next_retry or change["next_attempt_at"], change["next_attempt_at"])
            retried += 1
        changes.append(change)
    return BatchResult(claimed=len(events), retried=retried, failed=failed, next_retry_at=next_retry,
                       error=describe(error), changes=tuple(changes))


# --- the relay loop ---------------------------------------------------------------------------


class _Listener:
    """A dedicated asyncpg connection that LISTENs for the trigger's NOTIFY (sent at commit)."""

    def __init__(self, db: Database, wake: asyncio.Event) -> None:
        self.db, self.wake = db, wake
        self.connection = None

    @property
    def active(self) -> bool:
        return self.connection is not None and not self.connection.is_closed()

    async def ensure(self) -> None:
        if self.active:
            return
        import asyncpg

        try:
            self.connection = await asyncio.wait_for(asyncpg.connect(self.db.asyncpg_dsn), 5)
            await self.connection.add_listener(NOTIFY_CHANNEL, self._notified)
        except Exception as exc:  # fall back to polling; try again on the next cycle
            log.warning("LISTEN failed, polling instead: %s", type(exc).__name__)
            await self.close()

    def _notified(self, *_args) -> None:
        self.wake.set()

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), 0.3)
            except Exception:
                connection.terminate()


def relay_database(url: str) -> Database:
    """The relay's own engine: one connection at a time, and no pre-ping (three round trips per
    checkout on asyncpg, and the relay checks out one per batch): event_publisher claims again
    when a connection turns out closed."""
    return Database(url, pool_size=1, max_overflow=1, pre_ping=False)


def wake_mode(backend: str, settings: RelaySettings) -> str:
    if backend == "postgresql" and settings.use_notify:
        return f"LISTEN/NOTIFY at commit, and a poll every {settings.notify_fallback_poll:g} s as a fallback"
    return f"a poll every {settings.poll_interval:g} s"


async def _sleep(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> bool:
    """Wait until stop, wake or the timeout; True if woken by `wake`."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return wake is not None and wake.is_set() and not stop.is_set()


async def event_publisher(
    *,
    db: Database,
    redis_client: aioredis.Redis,
    stream: str,
    stop: asyncio.Event,
    settings: RelaySettings = RelaySettings(),
    stats: Stats | None = None,
    partitions: Partitions | None = None,
) -> None:
    """The relay: claim, append, mark, until `stop` is set. Never raises: a failing database or
    broker is recorded in `stats` and retried. In aggregate order it holds its share of the
    partitions (partitions.py) and gives them back when it stops."""
    stats = stats or Stats()
    partitions = partitions or Partitions.of(db)
    rng = random.Random()
    wake = asyncio.Event()
    listener = _Listener(db, wake) if db.backend == "postgresql" and settings.use_notify else None
    stats.set(wake_mode=wake_mode(db.backend, settings))
    reconnected = False
    try:
        while not stop.is_set():
            if listener is not None:
                await listener.ensure()
            wake.clear()  # before claiming: a NOTIFY during the claim triggers another cycle
            try:
                result = await relay_batch(db=db, redis_client=redis_client, stream=stream, settings=settings,
                                           partitions=partitions, rng=rng)
            except Exception as exc:  # the transaction rolled back: its events are still pending
                # A connection the server had closed (a restart, a failover) fails the batch; the pool
                # then replaces each connection it opened before, at its next checkout. So claim again
                # at once, once: what the pool's pre-ping would have done, without its three round
                # trips at every checkout (the relay's engine has none: relay_database).
                if isinstance(exc, DBAPIError) and exc.connection_invalidated and not reconnected:
                    reconnected = True
                    continue
                log.warning("relay cycle failed: %s", describe(exc))
                stats.set(last_error=describe(exc), last_error_at=datetime.now(UTC))
                await _sleep(stop, None, settings.poll_interval * 5)
                continue
            reconnected = False
            if result.claimed:
                stats.add(
                    batches=1, published=result.published, retries_scheduled=result.retried, failed=result.failed
                )
                stats.set(last_batch_at=datetime.now(UTC), last_batch_size=result.claimed)
                if result.error:
                    stats.set(last_error=result.error, last_error_at=datetime.now(UTC))
                if result.claimed == settings.batch_size and result.published:
                    continue  # a full batch went out: more may be waiting
            interval = settings.notify_fallback_poll if listener is not None and listener.active else settings.poll_interval
            if claims_under_leases(db, settings):  # renew the leases in time
                interval = min(interval, partitions.settings.heartbeat)
            if result.next_retry_at is not None:
                until_retry = (result.next_retry_at - datetime.now(UTC)).total_seconds()
                interval = min(interval, max(until_retry, 0.0))
            if await _sleep(stop, wake, interval):
                stats.add(notify_wakeups=1)
    finally:
        if listener is not None:
            await listener.close()
        if partitions.held:  # the others take them over at their next heartbeat, not after a lease's ttl
            try:
                await asyncio.wait_for(partitions.leave(db), 0.3)
            except Exception:
                pass
