"""4. Five caching strategies behind one interface: `read(user_id)` and `write(user_id, name=...)`.

The spec calls the pattern "read-through"; the code calls it cache-aside. The difference is who
loads on a miss: in read-through the cache itself knows how to load (the application asks only
the cache), in cache-aside the application asks the cache, and on a miss loads from the database
and fills the cache itself. `RedisCache.read_through` takes the loader as an argument, so the
repository stays in charge: cache-aside, with the read-through call shape.

All five read through the same RedisCache (single flight, shared GETs, failing open); they
differ in what a write does to the cache, and refresh-ahead also in what a hit may start.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .cache import RedisCache, encode
from .cache_stats import Lookup
from .cached_repository import CachedUserRepository, UserData
from .database import WRITE_TRANSACTION
from .repositories import UserRepository


class CacheStrategy:
    """Cache-aside: a read asks Redis, and on a miss loads the row and stores it; a write
    commits, then invalidates (a tombstone, see RedisCache.invalidate). Stale reads: none in one
    process; across processes only a reader that got its answer before the invalidation."""

    name = "cache-aside"

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], cache: RedisCache) -> None:
        self.sessions = sessions
        self.cache = cache
        self.repo = CachedUserRepository(sessions=sessions, cache=cache)

    async def read(self, user_id: str) -> Lookup[UserData]:
        return await self.repo.get_by_id_cached(user_id)

    async def write(self, user_id: str, *, name: str) -> None:
        await self.repo.update_user(user_id, name=name)

    async def _commit(self, user_id: str, *, name: str) -> UserData:
        async with self.sessions.begin() as session:
            await session.connection(execution_options=WRITE_TRANSACTION)  # reads, then writes
            return UserData.from_model(await UserRepository(session).update(user_id, name=name))

    async def close(self) -> None:
        """Wait for anything the strategy left running (refresh-ahead's refreshes)."""


class TTLOnly(CacheStrategy):
    """No invalidation: a write only commits. A cached value stays until its TTL ends, so a read
    can be stale for up to the TTL after a write (300 s ±10% by default)."""

    name = "TTL only"

    async def write(self, user_id: str, *, name: str) -> None:
        await self._commit(user_id, name=name)


class WriteThrough(CacheStrategy):
    """The write commits, then puts the new row in the cache: the next read is a hit with the
    new value instead of a miss. A loader that read the old row before the commit cannot store
    it afterwards: its compare-and-set finds the new value, not what its GET saw."""

    name = "write-through"

    async def write(self, user_id: str, *, name: str) -> None:
        key = self.repo.user_key(user_id)
        async with self.cache.writing(key):  # reads of this key in this process wait until the put lands
            row = await self._commit(user_id, name=name)
            await self.cache.put(key, row)


class RefreshAhead(CacheStrategy):
    """Stale-while-revalidate: a hit on a value with less than `early` of its TTL left is
    served at once, and one background load per key refreshes it before it expires, so hot keys
    rarely miss. Writes invalidate, as in cache-aside. The cost: one PTTL per hit, and loads
    for keys that may not be read again."""

    name = "refresh-ahead"

    def __init__(self, *, sessions, cache: RedisCache, early: float = 0.2) -> None:
        super().__init__(sessions=sessions, cache=cache)
        self.early = early
        self._refreshing: dict[str, asyncio.Task] = {}

    async def read(self, user_id: str) -> Lookup[UserData]:
        lookup = await super().read(user_id)
        if lookup.outcome == "hit" and lookup.value is not None and lookup.key not in self._refreshing:
            try:
                left_ms = await self.cache.client.pttl(lookup.key)
            except Exception:  # noqa: BLE001 - a failed check only skips the refresh
                return lookup
            if 0 <= left_ms < self.early * self.cache.ttl_seconds * 1000:
                task = asyncio.ensure_future(self._refresh(lookup.key, lookup.value))
                self._refreshing[lookup.key] = task
                task.add_done_callback(lambda _t, key=lookup.key: self._refreshing.pop(key, None))
        return lookup

    async def _refresh(self, key: str, seen: UserData) -> None:
        async with self.sessions() as session:
            user = await UserRepository(session).get_by_id(seen.id)
        if user is not None:  # stores only if the key still holds what the hit read
            await self.cache.put(key, UserData.from_model(user), expect=encode(seen))

    async def write(self, user_id: str, *, name: str) -> None:
        await self.repo.update_user(user_id, name=name)

    async def close(self) -> None:
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)


class WriteBehind(CacheStrategy):
    """A write goes to Redis only: the new row replaces the cached one and the change is queued
    in a Redis list, in one MULTI; `flush()` applies the queue to the database later. Writes
    are fast and batched, but until the flush the database is behind, and a Redis that loses
    its memory first (a crash without persistence; with appendfsync everysec, up to about a
    second of writes) loses the queued writes: they were acknowledged and never reach the
    database. A miss while a write is queued reads the old row from the database."""

    name = "write-behind"

    def __init__(self, *, sessions, cache: RedisCache) -> None:
        super().__init__(sessions=sessions, cache=cache)
        self.queue_key = cache.key("write-behind", "queue")

    async def write(self, user_id: str, *, name: str) -> None:
        current = (await self.repo.get_by_id_cached(user_id)).value
        if current is None:
            raise LookupError(f"no user {user_id}")
        row = replace(current, name=name)
        async with self.cache.client.pipeline(transaction=True) as pipe:
            pipe.set(self.repo.user_key(user_id), encode(row), ex=self.cache.ttl_for(row))
            pipe.rpush(self.queue_key, json.dumps({"user_id": user_id, "name": name}))
            await pipe.execute()

    async def pending(self) -> int:
        """Writes acknowledged but not yet in the database: what a Redis crash now would lose."""
        return await self.cache.client.llen(self.queue_key)

    async def flush(self, *, limit: int = 1000) -> int:
        """Apply up to `limit` queued writes to the database in one transaction, in order. The
        entries are removed only after the commit, so a failed flush loses nothing (one flusher
        at a time: writes only append, the flush only trims what it applied)."""
        entries = await self.cache.client.lrange(self.queue_key, 0, limit - 1)
        if not entries:
            return 0
        async with self.sessions.begin() as session:
            await session.connection(execution_options=WRITE_TRANSACTION)
            users = UserRepository(session)
            for entry in map(json.loads, entries):
                await users.update(entry["user_id"], name=entry["name"])
        await self.cache.client.ltrim(self.queue_key, len(entries), -1)
        return len(entries)


STRATEGIES: tuple[type[CacheStrategy], ...] = (CacheStrategy, TTLOnly, WriteThrough, RefreshAhead, WriteBehind)

