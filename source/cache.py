"""4. Cache-aside on Redis. A read asks Redis first; on a miss it reads the database and stores
the result as JSON with a TTL. A write commits first, then deletes the keys it made stale.
When Redis fails, reads are served from the database (the cache fails open) and caching
resumes by itself once Redis answers again.

Every read returns a Lookup (the value, hit/miss/error, and where the time went), and the
cache layer counts them in CacheStats: nothing here is guessed by the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Generic, Literal, TypeVar

import fakeredis
import redis
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import config
from .database import WRITE_TRANSACTION
from .errors import InvalidInput, clean_id
from .models import AIRScore, User
from .redis_setup import RedisTarget, make_redis_client
from .repositories import UserRepository
from .services import calculate_and_store_airscore, get_or_create_users

T = TypeVar("T")
Outcome = Literal["hit", "miss", "error"]
log = logging.getLogger(__name__)

# Part of every key: when the shape of the cached JSON changes, new code reads fresh keys
# instead of failing on old entries.
SCHEMA_VERSION = "v1"


# --- what is cached: plain values, stored as JSON ----------------------------------------


@dataclass(frozen=True)
class UserData:
    """A user as the cache holds it: plain fields, no ORM state that could lazy-load or flush."""

    id: str
    email: str
    name: str
    occupation_code: str | None
    education_level: str | None
    years_experience: float | None
    updated_at: str  # ISO 8601

    @classmethod
    def from_model(cls, user: User) -> UserData:
        return cls(
            user.id, user.email, user.name, user.occupation_code, user.education_level,
            user.years_experience, user.updated_at.isoformat(),
        )


@dataclass(frozen=True)
class ScoreData:
    id: str
    user_id: str
    occupation_code: str
    air_score: float
    ci_lower: float
    ci_upper: float
    parameter_version: str
    created_at: str  # ISO 8601

    @classmethod
    def from_model(cls, score: AIRScore) -> ScoreData:
        return cls(
            score.id, score.user_id, score.occupation_code, score.air_score, score.ci_lower,
            score.ci_upper, score.parameter_version, score.created_at.isoformat(),
        )


def encode(value: UserData | ScoreData | None) -> str:
    return json.dumps(None if value is None else asdict(value))  # JSON, never pickle


def decode(raw: str, kind: type[T]) -> T | None:
    data = json.loads(raw)
    return None if data is None else kind(**data)  # "null" is a cached "does not exist"


# --- what each read reports, and the counters --------------------------------------------


@dataclass(frozen=True)
class Lookup(Generic[T]):
    key: str
    value: T | None
    outcome: Outcome  # "error": Redis failed, so the value came from the database
    seconds: float  # the whole call
    cache_seconds: float  # spent on the Redis GET (0 when Redis was skipped)
    db_seconds: float  # spent loading from the database, or waiting for another caller's load
    loaded: bool  # this call ran the database query (a miss may instead share another's load)
    error: str | None = None


@dataclass(frozen=True)
class CacheCounts:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    db_loads: int = 0
    cache_seconds: float = 0.0  # sum of the GETs that Redis answered
    db_seconds: float = 0.0  # sum of the database loads
    total_seconds: float = 0.0  # sum of whole reads

    @property
    def requests(self) -> int:
        return self.hits + self.misses + self.errors

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def t_cache(self) -> float:
        answered = self.hits + self.misses
        return self.cache_seconds / answered if answered else 0.0

    @property
    def t_database(self) -> float:
        return self.db_seconds / self.db_loads if self.db_loads else 0.0

    @property
    def t_avg_formula(self) -> float:
        """T_avg = H * T_cache + (1 - H) * (T_cache + T_database), from the measured terms."""
        h = self.hit_ratio
        return h * self.t_cache + (1 - h) * (self.t_cache + self.t_database)

    @property
    def t_avg_measured(self) -> float:
        return self.total_seconds / self.requests if self.requests else 0.0

    def plus(self, lookup: Lookup) -> CacheCounts:
        return replace(
            self,
            hits=self.hits + (lookup.outcome == "hit"),
            misses=self.misses + (lookup.outcome == "miss"),
            errors=self.errors + (lookup.outcome == "error"),
            db_loads=self.db_loads + lookup.loaded,
            cache_seconds=self.cache_seconds + (lookup.cache_seconds if lookup.outcome != "error" else 0.0),
            db_seconds=self.db_seconds + (lookup.db_seconds if lookup.loaded else 0.0),
            total_seconds=self.total_seconds + lookup.seconds,
        )


class CacheStats:
    """Counters kept by the cache layer. Reads are counted on the event loop's thread and shown
    from the page's, so the counts are one immutable value swapped under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = CacheCounts()

    def record(self, lookup: Lookup) -> None:
        with self._lock:
            self._counts = self._counts.plus(lookup)

    def snapshot(self) -> CacheCounts:
        return self._counts

    def reset(self) -> None:
        with self._lock:
            self._counts = CacheCounts()


