"""2. Connection pooling, measured, and atomicity shown.

The pooling experiment: N clients send their requests at the same time, first through a
pooled engine, then through a NullPool engine (a new connection per request). Each request
acquires a connection, sends one query and holds the connection for the hold time (the rest
of its work), then gives it back. Both are throwaway engines on the app's database, set up
like the app's engine except for the pool, and disposed afterwards.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import event, exc, func, select, text
from sqlalchemy.pool import NullPool

from runtime.turns import POOL_EXPERIMENT, turn
from source.database import Database
from source.errors import InvalidInput, LabError
from source.models import AIRScore, User
from source.services import create_sample_airscore

from .progress import Report, silent
from .recorder import StatementLog, record

# A whole room may share one PostgreSQL server (max_connections is often 100).
MAX_CONCURRENCY = 100
MAX_POOL_SIZE = 30
MAX_OVERFLOW = 30
MAX_REQUESTS_PER_CLIENT = 10
MAX_POOL_TIMEOUT_S = 5.0
MAX_HOLD_MS = 200
# Connections the NullPool side leaves free on the server for everyone else.
SERVER_RESERVE = 10

_EXPERIMENT_LOCK = threading.Lock()  # one experiment per process at a time (and per server: turns.py)


class ExperimentBusy(LabError):
    pass


@dataclass(frozen=True)
class PoolSettings:
    """The page's defaults give every client a connection (pool_size + max_overflow = clients): the
    pool then wins on both figures. Raise the clients past that and requests queue for the pool."""

    concurrency: int = 20
    requests_per_client: int = 5
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout: float = 2.0
    hold_ms: float = 10.0

    def checked(self) -> PoolSettings:
        """These settings, or InvalidInput naming the first one out of range."""
        _check_int(self.concurrency, "concurrency", "Concurrent requests", 1, MAX_CONCURRENCY)
        _check_int(
            self.requests_per_client, "requests_per_client", "Requests per client", 1, MAX_REQUESTS_PER_CLIENT
        )
        _check_int(self.pool_size, "pool_size", "pool_size", 1, MAX_POOL_SIZE)
        _check_int(self.max_overflow, "max_overflow", "max_overflow", 0, MAX_OVERFLOW)
        _check_number(self.pool_timeout, "pool_timeout", "pool_timeout (s)", 0.01, MAX_POOL_TIMEOUT_S)
        _check_number(self.hold_ms, "hold_ms", "Hold time (ms)", 0, MAX_HOLD_MS)
        return self


def _check_int(value: int, field: str, label: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(f"{label} must be a whole number from {low} to {high}.", field=field)


def _check_number(value: float, field: str, label: str, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidInput(f"{label} must be between {low:g} and {high:g}.", field=field)


@dataclass
class RunResult:
    """One engine's burst, as measured."""

    engine: str
    requests: int
    parallel_limit: int  # how many requests could run at once (NullPool: the server's headroom)
    total_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)  # time to acquire a connection, per request
    queued: int = 0  # requests that found every connection it may use busy, and waited for one
    timeouts: int = 0  # sqlalchemy.exc.TimeoutError: no connection within pool_timeout
    failures: int = 0  # anything else, e.g. the server refusing a connection
    peak_checked_out: int = 0
    connections_opened: int = 0

    @property
    def completed(self) -> int:
        return len(self.waits)

    @property
    def throughput(self) -> float:
        """Θ = completed requests / total time, in requests per second."""
        return self.completed / self.total_seconds if self.total_seconds else 0.0

    @property
    def wait_p50_ms(self) -> float:
        return statistics.median(self.waits) * 1000 if self.waits else 0.0

    @property
    def wait_max_ms(self) -> float:
        return max(self.waits) * 1000 if self.waits else 0.0


@dataclass(frozen=True)
class ExperimentResult:
    settings: PoolSettings
    backend: str
    pooled: RunResult
    null_pool: RunResult


