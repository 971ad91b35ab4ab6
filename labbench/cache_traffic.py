"""Section 4's experiments: the demo user's score, and skewed traffic, read straight from the
database and then through the cache, with the server's own INFO counters beside the cache's."""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labbench.progress import Report, silent
from runtime.turns import DEMO_SCORE, turn
from source.cache import RedisCache
from source.cache_stats import CacheCounts, CacheStats, Lookup, Outcome
from source.cached_repository import CachedUserRepository, UserData
from source.errors import InvalidInput
from source.repositories import UserRepository
from source.services import get_or_create_users, users_by_email


async def ensure_latest_score(repo: CachedUserRepository, *, user_id: str) -> None:
    """Give the demo user a score if she has none, so the latest-score read has something to
    cache. Reads the database directly: this set-up is not a cached read. One check-and-add at a
    time, in each process and across processes, or learners arriving together would each add one
    (two app processes behind nginx once gave her two)."""
    async with turn(repo.sessions, DEMO_SCORE):
        async with repo.sessions() as session:
            users = UserRepository(session)
            user = await users.get_existing(user_id)
            has_score = await users.get_latest_score(user.id) is not None
        if not has_score:
            await repo.add_score(user.id, occupation_code=user.occupation_code or "15-2051")


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
    stores: int = 0  # misses whose value the cache stored (each runs one GET inside its script)
    invalidated: int = 0  # keys the midway write invalidated on this Redis (each a SET ... GET: a lookup)
    database_ms: tuple[float, ...] = ()  # the same reads, in the same order, straight from the database

    @property
    def key_lookups(self) -> int:
        """The key lookups the cache sent, as Redis counts them in keyspace_hits + keyspace_misses:
        a GET per read, the GET inside each store's compare-and-set, and each invalidation's SET ... GET."""
        return self.counts.requests + self.stores + self.invalidated

    @property
    def p50_cached_ms(self) -> float:
        return statistics.median(read.ms for read in self.reads)

    @property
    def p50_database_ms(self) -> float | None:
        return statistics.median(self.database_ms) if self.database_ms else None


async def traffic_users(sessions: async_sessionmaker[AsyncSession], *, count: int) -> list[str]:
    """The IDs of `count` shared traffic users, created once (safe when two sessions race)."""
    rows = [
        {"email": f"traffic-{n:03d}@{TRAFFIC_DOMAIN}", "name": f"Traffic User {n:03d}",
         "occupation_code": "15-1252", "years_experience": 1.0}
        for n in range(1, count + 1)
    ]
    emails = [row["email"] for row in rows]
    async with sessions() as session:  # after the first run they all exist: a read, no write lock
        users = await users_by_email(session, emails)
    if len(users) < count:
        async with sessions.begin() as session:
            users = {user.email: user for user in await get_or_create_users(session, rows)}
    return [users[email].id for email in emails]


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
    writes_to: RedisCache | None = None,
    baseline: bool = True,
    report: Report = silent,
) -> TrafficResult:
    """`reads` sequential cached reads over `users` users chosen with a Zipf-like skew. With
    update_midway, the hottest user is updated (and invalidated) halfway through, on `writes_to`
    (the lab's cache when the reads use an unreachable Redis; by default the same cache). With
    baseline, the same reads run first straight from the database, as they would without a cache."""
    if not 1 <= users <= MAX_TRAFFIC_USERS or not 1 <= reads <= MAX_TRAFFIC_READS or not 0 <= skew <= 3:
        raise InvalidInput(
            f"Choose 1-{MAX_TRAFFIC_USERS} users, 1-{MAX_TRAFFIC_READS} reads and a skew from 0 to 3.",
            field="traffic",
        )
    report(f"finding the {users} traffic users", 0.0)
    user_ids = await traffic_users(sessions, count=users)
    rng = random.Random(seed)
    ranks = rng.choices(range(1, users + 1), weights=zipf_weights(users, skew), k=reads)
    database_ms = await read_from_the_database(sessions, [user_ids[rank - 1] for rank in ranks], report) if baseline else ()
    stats = CacheStats()
    repo = CachedUserRepository(sessions=sessions, cache=cache, stats=stats)
    if start_cold:  # an invalidation is a write: it goes where the writes go
        await (writes_to or cache).invalidate(*(repo.user_key(user_id) for user_id in user_ids))
    midway = reads // 2 if update_midway else None
    old_years = new_years = first_after = None
    server_before = await keyspace_counts(cache.client)
    log_reads, stores, invalidated = [], 0, 0
    start = 0.5 if baseline else 0.0
    for number, rank in enumerate(ranks, start=1):
        if number % 50 == 1:
            report(f"read {number} of {reads} through the cache", start + (1 - start) * number / reads)
        lookup = await repo.get_by_id_cached(user_ids[rank - 1])
        log_reads.append(TrafficRead(number, rank, lookup.outcome, lookup.seconds * 1000))
        stores += lookup.stored
        if rank == 1 and new_years is not None and first_after is None:
            first_after = lookup  # the first read of the updated user: a miss with the new value
        if number == midway:
            async with sessions() as session:
                old_years = (await UserRepository(session).get_existing(user_ids[0])).years_experience
            new_years = (old_years or 0.0) % 40 + 1  # always a different value
            writer = repo if writes_to is None else CachedUserRepository(sessions=sessions, cache=writes_to)
            _, invalidation = await writer.update_user(user_ids[0], years_experience=new_years)
            if (writes_to is None or writes_to.client is cache.client) and invalidation.removed is not None:
                invalidated += len(invalidation.keys)
    server_after = await keyspace_counts(cache.client)
    server = None
    if server_before is not None and server_after is not None:
        server = (server_after[0] - server_before[0], server_after[1] - server_before[1])
    return TrafficResult(log_reads, stats.snapshot(), server, midway, old_years, new_years, first_after, stores,
                         invalidated, tuple(database_ms))


async def read_from_the_database(sessions: async_sessionmaker[AsyncSession], user_ids: list[str],
                                 report: Report = silent) -> list[float]:
    """Each user read as a cache miss reads it (a session, one SELECT, the plain value), without
    the cache: milliseconds per read."""
    times = []
    for number, user_id in enumerate(user_ids, start=1):
        if number % 50 == 1:
            report(f"read {number} of {len(user_ids)} straight from the database", 0.5 * number / len(user_ids))
        started = time.perf_counter()
        async with sessions() as session:
            UserData.from_model(await UserRepository(session).get_existing(user_id))
        times.append((time.perf_counter() - started) * 1000)
    return times
