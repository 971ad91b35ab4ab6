"""5. The transactional outbox relay: pending events go from the database to a Redis stream.

The score and its event were committed together (services.calculate_and_store_airscore). The
relay moves events on: it claims due pending rows, appends them to a stream with one pipeline,
and marks them published in the same transaction. Delivery is at least once: a relay that dies
between the append and the mark appends the same events again on its next cycle; the consumer
(consumer.py) turns that into an effect applied exactly once.

`Publisher` runs the relay and the consumer on a thread of its own, with its own event loop,
engine and Redis clients: one per process, shared by every session of the app.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import redis
import redis.asyncio as aioredis
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import aliased

from . import config, redis_setup
from .consumer import CONSUMER_GROUP, event_consumer, inbox_figures, read_model
from .database import WRITE_TRANSACTION, Database
from .models import DomainEvent, InboxEntry
from .redis_setup import RedisTarget
from .repositories import DomainEventRepository

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
    # The consumer
    consumer_block: float = 0.25  # XREADGROUP BLOCK: how long one read waits for new entries
    claim_min_idle: float = 5.0  # an entry unacknowledged this long is taken from its consumer
    claim_interval: float = 1.0


# --- faults a learner (or a test) switches on ---------------------------------------------


class SimulatedCrash(Exception):
    """The relay 'dies' after appending to the stream and before marking the events published."""

    def __init__(self, appended: int) -> None:
        super().__init__(f"relay crashed after appending {appended} event(s), before marking them published")
        self.appended = appended


class Faults:
    """Read by the relay on its own thread, switched from any other."""

    def __init__(self, *, broker_failure_rate: float = 0.0, crash_rate: float = 0.0, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.broker_down = False  # only the relay's publish path refuses: the cache keeps working
        self.broker_failure_rate = broker_failure_rate
        self.crash_rate = crash_rate
        self._crashes_armed = 0

    def arm_crash(self) -> None:
        """Crash after the next append (once)."""
        with self._lock:
            self._crashes_armed += 1

    @property
    def crash_armed(self) -> bool:
        return self._crashes_armed > 0

    def broker_refuses(self) -> bool:
        with self._lock:
            return self.broker_down or self._rng.random() < self.broker_failure_rate

    def crash_now(self) -> bool:
        with self._lock:
            if self._crashes_armed:
                self._crashes_armed -= 1
                return True
            return self._rng.random() < self.crash_rate


# --- figures, readable from any thread ------------------------------------------------------


@dataclass(frozen=True)
class PublisherSnapshot:
    running: bool = False
    wake_mode: str = ""
    started_at: datetime | None = None
    batches: int = 0
    appended: int = 0  # stream entries this relay appended (a crashed batch is appended again)
    published: int = 0
    retries_scheduled: int = 0
    failed: int = 0
    crashes: int = 0
    notify_wakeups: int = 0
    last_batch_at: datetime | None = None
    last_batch_size: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    consumer_name: str = ""
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    claimed: int = 0
    consumer_error: str | None = None


class Stats:
    """A lock-protected, immutable snapshot: writers replace it, readers get a consistent copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = PublisherSnapshot()

    def add(self, **increments: int) -> None:
        with self._lock:
            now = self._snapshot
            self._snapshot = replace(now, **{k: getattr(now, k) + v for k, v in increments.items()})

    def set(self, **values: object) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **values)

    def snapshot(self) -> PublisherSnapshot:
        with self._lock:
            return self._snapshot


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


# --- one relay cycle ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    claimed: int = 0
    published: int = 0
    retried: int = 0
    failed: int = 0
    next_retry_at: datetime | None = None
    error: str | None = None


