"""4. Cache-aside on Redis. A read asks Redis first; on a miss it reads the database and stores
the result as JSON with a TTL. A write commits first, then deletes the keys it made stale.
When Redis fails, reads are served from the database (the cache fails open) and caching
resumes by itself once Redis answers again.

Every read returns a Lookup (the value, hit/miss/error, and where the time went), and the
cache layer counts them in CacheStats: nothing here is guessed by the caller.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

import fakeredis
import redis
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import config
from .cache_stats import CacheStats, Lookup
from .errors import clean_id
from .models import AIRScore, User
from .redis_setup import RedisTarget, make_redis_client
from .repositories import UserRepository
from .services import calculate_and_store_airscore
from .single_flight import SingleFlight

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