# --- single flight: one database load per key, however many callers miss at once --------


@dataclass
class _Flight:
    task: asyncio.Task
    stale: bool = False  # a write invalidated the key while this load ran: do not store it
    landed_at: float | None = None  # when the loading caller finished storing its value


class SingleFlight:
    """Concurrent misses on one key share one database load. This holds within one process
    (one event loop): each app process still loads once on its own."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}
        self._readers: Counter[str] = Counter()

    @contextmanager
    def reading(self, key: str) -> Iterator[None]:
        """Wraps a whole read of key: a load is kept until the last read that overlapped it ends."""
        self._readers[key] += 1
        try:
            yield
        finally:
            self._readers[key] -= 1
            if not self._readers[key]:
                del self._readers[key]
                self._flights.pop(key, None)

    async def join(self, key: str, load: Callable[[], Awaitable[T]], *, asked_at: float) -> tuple[T, _Flight | None]:
        """The loaded value, and the flight if this caller started it (it stores the value, then
        calls `land`). A reader that asked Redis before a load landed may still join it: its GET
        may have run just before that load's SET, and loading again is what single flight is for."""
        flight = self._flights.get(key)
        if flight is not None and (flight.landed_at is None or asked_at < flight.landed_at):
            return await asyncio.shield(flight.task), None
        flight = self._flights[key] = _Flight(asyncio.ensure_future(load()))
        try:
            # shield: if this caller is cancelled, the load still completes for the others.
            return await asyncio.shield(flight.task), flight
        except BaseException:
            if self._flights.get(key) is flight:
                del self._flights[key]  # nobody joins a failed load
            raise

    def land(self, flight: _Flight) -> None:
        flight.landed_at = time.perf_counter()

    def forget(self, key: str) -> None:
        """A write changed the data behind key: later readers must not join a load that may
        have read the old row, and that load must not store it."""
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.stale = True


# --- the cache ---------------------------------------------------------------------------


class CacheUnavailable(Exception):
    """Redis did not answer (or is skipped for a moment after failing). Reads fall back."""


@dataclass(frozen=True)
class Invalidation:
    keys: tuple[str, ...]
    deleted: int | None  # how many keys Redis removed; None if Redis did not answer
    error: str | None = None  # then the delete is queued and sent when Redis answers again


@dataclass(frozen=True)
class KeyState:
    key: str
    raw: str | None  # the JSON exactly as stored, None if the key does not exist
    ttl_seconds: int | None  # remaining time to live; None if the key does not exist


POOL_SIZE = 16  # connections the cache's client may open; more concurrent readers queue


def cache_client(target: RedisTarget, *, fake_server: fakeredis.FakeServer | None = None) -> aioredis.Redis:
    """The cache's client: 50 ms timeouts, no retries, and a bounded pool. Unbounded, a burst of
    100 concurrent reads opens 100 connections at once, and on a busy machine about half of
    those handshakes miss the 50 ms timeout; bounded, they queue for a free connection."""
    return make_redis_client(target, max_connections=POOL_SIZE, fake_server=fake_server)


