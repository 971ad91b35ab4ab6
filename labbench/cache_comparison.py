"""Section 4's comparison: one workload through every caching strategy, measured in one run.

Each strategy gets its own Redis client (so the commands counted are its own), its own key
namespace (cold at the start) and the same list of operations: skewed reads and a share of
writes, run by concurrent workers. Every read is checked against the database: just before it
starts, a second engine (not counted) reads the row's version; a read that returns an older
version is stale, a newer one (only write-behind can) is ahead of the database.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from sqlalchemy import select

from labbench.cache_traffic import traffic_users, zipf_weights
from labbench.progress import Report, silent
from labbench.recorder import record
from runtime.turns import STRATEGY_COMPARISON, turn
from source import Database
from source.cache import RedisCache, cache_client
from source.cache_stats import CacheStats
from source.cache_strategies import STRATEGIES, CacheStrategy, WriteBehind
from source.errors import InvalidInput
from source.models import User
from source.redis_setup import RedisTarget, make_redis_client

LIMITS = {  # control: (low, high)
    "reads": (10, 5000), "users": (1, 200), "skew": (0.0, 3.0), "writes_per_100": (0, 100),
    "readers": (1, 64), "ttl_seconds": (1, 300),
}
LABELS = {
    "reads": "Reads", "users": "Users", "skew": "Skew s", "writes_per_100": "Writes per 100 reads",
    "readers": "Concurrent readers", "ttl_seconds": "TTL (s)",
}
FLUSH_EVERY_SECONDS = 0.2  # write-behind's flusher runs this often during the run


@dataclass(frozen=True)
class Workload:
    reads: int = 1000
    users: int = 50
    skew: float = 1.1
    writes_per_100: int = 10  # writes per 100 reads
    readers: int = 32  # concurrent workers
    ttl_seconds: int = 2
    seed: int | None = None

    def check(self) -> None:
        """InvalidInput naming the first control out of range (then nothing runs)."""
        for name, (low, high) in LIMITS.items():
            value, label = getattr(self, name), LABELS[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise InvalidInput(f"{label}: enter a number.", field=name)
            if isinstance(low, int) and value != int(value):
                raise InvalidInput(f"{label}: enter a whole number (got {value}).", field=name)
            if not low <= value <= high:
                raise InvalidInput(f"{label}: choose {low} to {high} (got {value}).", field=name)

    def operations(self) -> list[tuple[str, int]]:
        """("read" | "write", user rank), the same list for every strategy."""
        rng = random.Random(self.seed)
        weights = zipf_weights(self.users, self.skew)
        writes = round(self.reads * self.writes_per_100 / 100)
        ops = [("read", r) for r in rng.choices(range(1, self.users + 1), weights=weights, k=self.reads)]
        ops += [("write", r) for r in rng.choices(range(1, self.users + 1), weights=weights, k=writes)]
        rng.shuffle(ops)
        return ops


@dataclass(frozen=True)
class StrategyResult:
    name: str
    reads: int
    hits: int
    misses: int
    errors: int  # Redis failed: served from the database
    read_loads: int  # reads that ran the database query themselves
    statements: int  # every statement the strategy sent (loads, writes, flushes, refreshes)
    stale_reads: int  # returned an older version than the database held when the read started
    ahead_reads: int  # returned a newer version than the database held (write-behind)
    p50_ms: float
    p99_ms: float
    redis_commands: int
    commands_by_name: dict[str, int]
    writes: int
    failed_writes: int  # writes that raised (Redis did not answer write-behind's write)
    unflushed_at_end: int | None  # write-behind: users whose acknowledged write the database lacked at the end
    unflushed_after_flush: int | None = None  # the same after a final flush: write-behind's promise is 0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.reads if self.reads else 0.0


class CommandCounter:
    """Counts the commands a client sends, by name: single commands, and each command queued in
    a pipeline (a MULTI/EXEC transaction also counts its MULTI and EXEC)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.sent: Counter[str] = Counter()
        real_command, real_pipeline = client.execute_command, client.pipeline

        async def execute_command(*args, **options):
            self.sent[str(args[0]).upper()] += 1
            return await real_command(*args, **options)

        def pipeline(*args, **options):
            pipe = real_pipeline(*args, **options)
            real_execute = pipe.execute

            async def execute(*a, **k):
                self.sent.update(str(command[0][0]).upper() for command in pipe.command_stack)
                if pipe.is_transaction:
                    self.sent.update(("MULTI", "EXEC"))
                return await real_execute(*a, **k)

            pipe.execute = execute
            return pipe

        client.execute_command, client.pipeline = execute_command, pipeline

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def version_of(name: str) -> int:
    head, _, tail = name.rpartition(" v")
    return int(tail) if head and tail.isdigit() else 0


async def db_version(checker: Database, user_id: str) -> int:
    async with checker.sessions() as session:
        return version_of(await session.scalar(select(User.name).where(User.id == user_id)))


async def flush_all(strategy: WriteBehind, attempts: int = 20) -> None:
    """Flush until the queue is empty; a flush that misses the 50 ms loses nothing (it trims
    only what it applied), so it is tried again, at most `attempts` times."""
    for _ in range(attempts):
        try:
            if not await strategy.flush():
                return
        except (redis.RedisError, OSError):
            await asyncio.sleep(0.05)
    raise RuntimeError("write-behind's queue could not be flushed: Redis kept failing")