def due_events(*, now: datetime, limit: int):
    """Pending events that are due, oldest first, except those queued behind an earlier event
    of the same aggregate that waits for its retry: one relay keeps each aggregate in order."""
    earlier = aliased(DomainEvent)
    waits_behind_a_retry = exists().where(
        earlier.aggregate_type == DomainEvent.aggregate_type,
        earlier.aggregate_id == DomainEvent.aggregate_id,
        earlier.status == "pending",
        earlier.next_attempt_at > now,
        or_(
            earlier.created_at < DomainEvent.created_at,
            and_(earlier.created_at == DomainEvent.created_at, earlier.id < DomainEvent.id),
        ),
    )
    return (
        select(DomainEvent)
        .where(
            DomainEvent.status == "pending",
            or_(DomainEvent.next_attempt_at.is_(None), DomainEvent.next_attempt_at <= now),
            ~waits_behind_a_retry,
        )
        .order_by(DomainEvent.created_at, DomainEvent.id)
        .limit(limit)
        # Rows another relay has claimed are skipped, not waited for: concurrent relays never
        # claim the same event. (SQLite ignores it; there the write lock taken at BEGIN
        # serialises relays instead.)
        .with_for_update(skip_locked=True)
    )


def stream_fields(event: DomainEvent) -> dict[str, str]:
    return {
        "event_id": event.id,
        "event_type": event.event_type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "created_at": event.created_at.isoformat(),
        "payload": json.dumps(event.payload, sort_keys=True),
    }


def backoff(*, attempts: int, settings: RelaySettings, rng: random.Random) -> float:
    """Exponential back-off with jitter, so that relays retrying after an outage spread out."""
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** (attempts - 1))
    return ceiling * rng.uniform(0.5, 1.0)


async def relay_batch(
    *,
    db: Database,
    redis_client: aioredis.Redis,
    stream: str,
    settings: RelaySettings,
    faults: Faults | None = None,
    rng: random.Random | None = None,
) -> BatchResult:
    """Claim a batch of due events, append them to the stream, mark them published, all inside
    one database transaction that holds the claimed rows until it ends."""
    rng = rng or random.Random()
    now = datetime.now(UTC)
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        events = (await session.scalars(due_events(now=now, limit=settings.batch_size))).all()
        if not events:
            return BatchResult()
        try:
            if faults is not None and faults.broker_refuses():
                raise redis.ConnectionError("broker unreachable (fault switched on in the lab)")
            async with redis_client.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(stream, stream_fields(event))
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            return schedule_retries(events, error=exc, now=now, settings=settings, rng=rng)
        if faults is not None and faults.crash_now():
            raise SimulatedCrash(len(events))  # rolls back: the events stay pending, yet are in the stream
        await DomainEventRepository(session).mark_as_published([e.id for e in events])
    return BatchResult(claimed=len(events), published=len(events))


def schedule_retries(
    events: Sequence[DomainEvent], *, error: BaseException, now: datetime, settings: RelaySettings,
    rng: random.Random,
) -> BatchResult:
    """Record the error on each event; retry later, or park it as failed after max_attempts.
    (The changes commit with the claiming transaction.)"""
    retried = failed = 0
    next_retry: datetime | None = None
    for event in events:
        event.attempts += 1
        event.last_error = describe(error)
        if event.attempts >= settings.max_attempts:
            event.status = "failed"
            failed += 1
        else:
            event.next_attempt_at = now + timedelta(seconds=backoff(attempts=event.attempts, settings=settings, rng=rng))
            next_retry = min(next_retry or event.next_attempt_at, event.next_attempt_at)
            retried += 1
    return BatchResult(
        claimed=len(events), retried=retried, failed=failed, next_retry_at=next_retry, error=describe(error)
    )