class RedisCache:
    """Read-through over one Redis client. One per process: every session shares its client,
    its counters, its in-flight loads and its memory of a failed Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str | None = None,
        ttl_seconds: int = 300,
        missing_ttl_seconds: int = 30,
        jitter: float = 0.1,
        cooldown_seconds: float = 1.0,
        stats: CacheStats | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix if prefix is not None else config.redis_prefix()
        self.ttl_seconds = ttl_seconds
        self.missing_ttl_seconds = missing_ttl_seconds
        self.jitter = jitter
        self.cooldown_seconds = cooldown_seconds
        self.stats = stats or CacheStats()
        self.flights = SingleFlight()
        self._down_until = 0.0  # monotonic time until which Redis is skipped
        self._unsent_deletes: set[str] = set()

    def key(self, *parts: str) -> str:
        return ":".join((f"{self.prefix}cache", SCHEMA_VERSION, *parts))

    def ttl_for(self, value: object) -> int:
        # Jitter: keys cached together do not all expire in the same second and send their
        # readers to the database at once. "Does not exist" is kept for a shorter time.
        base = self.ttl_seconds if value is not None else self.missing_ttl_seconds
        return max(1, round(base * random.uniform(1 - self.jitter, 1 + self.jitter)))

    async def read_through(
        self,
        key: str,
        *,
        load: Callable[[], Awaitable[T | None]],
        kind: type[T],
        stats: CacheStats | None = None,
    ) -> Lookup[T]:
        with self.flights.reading(key):
            started = time.perf_counter()
            error = raw = None
            # 1. Ask Redis.
            try:
                raw = await self._call(lambda: self.client.get(key))
            except CacheUnavailable as exc:
                error = str(exc)
            cache_seconds = time.perf_counter() - started
            if raw is not None:
                try:
                    value = decode(raw, kind)
                except (ValueError, TypeError):  # unreadable entry: treat as a miss and overwrite it
                    log.warning("ignoring an unreadable cache entry at %s", key)
                else:
                    seconds = time.perf_counter() - started
                    return self._count(Lookup(key, value, "hit", seconds, cache_seconds, 0.0, False), stats)
            # 2. Miss, or Redis failed: read the database, once for all concurrent callers.
            load_started = time.perf_counter()
            value, flight = await self.flights.join(key, load, asked_at=started)
            db_seconds = time.perf_counter() - load_started
            # 3. The caller that loaded stores the value, unless Redis just failed or a write
            #    invalidated the key meanwhile (storing the old row would undo the invalidation).
            try:
                if flight is not None and not flight.stale and error is None:
                    await self._call(lambda: self.client.set(key, encode(value), ex=self.ttl_for(value)))
            except CacheUnavailable as exc:
                error = str(exc)
            finally:
                if flight is not None:
                    self.flights.land(flight)
            seconds = time.perf_counter() - started
            outcome = "error" if error else "miss"
            return self._count(
                Lookup(key, value, outcome, seconds, cache_seconds, db_seconds, flight is not None, error), stats
            )

    async def invalidate(self, *keys: str) -> Invalidation:
        for key in keys:
            self.flights.forget(key)
        try:
            deleted = await self._call(lambda: self.client.delete(*keys))
        except CacheUnavailable as exc:
            # Redis may come back with the old values: delete them before anything else is sent.
            self._unsent_deletes.update(keys)
            return Invalidation(keys, None, str(exc))
        return Invalidation(keys, deleted)

    async def inspect(self, key: str) -> KeyState:
        """The key as Redis holds it (raises a RedisError if Redis does not answer)."""
        async with self.client.pipeline(transaction=False) as pipe:
            raw, ttl = await pipe.get(key).ttl(key).execute()
        return KeyState(key, raw, ttl if ttl >= 0 else None)

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        """One Redis command, failing fast. The client's own timeouts bound a slow Redis; after a
        failure, Redis is skipped for cooldown_seconds so a dead server costs nothing per read,
        and then tried again: that is how caching resumes by itself."""
        remaining = self._down_until - time.monotonic()
        if remaining > 0:
            raise CacheUnavailable(f"skipped: Redis failed {self.cooldown_seconds - remaining:.1f} s ago")
        try:
            if self._unsent_deletes:
                pending = tuple(self._unsent_deletes)
                await self.client.delete(*pending)
                self._unsent_deletes.difference_update(pending)
            return await command()
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.cooldown_seconds
            raise CacheUnavailable(type(exc).__name__) from exc

    def _count(self, lookup: Lookup[T], stats: CacheStats | None) -> Lookup[T]:
        self.stats.record(lookup)
        if stats is not None:
            stats.record(lookup)
        return lookup


# --- the repository ----------------------------------------------------------------------


class CachedUserRepository:
    """Cache-aside over UserRepository. It takes the session factory rather than a session: a
    hit needs no database connection at all, and a miss opens a session for its one read.
    `stats`, if given, counts this caller's reads (the cache's own stats count everyone's)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        cache: RedisCache,
        stats: CacheStats | None = None,
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.stats = stats

    def user_key(self, user_id: str) -> str:
        return self.cache.key("user", user_id)

    def latest_score_key(self, user_id: str) -> str:
        return self.cache.key("user", user_id, "latest_score")

    async def get_by_id_cached(self, user_id: str) -> Lookup[UserData]:
        user_id = clean_id(user_id, label="user ID")  # bad input never reaches Redis or the DB

        async def load() -> UserData | None:
            async with self.sessions() as session:
                user = await UserRepository(session).get_by_id(user_id)
                return UserData.from_model(user) if user else None

        return await self.cache.read_through(self.user_key(user_id), load=load, kind=UserData, stats=self.stats)

    async def get_latest_score_cached(self, user_id: str) -> Lookup[ScoreData]:
        user_id = clean_id(user_id, label="user ID")

        async def load() -> ScoreData | None:
            async with self.sessions() as session:
                score = await UserRepository(session).get_latest_score(user_id)
                return ScoreData.from_model(score) if score else None

        return await self.cache.read_through(
            self.latest_score_key(user_id), load=load, kind=ScoreData, stats=self.stats
        )

    async def inspect_user_cache(self, user_id: str) -> tuple[KeyState, KeyState]:
        """Both keys as Redis holds them: raw JSON and remaining TTL."""
        user_id = clean_id(user_id, label="user ID")
        return await self.cache.inspect(self.user_key(user_id)), await self.cache.inspect(
            self.latest_score_key(user_id)
        )

    async def invalidate_user_cache(self, user_id: str) -> Invalidation:
        user_id = clean_id(user_id, label="user ID")
        return await self.cache.invalidate(self.user_key(user_id), self.latest_score_key(user_id))

    # Writes commit first and invalidate after: deleting before the commit would let a reader
    # put the old row back in between. Across processes a reader that loaded just before the
    # commit can still store the old row; the TTL bounds how long it lives.

    async def update_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        occupation_code: str | None = None,
        years_experience: float | None = None,
    ) -> tuple[UserData, Invalidation]:
        async with self.sessions.begin() as session:
            await session.connection(execution_options=WRITE_TRANSACTION)  # reads the user, then writes
            user = await UserRepository(session).update(
                user_id, name=name, occupation_code=occupation_code, years_experience=years_experience
            )
        return UserData.from_model(user), await self.cache.invalidate(self.user_key(user.id))

    async def add_score(self, user_id: str, *, occupation_code: str) -> tuple[ScoreData, Invalidation]:
        """A new AI-R score (with its outbox event, as in section 5); the cached latest score is
        deleted."""
        score, _event = await calculate_and_store_airscore(
            sessions=self.sessions, user_id=user_id, occupation_code=occupation_code
        )
        return ScoreData.from_model(score), await self.cache.invalidate(self.latest_score_key(score.user_id))


