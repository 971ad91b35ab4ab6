"""4. The minimal cache-aside (source/cache_aside.py) run on the learner's own key and a throwaway
row, then broken three ways (a stampede, a stale set across processes, a hung Redis), and the
same failures run on the hardened cache (source/cache.py). The faults are made from outside: a
session factory whose load pauses, a Redis address that never answers. Each run removes its row
and keys when it ends.

Loads are counted at the database driver (the statement recorder: one SELECT per load) and Redis
commands as the client sends them; nothing is inferred from the code.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import fakeredis
import redis
import redis.asyncio as aioredis
from sqlalchemy import delete

from labbench.cache_comparison import CommandCounter
from labbench.progress import Report, silent
from labbench.recorder import record
from labbench.unreachable_redis import unreachable_redis
from source import redis_setup
from source.cache import RedisCache, cache_client
from source.cache_aside import CacheAside
from source.cached_repository import CachedUserRepository
from source.database import Database
from source.models import User
from source.redis_setup import RedisTarget

Version = Literal["minimal", "hardened"]
THROWAWAY_DOMAIN = "throwaway.cache.example"
READERS = 100  # the stampede's concurrent readers
HUNG_LIMIT_SECONDS = 15.0  # the experiment stops waiting after this (redis-py's default gives up at 5 s)


def plain_client(target: RedisTarget, *, fake_server: fakeredis.FakeServer | None = None) -> aioredis.Redis:
    """The minimal version's client: redis-py's defaults (no bound on its pool; 5 s timeouts), or
    the embedded stand-in."""
    if target.kind == "embedded":
        return fakeredis.FakeAsyncRedis(server=fake_server or redis_setup.FAKE_SERVER, decode_responses=True)
    return aioredis.Redis.from_url(target._real_url, decode_responses=True)


def new_tag() -> str:
    """A tag for one learner's keys and rows: a room shares one Redis and one database."""
    return uuid.uuid4().hex[:10]


def learner_prefix(prefix: str, tag: str) -> str:
    """The learner's own keys: under the lab's prefix (a reset removes them), and their tag."""
    if not tag.isalnum():
        raise ValueError("the tag must be letters and digits")
    return f"{prefix}learner:{tag}:"


@asynccontextmanager
async def throwaway_user(db: Database, tag: str) -> AsyncIterator[str]:
    """A user row of this run's own, named "… v1", deleted when the run ends."""
    async with db.sessions.begin() as session:
        user = User(email=f"{tag}-{uuid.uuid4().hex[:8]}@{THROWAWAY_DOMAIN}", name="Throwaway user v1")
        session.add(user)
    try:
        yield user.id
    finally:
        async with db.sessions.begin() as session:
            await session.execute(delete(User).where(User.id == user.id))


@asynccontextmanager
async def cleaned(client: aioredis.Redis, prefix: str) -> AsyncIterator[aioredis.Redis]:
    """The client, closed at the end, after deleting every key under prefix."""
    try:
        yield client
    finally:
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        except (redis.RedisError, OSError):
            pass  # the run's keys expire with their TTL
        await client.aclose()


# --- the minimal version, run -------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    call: str
    statements: int  # database statements the call sent: 1 is a load, 0 a hit
    ms: float
    name: str | None  # the user's name it returned (None for the write)


async def run_minimal(db: Database, *, target: RedisTarget, prefix: str, tag: str, report: Report = silent,
                      fake_server: fakeredis.FakeServer | None = None) -> list[Step]:
    """Read the throwaway user twice, rename it, read it again: a miss, a hit, a write, a miss."""
    mine = learner_prefix(prefix, tag) + "minimal:"
    steps: list[Step] = []
    async with cleaned(plain_client(target, fake_server=fake_server), mine) as client, throwaway_user(db, tag) as user_id:
        cache = CacheAside(client, db.sessions, prefix=mine)
        calls = (("get_user", lambda: cache.get_user(user_id)), ("get_user", lambda: cache.get_user(user_id)),
                 ("rename_user → v2", lambda: cache.rename_user(user_id, "Throwaway user v2")),
                 ("get_user", lambda: cache.get_user(user_id)))
        for number, (call, run) in enumerate(calls):
            report(f"{call} ({number + 1} of {len(calls)})", number / len(calls))
            with record(db) as log:
                started = time.perf_counter()
                value = await run()
                ms = (time.perf_counter() - started) * 1000
            steps.append(Step(call, log.count, ms, value["name"] if value else None))
    return steps


# --- the stampede -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stampede:
    version: Version
    readers: int
    loads: int  # SELECTs the database received
    commands: dict[str, int]  # Redis commands the client sent, by name
    seconds: float
    values_agree: bool  # every reader got the same row


async def stampede(db: Database, *, version: Version, target: RedisTarget, prefix: str, tag: str,
                   readers: int = READERS, report: Report = silent,
                   fake_server: fakeredis.FakeServer | None = None) -> Stampede:
    """`readers` concurrent reads of one cold key."""
    mine = learner_prefix(prefix, tag) + f"stampede-{version}:"
    client = plain_client(target, fake_server=fake_server) if version == "minimal" else cache_client(
        target, fake_server=fake_server)
    async with cleaned(client, mine), throwaway_user(db, tag) as user_id:
        counter = CommandCounter(client)
        if version == "minimal":
            read = CacheAside(client, db.sessions, prefix=mine).get_user
        else:
            repo = CachedUserRepository(sessions=db.sessions, cache=RedisCache(client, prefix=mine))

            async def read(user_id: str):
                return (await repo.get_by_id_cached(user_id)).value

        report(f"{readers} readers ask for one cold key at once", 0.2)
        with record(db) as log:
            started = time.perf_counter()
            values = await asyncio.gather(*(read(user_id) for _ in range(readers)))
            seconds = time.perf_counter() - started
        commands = dict(counter.sent)
    same = all(value == values[0] for value in values)
    return Stampede(version, readers, log.count, commands, seconds, same)