async def retry_failed_events(*, db: Database) -> int:
    """Give failed events a fresh set of attempts; returns how many."""
    async with db.sessions.begin() as session:
        result = await session.execute(
            update(DomainEvent)
            .where(DomainEvent.status == "failed")
            .values(status="pending", attempts=0, next_attempt_at=None, last_error=None)
        )
    return result.rowcount


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

        dsn = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            self.connection = await asyncio.wait_for(asyncpg.connect(dsn), 5)
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
    faults: Faults | None = None,
    stats: Stats | None = None,
) -> None:
    """The relay: claim, append, mark, until `stop` is set. Never raises: a failing database or
    broker is recorded in `stats` and retried."""
    stats = stats or Stats()
    rng = random.Random()
    wake = asyncio.Event()
    listener = _Listener(db, wake) if db.backend == "postgresql" and settings.use_notify else None
    stats.set(wake_mode=wake_mode(db.backend, settings))
    try:
        while not stop.is_set():
            if listener is not None:
                await listener.ensure()
            wake.clear()  # before claiming: a NOTIFY during the claim triggers another cycle
            try:
                result = await relay_batch(
                    db=db, redis_client=redis_client, stream=stream, settings=settings, faults=faults, rng=rng
                )
            except SimulatedCrash as crash:
                stats.add(crashes=1, appended=crash.appended)
                stats.set(last_error=describe(crash), last_error_at=datetime.now(UTC))
                continue  # a restarted relay finds the same events still pending
            except Exception as exc:
                log.warning("relay cycle failed: %s", describe(exc))
                stats.set(last_error=describe(exc), last_error_at=datetime.now(UTC))
                await _sleep(stop, None, settings.poll_interval * 5)
                continue
            if result.claimed:
                stats.add(
                    batches=1, appended=result.published, published=result.published,
                    retries_scheduled=result.retried, failed=result.failed,
                )
                stats.set(last_batch_at=datetime.now(UTC), last_batch_size=result.claimed)
                if result.error:
                    stats.set(last_error=result.error, last_error_at=datetime.now(UTC))
                if result.claimed == settings.batch_size and result.published:
                    continue  # a full batch went out: more may be waiting
            interval = settings.notify_fallback_poll if listener is not None and listener.active else settings.poll_interval
            if result.next_retry_at is not None:
                until_retry = (result.next_retry_at - datetime.now(UTC)).total_seconds()
                interval = min(interval, max(until_retry, 0.0))
            if await _sleep(stop, wake, interval):
                stats.add(notify_wakeups=1)
    finally:
        if listener is not None:
            await listener.close()


# --- the thread -------------------------------------------------------------------------------


class Publisher:
    """The relay and the consumer on a thread of their own, with their own event loop, engine
    and Redis clients (same URLs; the same embedded server). Start twice: still one thread.
    Stop: returns within a second."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_target: RedisTarget,
        stream: str,
        settings: RelaySettings = RelaySettings(),
        faults: Faults | None = None,
    ) -> None:
        self.database_url = database_url
        self.redis_target = redis_target
        self.stream = stream
        self.settings = settings
        self.faults = faults or Faults()
        self.stats = Stats()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def wake_mode(self) -> str:
        return wake_mode(make_url(self.database_url).get_backend_name(), self.settings)

    def snapshot(self) -> PublisherSnapshot:
        return replace(self.stats.snapshot(), running=self.running, wake_mode=self.wake_mode)

    def start(self) -> bool:
        """Start the thread unless it runs; True if this call started it."""
        with self._lock:
            if self.running:
                return False
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name="lab2-outbox-publisher", daemon=True)
            self._thread.start()
            self._ready.wait(5)  # until its loop exists, so that stop() can reach it
            return True

    def stop(self, timeout: float = 1.0) -> bool:
        """Ask the thread to stop and wait for it; True if it has ended."""
        with self._lock:
            thread, loop, stop = self._thread, self._loop, self._stop
            if thread is None or not thread.is_alive():
                return True
            if loop is not None and stop is not None:
                try:
                    loop.call_soon_threadsafe(stop.set)
                except RuntimeError:  # its loop already closed
                    pass
            thread.join(timeout)
            return not thread.is_alive()

    def _run(self) -> None:
        # This thread's one loop, for its whole life: the engine and clients below belong to it.
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        db = Database(self.database_url, pool_size=3, max_overflow=2)
        fake_server = redis_setup.FAKE_SERVER  # looked up now: tests swap it
        publish_client = redis_setup.make_redis_client(
            self.redis_target, timeout=self.settings.redis_timeout, fake_server=fake_server
        )
        # A blocking XREADGROUP must not hit the socket timeout: give it the block time and more.
        consume_client = redis_setup.make_redis_client(
            self.redis_target, timeout=self.settings.consumer_block + 2.0, fake_server=fake_server
        )
        self.stats.set(started_at=datetime.now(UTC), wake_mode=self.wake_mode)
        common = {"db": db, "stream": self.stream, "stop": self._stop, "settings": self.settings, "stats": self.stats}
        tasks = [
            asyncio.create_task(event_publisher(redis_client=publish_client, faults=self.faults, **common)),
            asyncio.create_task(event_consumer(redis_client=consume_client, **common)),
        ]
        stopping = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task in done and task.exception() is not None:
                    self.stats.set(last_error=describe(task.exception()), last_error_at=datetime.now(UTC))
            self._stop.set()
            _, pending = await asyncio.wait(tasks, timeout=0.5)
            for task in pending:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.2)
        finally:
            stopping.cancel()
            for closing in (publish_client.aclose(), consume_client.aclose(), db.dispose()):
                try:
                    await asyncio.wait_for(closing, 0.2)
                except Exception:
                    pass


# --- what the page shows ------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxOverview:
    created: int
    pending: int
    published: int
    failed: int
    appended: int | None  # entries ever added to the stream (None: Redis did not answer)
    stream_length: int | None
    consumer_pending: int | None  # delivered to a consumer, not yet acknowledged
    consumer_lag: int | None  # in the stream, not yet delivered to the group
    delivered: int
    applied: int
    duplicates: int
    events: list[dict] = field(default_factory=list)
    read_model: list[dict] = field(default_factory=list)


def _event_row(event: DomainEvent) -> dict:
    return {
        "event": event.id[:8],
        "type": event.event_type,
        "user": event.aggregate_id[:8],
        "status": event.status,
        "attempts": event.attempts,
        "next attempt": event.next_attempt_at if event.status == "pending" else None,
        "last error": event.last_error or "",
        "created": event.created_at,
        "published": event.published_at,
    }


@dataclass(frozen=True)
class EventProgress:
    """Where one event is now: its outbox row, and the consumer's inbox row once applied."""

    status: str  # pending, published or failed
    created_at: datetime
    published_at: datetime | None
    applied_at: datetime | None
    attempts: int
    last_error: str | None

    @property
    def settled(self) -> bool:
        """Nothing more will happen without a change: applied, parked as failed, or retrying."""
        return self.applied_at is not None or self.status == "failed" or self.attempts > 0