_demo_setup_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def ensure_latest_score(repo: CachedUserRepository, *, user_id: str) -> None:
    """Give the demo user a score if she has none, so the latest-score read has something to
    cache. Reads the database directly: this set-up is not a cached read. One check-and-add at a
    time per process, or learners arriving together would each add one."""
    lock = _demo_setup_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        async with repo.sessions() as session:
            users = UserRepository(session)
            user = await users.get_existing(user_id)
            has_score = await users.get_latest_score(user.id) is not None
        if not has_score:
            await repo.add_score(user.id, occupation_code=user.occupation_code or "15-2051")


# --- the traffic experiment ----------------------------------------------------------------

TRAFFIC_DOMAIN = "traffic.innovateai.com"
MAX_TRAFFIC_USERS = 200
MAX_TRAFFIC_READS = 5000


@dataclass(frozen=True)
class TrafficRead:
    number: int
    user_rank: int  # 1 is the most requested user
    outcome: Outcome
    ms: float


@dataclass(frozen=True)
class TrafficResult:
    reads: list[TrafficRead]
    counts: CacheCounts
    server: tuple[int, int] | None  # Redis INFO keyspace_hits and keyspace_misses deltas
    updated_at_read: int | None  # the read number after which the hottest user was updated
    old_years: float | None
    new_years: float | None
    first_read_after_update: Lookup[UserData] | None