async def run_strategy(
    strategy_class: type[CacheStrategy], *, db: Database, checker: Database, target: RedisTarget,
    fake_server, prefix: str, user_ids: list[str], ops: list[tuple[str, int]], workload: Workload,
) -> StrategyResult:
    client = cache_client(target, fake_server=fake_server)
    counter = CommandCounter(client)
    cache = RedisCache(client, prefix=prefix, ttl_seconds=workload.ttl_seconds, stats=CacheStats())
    strategy = strategy_class(sessions=db.sessions, cache=cache)
    outcomes: Counter[str] = Counter()
    latencies, locks = [], {user_id: asyncio.Lock() for user_id in user_ids}
    stale = ahead = loads = failed_writes = 0
    acknowledged: dict[str, int] = {}
    queue = iter(ops)

    async def worker() -> None:
        nonlocal stale, ahead, loads, failed_writes
        for kind, rank in queue:
            user_id = user_ids[rank - 1]
            if kind == "write":
                async with locks[user_id]:  # one write per user at a time: versions commit in order
                    version = time.time_ns() // 1000
                    try:
                        await strategy.write(user_id, name=f"Traffic User {rank:03d} v{version}")
                    except (redis.RedisError, OSError):  # write-behind's write is a Redis write
                        failed_writes += 1
                    else:
                        acknowledged[user_id] = version
                continue
            before = await db_version(checker, user_id)
            started = time.perf_counter()
            lookup = await strategy.read(user_id)
            latencies.append(time.perf_counter() - started)
            outcomes[lookup.outcome] += 1
            loads += lookup.loaded
            got = version_of(lookup.value.name) if lookup.value is not None else 0
            stale += got < before
            ahead += got > before

    readers_done = asyncio.Event()

    async def flusher() -> None:
        # Stopped by an event, not cancelled: a cancel landing inside a flush's transaction could
        # leave SQLite's write lock with a connection that is never rolled back.
        while True:
            try:
                await asyncio.wait_for(readers_done.wait(), FLUSH_EVERY_SECONDS)
                return  # readers done, no flush in flight: the run measures what is still queued
            except TimeoutError:
                pass
            try:
                await strategy.flush()
            except (redis.RedisError, OSError):
                pass  # nothing was removed from the queue: the next flush tries again

    unflushed = still_unflushed = None
    try:
        with record(db) as log:
            background = asyncio.ensure_future(flusher()) if isinstance(strategy, WriteBehind) else None
            try:
                await asyncio.gather(*(worker() for _ in range(workload.readers)))
            finally:
                readers_done.set()
                if background is not None:
                    await asyncio.gather(background, return_exceptions=True)
            await strategy.close()
            if isinstance(strategy, WriteBehind):
                unflushed = await behind_the_database(checker, acknowledged)
                await flush_all(strategy)  # the rest reaches the database now
                still_unflushed = await behind_the_database(checker, acknowledged)
        commands = dict(counter.sent)
    finally:
        await client.aclose()
        admin = make_redis_client(target, timeout=5.0, fake_server=fake_server)  # not the 50 ms client
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
    ms = sorted(seconds * 1000 for seconds in latencies) or [0.0]
    return StrategyResult(
        strategy_class.name, len(latencies), outcomes["hit"], outcomes["miss"], outcomes["error"], loads,
        log.count, stale, ahead, statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        sum(commands.values()), commands, len(ops) - len(latencies), failed_writes, unflushed, still_unflushed,
    )


async def behind_the_database(checker: Database, acknowledged: dict[str, int]) -> int:
    """Users whose last acknowledged write's version the database does not hold yet."""
    return sum([await db_version(checker, user_id) < version for user_id, version in acknowledged.items()])


async def compare_strategies(
    *, db: Database, target: RedisTarget, prefix: str, workload: Workload, fake_server=None,
    strategies: tuple[type[CacheStrategy], ...] = STRATEGIES, report: Report = silent,
) -> list[StrategyResult]:
    """Every strategy through the same operations, one after another (one comparison at a time
    in each app process and across them: they share the traffic users). Checks the controls first."""
    workload.check()
    report("waiting for any other comparison on this server to finish", 0.0)
    async with turn(db.sessions, STRATEGY_COMPARISON):
        user_ids = await traffic_users(db.sessions, count=workload.users)
        ops = workload.operations()
        checker = Database(db.url.render_as_string(hide_password=False))
        run_id = uuid.uuid4().hex[:8]
        results = []
        try:
            for n, strategy in enumerate(strategies):
                report(f"{strategy.name}: strategy {n + 1} of {len(strategies)}, {len(ops)} operations", n / len(strategies))
                results.append(await run_strategy(
                    strategy, db=db, checker=checker, target=target, fake_server=fake_server,
                    prefix=f"{prefix}compare:{run_id}:{n}:", user_ids=user_ids, ops=ops, workload=workload,
                ))
            return results
        finally:
            await checker.dispose()