async def run_pool_experiment(*, db: Database, settings: PoolSettings, report: Report = silent) -> ExperimentResult:
    """Run the load against a pooled engine, then against a NullPool engine, on db's database.
    Raises InvalidInput for settings out of range, ExperimentBusy if one is running."""
    settings = settings.checked()
    busy = ExperimentBusy("Another pooling experiment is running on this database (perhaps another learner's). "
                          "Try again in a few seconds.")
    if not _EXPERIMENT_LOCK.acquire(blocking=False):
        raise busy
    try:
        # The in-process lock above; this one for the other app processes on the same server.
        async with turn(db.sessions, POOL_EXPERIMENT, wait=False) as ours:
            if not ours:
                raise busy
            headroom = await _server_headroom(db)
            capacity = settings.pool_size + settings.max_overflow
            if capacity > headroom:
                raise InvalidInput(
                    f"The database server has {headroom} connections to spare now (keeping {SERVER_RESERVE} "
                    f"for everyone else); pool_size + max_overflow = {capacity} would not fit.",
                    field="max_overflow",
                )
            pooled_db = Database(
                db.url, pool_size=settings.pool_size, max_overflow=settings.max_overflow,
                pool_timeout=settings.pool_timeout,
            )
            pooled = await _measure(
                pooled_db,
                f"pooled (pool_size={settings.pool_size}, max_overflow={settings.max_overflow})",
                settings, settings.concurrency, capacity,
                lambda done, total: report(f"Pooled engine: {done} of {total} requests", 0.5 * done / total),
            )
            null_pool = await _measure(
                Database(db.url, null_pool=True), "NullPool (a new connection per request)", settings,
                min(settings.concurrency, headroom), min(settings.concurrency, headroom),
                lambda done, total: report(f"NullPool engine: {done} of {total} requests", 0.5 + 0.5 * done / total),
            )
            return ExperimentResult(settings, pooled_db.backend, pooled, null_pool)
    finally:
        _EXPERIMENT_LOCK.release()


async def _server_headroom(db: Database) -> int:
    """How many more connections the server accepts, less a reserve for everyone else."""
    if db.backend != "postgresql":
        return MAX_CONCURRENCY  # a SQLite file has no connection limit
    async with db.engine.connect() as conn:
        free = await conn.scalar(text(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity)"
        ))
    return max(1, int(free) - SERVER_RESERVE)


async def _measure(db: Database, name: str, settings: PoolSettings, parallel_limit: int, connections: int,
                   progress: Callable[[int, int], None]) -> RunResult:
    """`connections`: how many it may hold at once (a request that finds them all busy queues)."""
    result = RunResult(name, settings.concurrency * settings.requests_per_client, parallel_limit)
    checked_out = in_flight = 0
    step = max(1, result.requests // 10)

    def on_connect(*_args) -> None:
        result.connections_opened += 1

    def on_checkout(*_args) -> None:
        nonlocal checked_out
        checked_out += 1
        result.peak_checked_out = max(result.peak_checked_out, checked_out)

    def on_checkin(*_args) -> None:
        nonlocal checked_out
        checked_out -= 1

    pool = db.engine.sync_engine.pool
    event.listen(pool, "connect", on_connect)
    event.listen(pool, "checkout", on_checkout)
    event.listen(pool, "checkin", on_checkin)
    gate = asyncio.Semaphore(parallel_limit)

    async def client() -> None:
        for _ in range(settings.requests_per_client):
            await one_request()

    async def one_request() -> None:
        nonlocal in_flight
        started = time.perf_counter()  # waiting at the gate is waiting too
        result.queued += in_flight >= connections  # every connection it may use is taken by another request
        in_flight += 1
        async with gate:
            try:
                async with db.engine.connect() as conn:
                    wait = time.perf_counter() - started
                    await conn.execute(text("SELECT 1"))
                    await asyncio.sleep(settings.hold_ms / 1000)  # the request's other work
                result.waits.append(wait)
            except exc.TimeoutError:
                result.timeouts += 1
            except (exc.DBAPIError, OSError):
                result.failures += 1
        in_flight -= 1
        finished = result.completed + result.timeouts + result.failures
        if finished % step == 0 or finished == result.requests:
            progress(finished, result.requests)

    try:
        progress(0, result.requests)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(settings.concurrency)))
        result.total_seconds = time.perf_counter() - started
    finally:
        await db.dispose()
    return result