async def event_progress(*, db: Database, event_id: str) -> EventProgress | None:
    """None if the event is gone (the lab data was reset)."""
    async with db.sessions() as session:
        event = await session.get(DomainEvent, event_id)
        if event is None:
            return None
        applied = await session.get(InboxEntry, event_id)
        return EventProgress(
            status=event.status, created_at=event.created_at, published_at=event.published_at,
            applied_at=applied.applied_at if applied else None, attempts=event.attempts,
            last_error=event.last_error,
        )


async def outbox_overview(*, db: Database, redis_client: aioredis.Redis, stream: str, limit: int = 12) -> OutboxOverview:
    """Counts and recent rows, read now from the database and the stream."""
    async with db.sessions() as session:
        counts = dict((await session.execute(select(DomainEvent.status, func.count()).group_by(DomainEvent.status))).all())
        recent = (await session.scalars(
            select(DomainEvent).order_by(DomainEvent.created_at.desc(), DomainEvent.id.desc()).limit(limit)
        )).all()
        inbox = await inbox_figures(session)
        summaries = await read_model(session, limit=limit)
    appended = length = pending = lag = None
    try:
        if await redis_client.exists(stream):
            info = await redis_client.xinfo_stream(stream)
            length, appended = info["length"], info.get("entries-added", info["length"])
            group = next((g for g in await redis_client.xinfo_groups(stream) if g["name"] == CONSUMER_GROUP), None)
            if group is not None:
                pending, lag = group["pending"], group.get("lag")
        else:
            appended = length = 0
    except (redis.RedisError, OSError):
        pass
    return OutboxOverview(
        created=sum(counts.values()), pending=counts.get("pending", 0), published=counts.get("published", 0),
        failed=counts.get("failed", 0), appended=appended, stream_length=length, consumer_pending=pending,
        consumer_lag=lag, delivered=inbox.delivered, applied=inbox.applied, duplicates=inbox.duplicates,
        events=[_event_row(e) for e in recent], read_model=summaries,
    )