# --- the stale set, across processes -------------------------------------------------------------


class PausedLoad:
    """A session factory whose first session, once closed, waits for `go`: the reader has read
    the row and not yet stored it (a GC pause, a slow network). Made from outside the cache."""

    def __init__(self, db: Database) -> None:
        self.db, self.loaded, self.go, self._paused = db, asyncio.Event(), asyncio.Event(), False

    @asynccontextmanager
    async def __call__(self):
        async with self.db.sessions() as session:
            yield session
        if not self._paused:  # the session is closed first: nothing holds a lock while it waits
            self._paused = True
            self.loaded.set()
            await self.go.wait()


@dataclass(frozen=True)
class Race:
    version: Version
    reader_got: str  # the name the reader loaded before the write
    database_has: str  # the name after the write
    next_read: str  # what a read after the race returned
    next_read_loaded: bool  # it went to the database (a miss), not Redis
    ttl_seconds: int | None  # what is left of the key's TTL after the race (None: no key)
    reader_stored: bool | None  # the hardened reader says whether it stored (the minimal one cannot)


async def stale_set(db: Database, *, version: Version, target: RedisTarget, prefix: str, tag: str,
                    report: Report = silent, fake_server: fakeredis.FakeServer | None = None) -> Race:
    """A reader misses and loads v1; a writer elsewhere commits v2 and invalidates; then the reader
    stores what it loaded. The reader and the writer have a client and a cache object each: all
    they share is Redis and the database, as two app processes do."""
    mine = learner_prefix(prefix, tag) + f"race-{version}:"
    make = plain_client if version == "minimal" else cache_client
    async with (cleaned(make(target, fake_server=fake_server), mine) as reader_client,
                cleaned(make(target, fake_server=fake_server), mine) as writer_client,
                throwaway_user(db, tag) as user_id):
        paused = PausedLoad(db)
        if version == "minimal":
            reader = CacheAside(reader_client, paused, prefix=mine)
            writer = CacheAside(writer_client, db.sessions, prefix=mine)
            reading = asyncio.ensure_future(reader.get_user(user_id))
            write = lambda: writer.rename_user(user_id, "Throwaway user v2")  # noqa: E731
            key = writer.key(user_id)
        else:
            reader = CachedUserRepository(sessions=paused, cache=RedisCache(reader_client, prefix=mine))
            writer = CachedUserRepository(sessions=db.sessions, cache=RedisCache(writer_client, prefix=mine))
            reading = asyncio.ensure_future(reader.get_by_id_cached(user_id))
            write = lambda: writer.update_user(user_id, name="Throwaway user v2")  # noqa: E731
            key = writer.user_key(user_id)
        report("the reader missed and loaded v1; it waits before storing", 0.25)
        await asyncio.wait_for(paused.loaded.wait(), 30)
        report("the writer commits v2 and invalidates the key", 0.5)
        await write()
        report("the reader stores what it loaded", 0.75)
        paused.go.set()
        got = await reading
        reader_got = got["name"] if version == "minimal" else got.value.name
        with record(db) as log:
            after = await (writer.get_user(user_id) if version == "minimal" else writer.get_by_id_cached(user_id))
        ttl = await writer_client.ttl(key)
    return Race(
        version, reader_got, "Throwaway user v2", after["name"] if version == "minimal" else after.value.name,
        log.count > 0, ttl if ttl >= 0 else None, None if version == "minimal" else got.stored,
    )


# --- Redis hung ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hung:
    version: Version
    seconds: float  # from the read's start to its answer or its error
    served: str | None  # the name the read returned (None: it raised)
    error: str | None  # what the read raised, or the cache's reason for failing open


async def hung(db: Database, *, version: Version, prefix: str, tag: str, report: Report = silent) -> Hung:
    """One read through a Redis that accepts connections and never answers."""
    mine = learner_prefix(prefix, tag) + f"hung-{version}:"
    server = await unreachable_redis("hung")
    client = plain_client(server.target) if version == "minimal" else cache_client(server.target)
    try:
        async with throwaway_user(db, tag) as user_id:
            if version == "minimal":
                report("reading through a Redis that never answers (redis-py's default timeout: 5 s)", 0.1)
                started = time.perf_counter()
                try:
                    value = await asyncio.wait_for(CacheAside(client, db.sessions, prefix=mine).get_user(user_id),
                                                   HUNG_LIMIT_SECONDS)
                    return Hung(version, time.perf_counter() - started, value["name"], None)
                except (redis.RedisError, OSError, TimeoutError) as exc:
                    return Hung(version, time.perf_counter() - started, None, type(exc).__name__)
            report("reading through a Redis that never answers (the cache's budget: 50 ms a step)", 0.1)
            repo = CachedUserRepository(sessions=db.sessions, cache=RedisCache(client, prefix=mine))
            lookup = await repo.get_by_id_cached(user_id)
            return Hung(version, lookup.seconds, lookup.value.name, lookup.error)
    finally:
        await client.aclose()
        server.close()