async def traffic_users(sessions: async_sessionmaker[AsyncSession], *, count: int) -> list[str]:
    """The IDs of `count` shared traffic users, created once (safe when two sessions race)."""
    rows = [
        {"email": f"traffic-{n:03d}@{TRAFFIC_DOMAIN}", "name": f"Traffic User {n:03d}",
         "occupation_code": "15-1252", "years_experience": 1.0}
        for n in range(1, count + 1)
    ]
    async with sessions.begin() as session:
        users = await get_or_create_users(session, rows)
    return [user.id for user in users]


def zipf_weights(count: int, skew: float) -> list[float]:
    """Rank r is requested in proportion to 1 / r**skew: skew 0 is uniform, 1 is Zipf's law."""
    return [1 / rank**skew for rank in range(1, count + 1)]


async def keyspace_counts(client: aioredis.Redis) -> tuple[int, int] | None:
    """The server's own keyspace_hits and keyspace_misses, or None where there are none (the
    embedded fakeredis keeps no server statistics) or Redis does not answer."""
    try:
        info = await client.info("stats")
    except (redis.RedisError, OSError):
        return None
    return int(info["keyspace_hits"]), int(info["keyspace_misses"])


async def run_traffic(
    *,
    sessions: async_sessionmaker[AsyncSession],
    cache: RedisCache,
    users: int = 50,
    reads: int = 500,
    skew: float = 1.1,
    start_cold: bool = True,
    update_midway: bool = True,
    seed: int | None = None,
) -> TrafficResult:
    """`reads` sequential cached reads over `users` users chosen with a Zipf-like skew. With
    update_midway, the hottest user is updated (and invalidated) halfway through."""
    if not 1 <= users <= MAX_TRAFFIC_USERS or not 1 <= reads <= MAX_TRAFFIC_READS or not 0 <= skew <= 3:
        raise InvalidInput(
            f"Choose 1-{MAX_TRAFFIC_USERS} users, 1-{MAX_TRAFFIC_READS} reads and a skew from 0 to 3.",
            field="traffic",
        )
    user_ids = await traffic_users(sessions, count=users)
    stats = CacheStats()
    repo = CachedUserRepository(sessions=sessions, cache=cache, stats=stats)
    if start_cold:
        await cache.invalidate(*(repo.user_key(user_id) for user_id in user_ids))
    rng = random.Random(seed)
    ranks = rng.choices(range(1, users + 1), weights=zipf_weights(users, skew), k=reads)
    midway = reads // 2 if update_midway else None
    old_years = new_years = first_after = None
    server_before = await keyspace_counts(cache.client)
    log_reads = []
    for number, rank in enumerate(ranks, start=1):
        lookup = await repo.get_by_id_cached(user_ids[rank - 1])
        log_reads.append(TrafficRead(number, rank, lookup.outcome, lookup.seconds * 1000))
        if rank == 1 and new_years is not None and first_after is None:
            first_after = lookup  # the first read of the updated user: a miss with the new value
        if number == midway:
            async with sessions() as session:
                old_years = (await UserRepository(session).get_existing(user_ids[0])).years_experience
            new_years = (old_years or 0.0) % 40 + 1  # always a different value
            await repo.update_user(user_ids[0], years_experience=new_years)
    server_after = await keyspace_counts(cache.client)
    server = None
    if server_before is not None and server_after is not None:
        server = (server_after[0] - server_before[0], server_after[1] - server_before[1])
    return TrafficResult(log_reads, stats.snapshot(), server, midway, old_years, new_years, first_after)


# --- an unreachable Redis, to watch the cache fail open ----------------------------------


@dataclass
class UnreachableRedis:
    """A Redis address that fails the way real ones do: "refused" is a closed port (the
    server is down: the client learns at once); "hung" accepts connections and never answers
    (an overloaded server or a dropped network: only a timeout ends the wait)."""

    kind: Literal["refused", "hung"]
    target: RedisTarget
    server: asyncio.Server | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def unreachable_redis(kind: Literal["refused", "hung"]) -> UnreachableRedis:
    """Call on the event loop that will use it (the hung server runs on that loop)."""
    server = None
    if kind == "refused":
        with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    elif kind == "hung":
        server = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    url = f"redis://127.0.0.1:{port}/0"
    reason = "connection refused (closed port)" if kind == "refused" else "accepts, never answers"
    return UnreachableRedis(kind, RedisTarget("server", url, reason, url), server)


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(4096):
            pass  # read and ignore, like a server too busy to reply
    except (asyncio.CancelledError, ConnectionError):
        pass
    finally:
        writer.close()

