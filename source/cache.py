"""4. Cache-aside on Redis, hardened: cache_aside.py's read and write, with an answer to each
failure that version meets, named where it is added:

- stampede: readers of a cold key each load it. Here they share one GET and one load.
- stale set: a reader that loaded the old row stores it after a write deleted the key; it stays
  until its TTL. Here a write leaves a tombstone, and a loader stores only if the key still holds
  what its own GET saw.
- hung Redis: the read waits for the client's timeout (redis-py's default: 5 s), then fails. Here
  each step is bounded by 50 ms and the read is served from the database (it fails open); Redis
  is then skipped for a moment, and caching resumes by itself.
- Redis down during a write: the invalidation is queued and sent before the next command.

Every read returns a Lookup (hit, miss or error, and where the time went), counted in CacheStats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

import fakeredis
import redis
import redis.asyncio as aioredis

from . import config
from .cache_stats import CacheStats, Lookup
from .redis_pool import PoolExhausted
from .redis_setup import RedisTarget, make_redis_client
from .single_flight import SingleFlight

T = TypeVar("T")
Write = Literal["user", "score"]  # what a write changed: a user's row, or their scores
log = logging.getLogger(__name__)

# Part of every key: when the shape of the cached JSON changes, new code reads fresh keys
# instead of failing on old entries.
SCHEMA_VERSION = "v1"


# --- what is cached: plain values, stored as JSON ----------------------------------------


def encode(value: object) -> str:
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
    removed: int | None  # how many of the keys held a cached value; None if Redis did not answer
    error: str | None = None  # then the invalidation is queued (see RedisCache.invalidate)


POOL_SIZE = 16  # connections the cache's client may open; more concurrent commands queue

# A write replaces each stale value with a tombstone (this prefix and a unique token) instead of
# deleting it. A loader stores its row only if the key still holds exactly what its GET saw, so
# a loader that read the old row before the write committed finds the tombstone and stores
# nothing, in whichever process it runs.
TOMBSTONE = "~invalidated:"
TOMBSTONE_SECONDS = 30
STORE_DEADLINE_SECONDS = 10.0  # a loader later than this does not store (see _store_if_unchanged)
_MISS = object()  # what _cached returns when Redis holds no usable value ("null" is a value: none exists)

_STORE_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def cache_client(target: RedisTarget, *, fake_server: fakeredis.FakeServer | None = None) -> aioredis.Redis:
    """The cache's client: no retries; connect and each reply bounded by 50 ms; at most
    POOL_SIZE connections, a command that finds them all busy waiting at most 50 ms for one.
    Unbounded, a burst of 100 concurrent reads opens 100 connections at once, and on a busy
    machine about half of those handshakes miss the 50 ms timeout."""
    return make_redis_client(target, max_connections=POOL_SIZE, fake_server=fake_server)


class RedisCache:
    """Read-through over one Redis client. One per process: every session shares its client,
    its counters, its in-flight GETs and loads, and its memory of a failed Redis."""

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
        self._gets: dict[str, asyncio.Future] = {}  # GETs in flight, shared by concurrent readers
        self._store = client.register_script(_STORE_IF_UNCHANGED)
        self._down_until = 0.0  # monotonic time until which Redis is skipped
        self._unsent: set[str] = set()  # keys whose invalidation Redis has not received yet
        self._writing: dict[str, tuple[int, asyncio.Event]] = {}  # keys being written here, now
        self._decoded: dict[str, object] = {}  # raw JSON -> its decoded value (see _decode)

    def key(self, *parts: str) -> str:
        return ":".join((f"{self.prefix}cache", SCHEMA_VERSION, *parts))

    def ttl_for(self, value: object) -> int:
        # Jitter: keys cached together do not all expire in the same second and send their
        # readers to the database at once. "Does not exist" is kept for a shorter time.
        base = self.ttl_seconds if value is not None else self.missing_ttl_seconds
        return max(1, round(base * random.uniform(1 - self.jitter, 1 + self.jitter)))

    @property
    def unsent_invalidations(self) -> int:
        """Keys whose invalidation this process still owes Redis (sent before its next command)."""
        return len(self._unsent)

    async def read_through(
        self, key: str, *, load: Callable[[], Awaitable[T | None]], kind: type[T], stats: CacheStats | None = None,
    ) -> Lookup[T]:
        """CacheAside.get, hardened (section 4 shows the diff): each addition names the failure it
        answers, and the read reports what happened in a Lookup."""
        await self._writes_landed(key)  # stale read: a write of this key in this process lands first
        with self.flights.reading(key):
            started = time.perf_counter()
            cached, asked_at, error = await self._get(key)  # hung Redis: fails open; stampede: one GET
            cache_seconds = time.perf_counter() - started
            value = self._cached(key, cached, kind)  # stale set: a write's tombstone reads as a miss
            if value is not _MISS:
                lookup = Lookup(key, value, "hit", time.perf_counter() - started, cache_seconds, 0.0, False)
                return self._count(lookup, stats)
            load_started = time.perf_counter()
            value, flight = await self.flights.join(key, load, asked_at=asked_at)  # stampede: one load
            db_seconds = time.perf_counter() - load_started
            stored, not_stored, error = await self._store_if_unchanged(  # stale set: not over a write
                key, value, seen=cached, flight=flight, error=error, asked_at=asked_at)
            lookup = Lookup(key, value, "error" if error else "miss", time.perf_counter() - started,
                            cache_seconds, db_seconds, flight is not None, error, stored, not_stored)
            return self._count(lookup, stats)

    async def _writes_landed(self, key: str) -> None:
        """Stale read in this process: between a write's commit and its invalidation Redis still
        holds the old value, so a read of a key being written here waits for it (see `writing`)."""
        if self._writing and key in self._writing:
            await self._writing[key][1].wait()

    def _cached(self, key: str, raw: str | None, kind: type[T]) -> T | None | object:
        """The value Redis holds, or _MISS: no entry, a write's tombstone, or an entry this code
        cannot read (then it is treated as a miss, and the store overwrites it)."""
        if raw is None or raw.startswith(TOMBSTONE):
            return _MISS
        try:
            value = self._decoded.get(raw)
            return value if value is not None and type(value) is kind else self._decode(raw, kind)
        except (ValueError, TypeError):
            log.warning("ignoring an unreadable cache entry at %s", key)
            return _MISS

    async def _store_if_unchanged(
        self, key: str, value: object, *, seen: str | None, flight, error: str | None, asked_at: float,
    ) -> tuple[bool, str | None, str | None]:
        """Stale set: store the loaded value only if the key still holds what this read's GET saw.
        A write since then left a tombstone there, and storing the row read before it would undo
        the invalidation, in whichever process the reader runs. Only the reader that loaded
        stores; not after a write here marked its load stale, nor past the deadline (the
        tombstone it compares with could have expired by then). Returns (stored, why not, error)."""
        try:
            if flight is None:
                return False, None, error  # shared another reader's load: that reader stores
            if error is not None:
                return False, "Redis did not answer", error
            if flight.stale:
                return False, "a write in this process invalidated the key while it loaded", None
            if time.perf_counter() - asked_at > STORE_DEADLINE_SECONDS:
                return False, f"the read took longer than {STORE_DEADLINE_SECONDS:g} s", None
            args = (seen or "", encode(value), self.ttl_for(value))
            if await self._call(lambda: self._store(keys=(key,), args=args)):
                return True, None, None
            return False, "the key changed after this read's GET (a write, or another reader stored first)", None
        except CacheUnavailable as exc:
            return False, str(exc), str(exc)
        finally:
            if flight is not None:
                self.flights.land(flight)

    @asynccontextmanager
    async def writing(self, *keys: str) -> AsyncIterator[None]:
        """Wrap a write's commit and its invalidation (or write-through). Until both are done,
        reads of these keys in this process wait, then read as usual: without this, a read that
        starts after the commit could still be served the old value from Redis in the moment
        before the invalidation lands. The wait is part of the read's measured time."""
        for key in keys:
            count, done = self._writing.get(key, (0, None))
            self._writing[key] = (count + 1, done or asyncio.Event())
            self._gets.pop(key, None)
        try:
            yield
        finally:
            for key in keys:
                count, done = self._writing[key]
                if count > 1:
                    self._writing[key] = (count - 1, done)
                else:
                    del self._writing[key]
                    done.set()

    def _decode(self, raw: str, kind: type[T]) -> T | None:
        """Decode a cached value, remembering the last 1024 decoded: a hot key's JSON is parsed
        once, not on every hit (the values are frozen dataclasses, safe to share)."""
        value = decode(raw, kind)
        if len(self._decoded) >= 1024:
            self._decoded.clear()
        self._decoded[raw] = value
        return value

    async def _get(self, key: str) -> tuple[str | None, float, str | None]:
        """GET key, failing open: the answer, when the GET was sent, and why Redis gave none (the
        read is then served from the database). Stampede: a reader joins a GET of the same key
        already in flight, so 100 concurrent readers send one command and take one connection."""
        pending = self._gets.get(key)
        if pending is not None:
            raw, error, asked_at = await asyncio.shield(pending)
        else:
            pending = self._gets[key] = asyncio.get_running_loop().create_future()
            raw = error = None
            asked_at = time.perf_counter()
            try:
                if self._down_until or self._unsent:
                    raw = await self._call(lambda: self.client.get(key))
                else:  # the common case, without _call's checks: Redis answered last time
                    try:
                        raw = await self.client.get(key)
                    except (redis.RedisError, OSError) as exc:
                        raise self._failed(exc) from exc
            except CacheUnavailable as exc:
                error = str(exc)
            except BaseException:
                error = "the reader that sent the GET was cancelled"
                raise
            finally:
                pending.set_result((raw, error, asked_at))
                if self._gets.get(key) is pending:
                    del self._gets[key]
        return raw, asked_at, error

    async def invalidate(self, *keys: str) -> Invalidation:
        """Stale set: replace the keys' values with tombstones (see TOMBSTONE) instead of deleting
        them. Redis down during a write: the keys are queued here and sent before the next command,
        so that Redis cannot come back with the old values; a process that stops first loses the
        queue, and the old values then live until their TTL."""
        for key in keys:
            self.flights.forget(key)  # loads in flight may hold the old row: do not store it
            self._gets.pop(key, None)  # later readers send a GET of their own
        try:
            removed = await self._call(lambda: self._bury(keys))
        except CacheUnavailable as exc:
            self._unsent.update(keys)
            return Invalidation(keys, None, str(exc))
        return Invalidation(keys, removed)

    async def put(self, key: str, value: object, *, expect: str | None = None) -> bool:
        """Store value under key. Without `expect` (a write-through after its commit) it replaces
        whatever is there, and loads in flight must not store over it; if Redis does not answer,
        the key is queued for invalidation like a write's. With `expect` (a background refresh)
        it stores only if the key still holds exactly `expect`. True if it stored."""
        encoded, ttl = encode(value), self.ttl_for(value)
        if expect is not None:
            try:
                return bool(await self._call(lambda: self._store(keys=(key,), args=(expect, encoded, ttl))))
            except CacheUnavailable:
                return False
        self.flights.forget(key)
        self._gets.pop(key, None)
        try:
            await self._call(lambda: self.client.set(key, encoded, ex=ttl))
        except CacheUnavailable:
            self._unsent.add(key)
            return False
        return True

    async def _bury(self, keys: Iterable[str]) -> int:
        token = f"{TOMBSTONE}{uuid.uuid4().hex}"
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, token, ex=TOMBSTONE_SECONDS, get=True)
            old = await pipe.execute()
        return sum(raw is not None and not raw.startswith(TOMBSTONE) for raw in old)

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        """One Redis command, failing fast. The client's own timeouts bound a slow Redis; after a
        failure, Redis is skipped for cooldown_seconds so a dead server costs nothing per read,
        and then tried again: that is how caching resumes by itself."""
        if self._down_until:
            remaining = self._down_until - time.monotonic()
            if remaining > 0:
                raise CacheUnavailable(f"skipped: Redis failed {self.cooldown_seconds - remaining:.1f} s ago")
        try:
            if self._unsent:
                pending = tuple(self._unsent)
                await self._bury(pending)
                self._unsent.difference_update(pending)
            result = await command()
            self._down_until = 0.0  # Redis answered: the fast path is open again
            return result
        except (redis.RedisError, OSError) as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> CacheUnavailable:
        """Skip Redis for cooldown_seconds, unless it was not asked: this process had every
        pooled connection busy (its own load), and Redis itself may be fine."""
        if not isinstance(exc, PoolExhausted):
            self._down_until = time.monotonic() + self.cooldown_seconds
        return CacheUnavailable(type(exc).__name__)

    def _count(self, lookup: Lookup[T], stats: CacheStats | None) -> Lookup[T]:
        self.stats.record(lookup)
        if stats is not None:
            stats.record(lookup)
        return lookup