# --- atomicity: a transaction that fails part-way leaves nothing behind -------------------


@dataclass(frozen=True)
class AtomicityResult:
    users_before: int
    scores_before: int
    users_during: int  # read inside the transaction, before the failing write
    scores_during: int
    users_after: int
    scores_after: int
    user_id: str  # the user the failed transaction inserted first
    error: str  # what the database refused
    log: StatementLog  # what the failed transaction sent
    rows_left_behind: int  # rows with this transaction's user ID after the rollback


async def demonstrate_atomicity(db: Database) -> AtomicityResult:
    """Insert a user and a score, then a second user with the same email: the database refuses
    the third write, the whole transaction rolls back, and neither earlier row remains."""
    users_before, scores_before = await _counts(db)
    email = f"atomicity-{uuid.uuid4().hex[:12]}@example.com"
    user_id, error, users_during, scores_during = "", "", 0, 0
    with record(db) as log:
        try:
            async with db.sessions.begin() as session:  # commit on success, roll back on error
                user = User(email=email, name="Atomicity Demo")
                session.add(user)
                await session.flush()
                user_id = user.id
                await create_sample_airscore(session=session, user_id=user.id)
                users_during, scores_during = await _counts_in(session)
                session.add(User(email=email, name="Same Email"))
                await session.flush()  # the unique index on users.email refuses this row
        except exc.IntegrityError as refused:
            error = str(refused.orig).strip().splitlines()[0]
    if not error:
        raise RuntimeError("the duplicate insert was accepted: is users.email unique?")
    users_after, scores_after = await _counts(db)
    async with db.sessions() as session:
        left = await session.scalar(select(func.count()).select_from(User).where(User.id == user_id))
        left += await session.scalar(
            select(func.count()).select_from(AIRScore).where(AIRScore.user_id == user_id)
        )
    return AtomicityResult(
        users_before, scores_before, users_during, scores_during, users_after, scores_after, user_id, error, log, left
    )


async def _counts(db: Database) -> tuple[int, int]:
    async with db.sessions() as session:
        return await _counts_in(session)


async def _counts_in(session) -> tuple[int, int]:
    users = await session.scalar(select(func.count()).select_from(User))
    scores = await session.scalar(select(func.count()).select_from(AIRScore))
    return users, scores


@dataclass(frozen=True)
class PoolStatus:
    size: int
    checked_out: int
    overflow: int
    checked_in: int
    max_overflow: int

    @property
    def maximum(self) -> int:
        return self.size + self.max_overflow

    @property
    def available(self) -> int:
        return self.maximum - self.checked_out


def pool_status(db: Database) -> PoolStatus:
    pool = db.engine.pool
    if isinstance(pool, NullPool):
        return PoolStatus(0, 0, 0, 0, 0)
    return PoolStatus(
        size=pool.size(),
        checked_out=pool.checkedout(),
        overflow=max(pool.overflow(), 0),
        checked_in=pool.checkedin(),
        max_overflow=db.max_overflow,
    )


def pool_settings(db: Database) -> list[dict[str, object]]:
    """The settings of the app's pool as the engine holds them now, each with what it does."""
    pool = db.engine.pool
    if isinstance(pool, NullPool):
        return [{"setting": "poolclass", "value": "NullPool", "what it does": "a new connection per checkout"}]
    return [
        {"setting": "pool_size", "value": pool.size(),
         "what it does": "the most idle connections kept between requests (each opened only when a request needs it)"},
        {"setting": "max_overflow", "value": pool._max_overflow,
         "what it does": "more connections opened under load, closed when they return to a full pool"},
        {"setting": "pool_timeout", "value": f"{pool._timeout:g} s",
         "what it does": "how long a request waits for a free connection before TimeoutError"},
        {"setting": "pool_pre_ping", "value": pool._pre_ping,
         "what it does": "test a connection as it is handed out (a new one is not tested); replace it if dead"},
        {"setting": "pool_recycle", "value": f"{pool._recycle:g} s",
         "what it does": "replace a connection older than this when it is handed out"},
    ]
