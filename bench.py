"""The lab's speed figures, measured in one run so that ratios compare like with like.

    python bench.py                 # every section, as a table
    python bench.py --json          # the same figures as JSON
    python bench.py --only anchors  # some sections only
    python bench.py --only relays   # 1, 2 and 4 relay processes per claim design in alternating
                                    # rounds, and a SIGKILL round (PostgreSQL and Redis servers)
    python bench.py --only load     # 30 learners in chromium on one served app: minutes, so
                                    # never part of the default run (--sessions N to change)
    python bench.py --only room     # 30 and 100 learners without browsers (Streamlit's websocket
                                    # protocol), the server pinned to one core: minutes, on request
                                    # only (--learners N ..., --think MIN MAX)
    python bench.py --only room_proxy  # the same room through nginx in front of two app
                                    # processes on the PostgreSQL and Redis servers
    python bench.py --only exercises   # learner code graded in the sandbox: per exercise, grading
                                    # start to results, and the sandbox's start against python -c pass
    python bench.py --only exercise_room  # 30 learners press Run checks at once on one served app:
                                    # the queue's bound, places, waits, other learners' reruns

Backends: a scratch SQLite file always; PostgreSQL when LAB_TEST_DATABASE_URL (or --pg) names
a server (the bench makes its own database there and drops it); Redis at LAB_TEST_REDIS_URL
(or --redis) under its own key prefix, and the embedded fakeredis. The embedded_postgres section
starts the app's default server in temporary folders of its own. No figure here is asserted
by a test: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fakeredis
import redis.asyncio as aioredis

from labbench import loading, pooling
from labbench.cache_comparison import Workload, compare_strategies
from labbench.recorder import record
from labbench.unreachable_redis import unreachable_redis
from runtime.scratch import scratch_postgres
from source import Database, User, run_db_setup_and_create_user
from source.cache import RedisCache, cache_client
from source.cache_strategies import STRATEGIES
from source.cached_repository import CachedUserRepository
from source.redis_setup import RedisTarget
from source.repositories import UserRepository


@dataclass
class Figure:
    section: str
    backend: str
    metric: str
    value: float
    unit: str


@dataclass
class Bench:
    """What every section gets: migrated scratch databases and Redis clients by name."""

    databases: dict[str, Database] = field(default_factory=dict)
    redis: dict[str, aioredis.Redis] = field(default_factory=dict)
    key_prefix: str = field(default_factory=lambda: f"bench:{uuid.uuid4().hex[:8]}:")
    fake_server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    urls: dict[str, str] = field(default_factory=dict)  # unmasked: never printed
    load_sessions: int = 30
    room_learners: tuple[int, ...] = (30, 100)
    room_think: tuple[float, float] = (2.0, 6.0)  # seconds a room learner waits before each click
    failures: list[str] = field(default_factory=list)  # a run that must fail the bench loudly


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of samples in seconds, returned in milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples) * 1000, cuts[98] * 1000


async def timed(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


def latency_figures(section: str, backend: str, metric: str, samples: list[float]) -> list[Figure]:
    p50, p99 = percentiles(samples)
    return [Figure(section, backend, f"{metric} p50", p50, "ms"), Figure(section, backend, f"{metric} p99", p99, "ms")]


# --- sections ----------------------------------------------------------------------------


async def bench_anchors(bench: Bench) -> list[Figure]:
    """The two anchors every later figure is compared to: a raw GET and a raw PK read."""
    figures = []
    key = bench.key_prefix + "anchor"
    for name, client in bench.redis.items():
        await client.set(key, "x" * 200)
        figures += latency_figures("anchors", name, "raw redis GET", await timed(lambda c=client: c.get(key), 2000))
    for name, db in bench.databases.items():
        figures += latency_figures("anchors", name, "raw PK session.get", await timed_pk_reads(db, 1000))
    return figures


async def timed_pk_reads(db: Database, n: int) -> list[float]:
    alex, _ = await run_db_setup_and_create_user(db)
    async with db.sessions() as session:

        async def get() -> User | None:
            session.expunge_all()  # a real round trip each time, not the identity map
            return await session.get(User, alex.id)

        return await timed(get, n)


async def bench_n_plus_one(bench: Bench) -> list[Figure]:
    """100 users x 3 scores loaded by each strategy, each call in a fresh session."""
    figures = []
    for name, db in bench.databases.items():
        ids = await loading.create_cohort(db, tag=uuid.uuid4().hex[:10], users=100, scores_per_user=3)
        p50 = {}
        for strategy, load in loading.STRATEGIES.items():

            async def call(db=db, ids=ids, load=load) -> None:
                async with db.sessions() as session:
                    await load(UserRepository(session), ids)

            with record(db) as log:
                await call()
            figures.append(Figure("n_plus_one", name, f"{strategy} statements (100 users)", log.count, "statements"))
            samples = await timed(call, 30, warmup=5)
            figures += latency_figures("n_plus_one", name, f"{strategy} load", samples)
            p50[strategy] = statistics.median(samples)
        figures.append(Figure("n_plus_one", name, "lazy / selectin (p50)", p50["lazy"] / p50["selectin"], "x"))
    return figures


POOLING_LOADS = {  # name -> (clients, requests per client, hold ms); pool 5 + 10 as on the page
    "50x5 hold 10ms": (50, 5, 10),
    "50x5 hold 0ms": (50, 5, 0),
    "50x1 hold 10ms": (50, 1, 10),
    "50x5 hold 50ms": (50, 5, 50),
}


async def bench_pooling(bench: Bench) -> list[Figure]:
    """Section 2's experiment (pooled engine vs NullPool), median of 3 runs per load."""
    figures = []
    for name, db in bench.databases.items():
        for load, (clients, per_client, hold_ms) in POOLING_LOADS.items():
            settings = pooling.PoolSettings(
                concurrency=clients, requests_per_client=per_client, pool_size=5, max_overflow=10, hold_ms=hold_ms,
            )
            runs = [await pooling.run_pool_experiment(db=db, settings=settings) for _ in range(3)]
            pooled = statistics.median(r.pooled.throughput for r in runs)
            null = statistics.median(r.null_pool.throughput for r in runs)
            figures += [
                Figure("pooling", name, f"{load} pooled throughput", pooled, "req/s"),
                Figure("pooling", name, f"{load} NullPool throughput", null, "req/s"),
                Figure("pooling", name, f"{load} pooled / NullPool", pooled / null, "x"),
                Figure("pooling", name, f"{load} pooled wait p50",
                       statistics.median(r.pooled.wait_p50_ms for r in runs), "ms"),
                Figure("pooling", name, f"{load} NullPool wait p50",
                       statistics.median(r.null_pool.wait_p50_ms for r in runs), "ms"),
                Figure("pooling", name, f"{load} connections opened, pooled", runs[-1].pooled.connections_opened,
                       "connections"),
                Figure("pooling", name, f"{load} connections opened, NullPool",
                       runs[-1].null_pool.connections_opened, "connections"),
            ]
    return figures


async def timed_alternately(
    first: Callable[[], Awaitable[object]], second: Callable[[], Awaitable[object]], n: int
) -> tuple[list[float], list[float]]:
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(n):
        pairs = tuple(zip((first, second), samples, strict=True))
        for fn, into in pairs if i % 2 else pairs[::-1]:  # ABBA: neither always goes first
            start = time.perf_counter()
            await fn()
            into.append(time.perf_counter() - start)
    return samples


async def hot_key_burst(pair: str, db: Database, cache: RedisCache, user_id: str, bursts: int = 5) -> list[Figure]:
    """Bursts of 100 concurrent readers of one hot (cached) key: the Redis commands they sent,
    the database statements, and the reads that failed open (a Redis error served from the
    database). The commands are counted as the client sends them."""
    repo = CachedUserRepository(sessions=db.sessions, cache=cache)
    await asyncio.sleep(cache.cooldown_seconds)  # an earlier timeout's cooldown is over
    await repo.get_by_id_cached(user_id)  # the key is cached: every read below can hit
    sent, real = [], cache.client.execute_command

    async def counted(*args, **options):
        sent.append(args[0])
        return await real(*args, **options)

    cache.client.execute_command = counted
    try:
        with record(db) as log:
            outcomes = []
            for _ in range(bursts):
                lookups = await asyncio.gather(*(repo.get_by_id_cached(user_id) for _ in range(100)))
                outcomes += [lookup.outcome for lookup in lookups]
    finally:
        del cache.client.execute_command
    return [
        Figure("cache", pair, "hot-key burst: Redis commands per 100 concurrent reads", len(sent) / bursts, "commands"),
        Figure("cache", pair, "hot-key burst: database statements per 100 reads", log.count / bursts, "statements"),
        Figure("cache", pair, "hot-key burst: reads failed open per 100", outcomes.count("error") / bursts, "reads"),
    ]


async def bench_cache(bench: Bench) -> list[Figure]:
    """Section 4 on the app's cache client (50 ms timeouts, no retries, bounded pool): a hit
    against the raw GET anchor, the database read a miss pays, a whole miss, single flight, and
    what a read costs while Redis is down."""
    figures = []
    targets = {"fakeredis": RedisTarget("embedded", "fakeredis", "bench")}
    if "redis" in bench.urls:
        targets["redis"] = RedisTarget("server", "bench", "bench", bench.urls["redis"])
    db_name = "postgresql" if "postgresql" in bench.databases else "sqlite"
    for redis_name, target in targets.items():
        client = cache_client(target, fake_server=bench.fake_server)
        cache = RedisCache(client, prefix=bench.key_prefix)
        for name, db in bench.databases.items():
            alex, _ = await run_db_setup_and_create_user(db)
            repo = CachedUserRepository(sessions=db.sessions, cache=cache)
            pair = f"{name}+{redis_name}"
            await repo.get_by_id_cached(alex.id)
            # The anchor is a plain redis.asyncio client with its defaults (or fakeredis's own
            # client), GETting the same key; alternate the two so that noise on this shared
            # machine hits both alike.
            key = repo.user_key(alex.id)
            raw = (
                aioredis.Redis.from_url(target._real_url, decode_responses=True) if target.kind == "server"
                else fakeredis.FakeAsyncRedis(server=bench.fake_server, decode_responses=True)
            )
            anchor, hits = await timed_alternately(
                lambda raw=raw, key=key: raw.get(key),
                lambda repo=repo, alex=alex: repo.get_by_id_cached(alex.id),
                3000,
            )
            await raw.aclose()
            figures += latency_figures("cache", pair, "raw redis GET of the cached key (anchor)", anchor)
            figures += latency_figures("cache", pair, "cache hit", hits)
            figures.append(Figure("cache", pair, "hit / raw GET (p50)", statistics.median(hits) / statistics.median(anchor), "x"))
            misses = []
            for _ in range(300):
                await repo.invalidate_user_cache(alex.id)
                start = time.perf_counter()
                await repo.get_by_id_cached(alex.id)
                misses.append(time.perf_counter() - start)
            figures += latency_figures("cache", pair, "cache miss (GET, load, SET)", misses)
            figures.append(Figure("cache", pair, "miss / hit (p50)", statistics.median(misses) / statistics.median(hits), "x"))
            await repo.invalidate_user_cache(alex.id)
            with record(db) as log:
                await asyncio.gather(*(repo.get_by_id_cached(alex.id) for _ in range(100)))
            figures.append(Figure("cache", pair, "database statements for 100 concurrent misses", log.count, "statements"))
            figures += await hot_key_burst(pair, db, cache, alex.id)
        await client.aclose()
    for name, db in bench.databases.items():
        alex, _ = await run_db_setup_and_create_user(db)

        async def db_read(db=db, alex=alex) -> None:
            async with db.sessions() as session:
                await UserRepository(session).get_by_id(alex.id)

        figures += latency_figures("cache", name, "database read (new session + get_by_id)", await timed(db_read, 1000))
    # Redis down, on the lab's database pair. cooldown 0: every read tries Redis (the worst case);
    # cooldown 1 s (the app's): after one failure the reads skip Redis.
    db = bench.databases[db_name]
    alex, _ = await run_db_setup_and_create_user(db)
    for kind in ("refused", "hung"):
        unreachable = await unreachable_redis(kind)
        client = cache_client(unreachable.target)
        for cooldown in (0.0, 1.0):
            repo = CachedUserRepository(
                sessions=db.sessions, cache=RedisCache(client, prefix=bench.key_prefix, cooldown_seconds=cooldown)
            )
            samples = await timed(lambda repo=repo: repo.get_by_id_cached(alex.id), 40, warmup=1)
            figures += latency_figures("cache", f"{db_name}+{kind}", f"read with Redis down, cooldown {cooldown:g} s", samples)
        await client.aclose()
        unreachable.close()
    return figures


async def bench_outbox(bench: Bench) -> list[Figure]:
    """Section 5: relay throughput (batches of 100) on each backend pair; on PostgreSQL the relay
    against the minimal raw-asyncpg relay, and commit-to-stream latency against the same anchor."""
    from source import DomainEvent, DomainEventRepository, RelaySettings
    from source.models import new_id
    from source.outbox import relay_batch

    figures = []
    pairs = [("sqlite", "fakeredis"), ("postgresql", "redis" if "redis" in bench.redis else "fakeredis")]
    for db_name, redis_name in [(d, r) for d, r in pairs if d in bench.databases]:
        db, client, stream = bench.databases[db_name], bench.redis[redis_name], f"{bench.key_prefix}outbox-{db_name}"
        for _ in range(4):  # 2,000 pending events
            async with db.sessions.begin() as session:
                await DomainEventRepository(session).add_all([
                    DomainEvent(event_type="AIRScoreCalculated", aggregate_type="User", aggregate_id=new_id(),
                                payload={"score_id": new_id(), "air_score": 70.0})
                    for _ in range(500)
                ])
        published, started = 0, time.perf_counter()
        while (result := await relay_batch(db=db, redis_client=client, stream=stream, settings=RelaySettings())).claimed:
            published += result.published
        seconds = time.perf_counter() - started
        figures.append(Figure("outbox", f"{db_name}+{redis_name}", "relay throughput, batch 100", published / seconds, "events/s"))

    if "postgresql" in bench.databases:
        figures += await _relay_against_minimal(bench)
        figures += await _commit_to_stream(bench)
    return figures


async def _commit_to_stream(bench: Bench, rounds: int = 8, per_round: int = 50) -> list[Figure]:
    """Commit-to-stream latency on PostgreSQL: the lab's relay woken by NOTIFY, with each claim
    design, against the minimal raw-asyncpg relay with the same claim woken by NOTIFY (the anchor), in
    alternating rounds (ABCD, DCBA, ...); then the lab's relay with a 0.2 s poll only. Each sample: a score
    committed at a random moment, then the time until an XREAD on the stream returns its event.
    With the Redis server, each relay woken by NOTIFY runs as deployed, in a process of its own
    (python -m labbench.relay_process --as-deployed); with fakeredis, as a task in the bench's
    process. Each round starts its relay afresh; its first event, which pays for preparing the
    statements on a new connection, is not counted."""
    import random

    from sqlalchemy import text

    from labbench.minimal_relay import minimal_notify_relay
    from source import RelaySettings, calculate_and_store_airscore, event_publisher
    from source.outbox import NOTIFY_CHANNEL
    from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER

    redis_name = "redis" if "redis" in bench.redis else "fakeredis"
    db, client, backend = bench.databases["postgresql"], bench.redis[redis_name], f"postgresql+{redis_name}"
    dsn = db.asyncpg_dsn
    alex, _ = await run_db_setup_and_create_user(db)
    # The sections before published about 100,000 events: their old row versions stay in the claim's
    # index until a vacuum, and a claim steps over them. As autovacuum soon would:
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE domain_events"))
    polling = "lab relay, poll 0.2 s only"
    designs = {f"lab relay ({design}), NOTIFY": design for design in (AGGREGATE_ORDER, ANY_ORDER)}
    minimals = {f"minimal raw-asyncpg relay ({design}), NOTIFY": design for design in (AGGREGATE_ORDER, ANY_ORDER)}
    # As a relay worker is deployed: sharing no event loop and no garbage collector with the code
    # that commits and reads (a process of its own needs the Redis server, not fakeredis).
    where = "own process" if redis_name == "redis" else "bench's process"

    @asynccontextmanager
    async def relay_running(kind: str, stream: str):
        if where == "own process" and kind != polling:
            arguments = ["--minimal", "--design", minimals[kind]] if kind in minimals else ["--design", designs[kind]]
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "labbench.relay_process", bench.urls["postgresql"], bench.urls["redis"], stream,
                "--as-deployed", *arguments, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent)
            try:
                await asyncio.wait_for(child.stdout.readline(), 30)  # "ready"
                yield
            finally:
                child.terminate()
                await child.wait()
            return
        stop = asyncio.Event()
        if kind in minimals:
            task = asyncio.create_task(minimal_notify_relay(dsn, client, stream, channel=NOTIFY_CHANNEL, stop=stop,
                                                            ordered=minimals[kind] == AGGREGATE_ORDER))
        else:
            settings = RelaySettings(use_notify=False) if kind == polling else RelaySettings(design=designs[kind])
            task = asyncio.create_task(event_publisher(db=db, redis_client=client, stream=stream, stop=stop,
                                                       settings=settings))
        try:
            yield
        finally:
            stop.set()
            await task

    async def measure(kind: str, n: int) -> list[float]:
        stream, last_id, samples = f"{bench.key_prefix}latency-{uuid.uuid4().hex[:8]}", "0-0", []
        try:
            async with relay_running(kind, stream):
                await asyncio.sleep(0.5)  # listening
                for _ in range(n + 1):
                    await asyncio.sleep(random.uniform(0, 0.2))  # commit at any phase of a poll
                    _, event = await calculate_and_store_airscore(sessions=db.sessions, user_id=alex.id,
                                                                  occupation_code="BENCH")
                    committed, fields = time.perf_counter(), {}
                    while fields.get("event_id") != event.id:  # any entry before it is not this sample's
                        reply = await client.xread({stream: last_id}, count=1, block=5000)
                        if not reply:
                            raise RuntimeError(f"{kind}: event {event.id} not on the stream after 5 s")
                        last_id, fields = reply[0][1][0]
                    samples.append(time.perf_counter() - committed)
        finally:
            await client.delete(stream)
        return samples[1:]

    notified = [*minimals, *designs]
    found: dict[str, list[float]] = {kind: [] for kind in notified}
    for number in range(rounds):
        for kind in (notified if number % 2 == 0 else list(reversed(notified))):
            found[kind] += await measure(kind, per_round)
    polled = await measure(polling, 60)
    n = rounds * per_round
    figures = []
    for kind in notified:
        figures += latency_figures("outbox", backend, f"commit-to-stream, {kind}, {where} (n={n})", found[kind])
    for kind, design in designs.items():  # each against the minimal relay with the same claim
        lab = percentiles(found[kind])
        anchor = percentiles(found[f"minimal raw-asyncpg relay ({design}), NOTIFY"])
        for quantile, ratio in zip(("p50", "p99"), (lab[0] / anchor[0], lab[1] / anchor[1]), strict=True):
            figures.append(Figure("outbox", backend, f"commit-to-stream {quantile}, {kind} / minimal, {where}", ratio, "x"))
    figures += latency_figures("outbox", backend, f"commit-to-stream, {polling}, bench's process (n=60)", polled)
    return figures


async def _relay_against_minimal(bench: Bench, batches_each: int = 40) -> list[Figure]:
    """The lab's relay_batch against a minimal raw-asyncpg relay (labbench/minimal_relay.py) in the
    same run, on the same table, each claim design against the minimal relay with the same claim:
    for each batch size, a fresh burst of 4 x batches_each full batches (200 users), then batches
    alternate between the four, in ABCD then DCBA order, after one untimed round (each relay's
    statements prepared). The minimal relays' ratio to each other is the price of keeping each
    aggregate's order."""
    import asyncpg

    from labbench.minimal_relay import minimal_relay_batch
    from source import DomainEvent, DomainEventRepository, RelaySettings
    from source.models import new_id
    from source.outbox import relay_database
    from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER
    from source.partitions import Partitions

    db, redis_name = bench.databases["postgresql"], "redis" if "redis" in bench.redis else "fakeredis"
    client, stream = bench.redis[redis_name], f"{bench.key_prefix}outbox-anchor"
    users = [new_id() for _ in range(200)]
    connection = await asyncpg.connect(db.asyncpg_dsn)
    relay_db = relay_database(bench.urls["postgresql"])  # as the publisher runs the relay
    partitions = Partitions(relay_id="bench-lab-relay")
    figures, backend = [], f"postgresql+{redis_name}"
    try:
        for batch in (100, 500):
            events = batch * 4 * (batches_each + 1)
            for start in range(0, events, 1000):
                async with db.sessions.begin() as session:
                    await DomainEventRepository(session).add_all([
                        DomainEvent(event_type="AIRScoreCalculated", aggregate_type="User",
                                    aggregate_id=users[i % 200], payload={"score_id": new_id(), "air_score": 70.0})
                        for i in range(start, min(start + 1000, events))
                    ])
            await connection.execute("VACUUM ANALYZE domain_events")  # as autovacuum soon would
            runners = {}
            for design in (ANY_ORDER, AGGREGATE_ORDER):
                settings = RelaySettings(batch_size=batch, design=design)
                runners[f"lab relay_batch ({design})"] = lambda s=settings: _lab_batch(relay_db, client, stream, s, partitions)
                # In aggregate order the anchor claims under the lab relay's leases (one relay, renewing as it runs).
                runners[f"minimal raw-asyncpg relay ({design})"] = lambda b=batch, ordered=design == AGGREGATE_ORDER: (
                    minimal_relay_batch(connection, client, stream, batch_size=b,
                                        relay=partitions.relay_id if ordered else None))
            spent, done = dict.fromkeys(runners, 0.0), dict.fromkeys(runners, 0)
            for run in runners.values():
                await run()  # untimed: prepares each relay's statements on its connection
            for number in range(batches_each):
                for name in list(runners) if number % 2 == 0 else list(reversed(runners)):  # ABCD, then DCBA
                    started = time.perf_counter()
                    done[name] += await runners[name]()
                    spent[name] += time.perf_counter() - started
            rates = {name: done[name] / spent[name] for name in spent}
            if min(done.values()) < batch * batches_each:
                bench.failures.append(f"outbox: a relay published less than full batches of {batch}: {done}")
            figures += [Figure("outbox", backend, f"{name}, batch {batch}, interleaved", rate, "events/s")
                        for name, rate in rates.items()]
            for design in (ANY_ORDER, AGGREGATE_ORDER):
                lab, minimal = rates[f"lab relay_batch ({design})"], rates[f"minimal raw-asyncpg relay ({design})"]
                figures.append(Figure("outbox", backend, f"lab relay_batch / minimal relay, both {design}, batch {batch}",
                                      lab / minimal, "x"))
            figures.append(Figure(
                "outbox", backend, f"minimal relay in aggregate order / in any order, batch {batch}",
                rates[f"minimal raw-asyncpg relay ({AGGREGATE_ORDER})"] / rates[f"minimal raw-asyncpg relay ({ANY_ORDER})"],
                "x"))
    finally:
        await connection.close()
        await relay_db.dispose()
    return figures


async def _lab_batch(db, client, stream, settings, partitions) -> int:
    from source.outbox import relay_batch

    return (await relay_batch(db=db, redis_client=client, stream=stream, settings=settings,
                              partitions=partitions)).published


async def bench_relays(bench: Bench, rounds: int = 3, events: int = 10_000, users: int = 20) -> list[Figure]:
    """Section 5, several relays (labbench/relay_fleet.py): 1, 2 and 4 relays, each in a process of
    its own, drain a burst on a fresh database with each claim design, in alternating rounds (at
    each relay count AB, BA, AB, ...); events/s from "go" until no event is pending, then duplicates
    and inversions counted from XRANGE against the database's order, and events applied twice by
    the lab's consumer. Then a kill round: one relay in aggregate order SIGKILLed after its first
    batch, holding its partitions. PostgreSQL and the Redis server only (the relays' processes share
    no fakeredis)."""
    from labbench.relay_fleet import run_fleet
    from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER
    from source.partitions import LeaseSettings

    if "postgresql" not in bench.databases or "redis" not in bench.urls:
        return []
    backend, counts, designs = "postgresql+redis", (1, 2, 4), (AGGREGATE_ORDER, ANY_ORDER)

    async def fleet(relays: int, design: str, kill: bool = False):
        async with scratch_postgres(bench.urls["postgresql"], "lab_fleet") as url:
            result = await run_fleet(url, bench.urls["redis"], relays=relays, design=design, events=events,
                                     users=users, kill=kill, key_prefix=bench.key_prefix)
        what = f"{relays} relay(s), {design}{', one killed' if kill else ''}"
        print(f"# relays: {what}: {result.events_per_s:,.0f} events/s, per relay {result.per_relay}, "
              f"{result.duplicates} duplicates, {result.inversions} inversions", file=sys.stderr, flush=True)
        if result.lost or result.applied_twice or (design == AGGREGATE_ORDER and result.inversions):
            bench.failures.append(f"relays: {what}: {result.lost} lost, {result.applied_twice} applied twice, "
                                  f"{result.inversions} inversions")
        return result

    found = {(relays, design): [] for relays in counts for design in designs}
    for number in range(rounds):
        for relays in counts:
            for design in designs if number % 2 == 0 else designs[::-1]:
                found[relays, design].append(await fleet(relays, design))
    figures, burst = [], f"{events:,} events/{users} users, {rounds} rounds"
    for (relays, design), results in found.items():
        rates = [result.events_per_s for result in results]
        what = f"{relays} relay process(es), {design}"
        figures += [
            Figure("relays", backend, f"{what}: events/s, median of {burst} (min {min(rates):,.0f}, "
                                      f"max {max(rates):,.0f})", statistics.median(rates), "events/s"),
            Figure("relays", backend, f"{what}: duplicates appended, all rounds",
                   sum(r.duplicates for r in results), "entries"),
            Figure("relays", backend, f"{what}: inversions, all rounds", sum(r.inversions for r in results), "events"),
            Figure("relays", backend, f"{what}: events applied twice, all rounds",
                   sum(r.applied_twice for r in results), "events"),
        ]
    for relays in counts:  # each round's ordered relays against the any-order ones of the same round
        ratios = [ordered.events_per_s / anyhow.events_per_s
                  for ordered, anyhow in zip(found[relays, AGGREGATE_ORDER], found[relays, ANY_ORDER], strict=True)]
        figures.append(Figure("relays", backend, f"{relays} relay process(es): {AGGREGATE_ORDER} / {ANY_ORDER}, same "
                                                 f"round, median (min {min(ratios):.2f}, max {max(ratios):.2f})",
                              statistics.median(ratios), "x"))
    lease = LeaseSettings()
    for relays in (2, 4):
        result = await fleet(relays, AGGREGATE_ORDER, kill=True)
        what = f"kill round, {relays} relay processes, {AGGREGATE_ORDER}, one SIGKILLed after its first batch"
        figures += [
            Figure("relays", backend, f"{what}: its partitions when killed", result.victim_partitions, "partitions"),
            Figure("relays", backend, f"{what}: kill until the survivors hold them (bound ttl {lease.ttl:g} s "
                                      f"+ heartbeat {lease.heartbeat:g} s = {lease.ttl + lease.heartbeat:g} s)",
                   result.take_over, "s"),
            Figure("relays", backend, f"{what}: kill until no event is pending", result.kill_to_done, "s"),
            Figure("relays", backend, f"{what}: events lost", result.lost, "events"),
            Figure("relays", backend, f"{what}: events applied twice", result.applied_twice, "events"),
            Figure("relays", backend, f"{what}: inversions", result.inversions, "events"),
            Figure("relays", backend, f"{what}: duplicates appended", result.duplicates, "entries"),
        ]
    return figures


async def bench_load(bench: Bench) -> list[Figure]:
    """A workshop on one server: `streamlit run app.py` on each backend pair (a fresh database),
    and bench.load_sessions learners, arriving a second apart and then all walking every section
    at once, each in a chromium context of its own (harness/browser_walk.py). The browser runs on the same
    cores as the server, so the times include its rendering. Errors, isolation and the
    database's contents are checked."""
    from harness.browser_walk import check_database, percentile, serve_and_walk
    from harness.served import app_subprocess_env

    pairs = {"sqlite+fakeredis": (bench.urls["sqlite"].replace("bench.db", "load.db"), "fakeredis://")}
    figures = []
    async with AsyncExitStack() as stack:
        if "postgresql" in bench.urls:
            url = await stack.enter_async_context(scratch_postgres(bench.urls["postgresql"], "lab_load"))
            pairs["postgresql+redis" if "redis" in bench.urls else "postgresql+fakeredis"] = (
                url, bench.urls.get("redis", "fakeredis://"))
        for pair, (db_url, redis_url) in pairs.items():
            env = app_subprocess_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "LAB_REDIS_PREFIX": f"{bench.key_prefix}load:"})
            with tempfile.TemporaryDirectory() as log_dir:
                run = await serve_and_walk(env, Path(log_dir), sessions=bench.load_sessions, alone=False,
                                           name=f"load-{pair}", timeout=180, arrivals=1.0)
            contents = await check_database(db_url, run.walked)
            for problem in run.errors + run.isolation_violations() + contents.mismatches:
                print(f"# load {pair}: {problem}", file=sys.stderr)
            if run.server_log:
                print(f"# load {pair}: server log {run.server_log}", file=sys.stderr)
            every = [c.seconds for c in run.clicks]
            links = [c.seconds for c in run.clicks if c.action.startswith("open ")]
            buttons = [c.seconds for c in run.clicks if not c.action.startswith("open ")]
            degraded = sum(len(me.degraded) for me in run.walked)
            figures += [
                Figure("load", pair, "sessions", run.sessions, "learners"),
                Figure("load", pair, "clicks (buttons, links, Enter)", len(every), "clicks"),
                Figure("load", pair, "learners with an error", len(run.errors), "learners"),
                *(Figure("load", pair, f"  of which: {kind}", n, "learners") for kind, n in run.error_kinds().items() if n),
                Figure("load", pair, "isolation violations", len(run.isolation_violations()), "violations"),
                Figure("load", pair, "database rows not as the learners made them", len(contents.mismatches), "checks"),
                Figure("load", pair, "cached reads failed open (Redis past the 50 ms deadline)", degraded, "reads"),
                Figure("load", pair, "Jane's demo scores (1 expected)", contents.jane_demo_scores, "scores"),
                Figure("load", pair, "start-up: streamlit run to health check", run.startup_seconds, "s"),
                Figure("load", pair, "start-up: streamlit run to first page drawn", run.first_page_seconds, "s"),
                Figure("load", pair, "all learners' walk, wall time", run.seconds, "s"),
            ]
            for name, samples in (("click to rerun end", every), ("sidebar link to page drawn", links),
                                  ("button to rerun end", buttons)):
                if samples:
                    figures += [Figure("load", pair, f"{name} p{q}", percentile(samples, q) * 1000, "ms") for q in (50, 95)]
    return figures


async def bench_embedded_postgres(bench: Bench, rounds: int = 3) -> list[Figure]:
    """The app's default database (runtime/embedded_postgres.py), in a fresh temporary folder each
    round: the first start (initdb, then pg_ctl start), a warm start of the kept cluster, a second
    user joining the running server, the last user's stop; then the PK read anchor on it, to set
    beside the other backends'. Medians of `rounds` rounds."""
    from runtime.embedded_postgres import EmbeddedPostgres

    first, initdb, warm, adopt, stop = [], [], [], [], []
    pk_reads: list[float] = []
    for number in range(rounds):
        with tempfile.TemporaryDirectory(prefix="lab2-bench-pg-") as folder:
            server = EmbeddedPostgres(Path(folder))
            started = await asyncio.to_thread(server.ensure_running)
            first.append(started.total_seconds)
            initdb.append(started.initdb_seconds or 0.0)
            await asyncio.to_thread(server.stop)
            started = await asyncio.to_thread(server.ensure_running)
            warm.append(started.total_seconds)
            other = EmbeddedPostgres(Path(folder))  # as a second process would: its own lock on pg.users
            adopt.append((await asyncio.to_thread(other.ensure_running)).total_seconds)
            await asyncio.to_thread(other.stop)
            if number == rounds - 1:
                db = Database(started.url)
                try:
                    await db.upgrade_to_head()
                    pk_reads = await timed_pk_reads(db, 1000)
                finally:
                    await db.dispose()
            began = time.perf_counter()
            await asyncio.to_thread(server.stop)
            stop.append(time.perf_counter() - began)
    section, backend = "embedded_postgres", "embedded postgresql"
    return [
        Figure(section, backend, f"first start, initdb included (median of {rounds})", statistics.median(first), "s"),
        Figure(section, backend, f"  of which initdb (median of {rounds})", statistics.median(initdb), "s"),
        Figure(section, backend, f"warm start, cluster kept (median of {rounds})", statistics.median(warm), "s"),
        Figure(section, backend, f"a second user joins the running server (median of {rounds})", statistics.median(adopt), "s"),
        Figure(section, backend, f"stop by the last user (median of {rounds})", statistics.median(stop), "s"),
        *latency_figures(section, backend, "raw PK session.get over the Unix socket", pk_reads),
    ]


async def bench_cache_strategies(bench: Bench) -> list[Figure]:
    """Section 4's five strategies on PostgreSQL + Redis (SQLite + fakeredis without them): each
    strategy's hit against a raw redis.asyncio GET of the same key, interleaved, then one
    comparison run: a Zipf workload (s = 1.1, 50 users) with 10% of operations writes (11 per 100
    reads), 32 concurrent readers and a 5 s TTL."""
    redis_name = "redis" if "redis" in bench.urls else "fakeredis"
    target = (RedisTarget("server", "bench", "bench", bench.urls["redis"]) if redis_name == "redis"
              else RedisTarget("embedded", "fakeredis", "bench"))
    db_name = "postgresql" if "postgresql" in bench.databases else "sqlite"
    db, pair = bench.databases[db_name], f"{db_name}+{redis_name}"
    alex, _ = await run_db_setup_and_create_user(db)
    figures = []
    for n, strategy_class in enumerate(STRATEGIES):
        client = cache_client(target, fake_server=bench.fake_server)
        strategy = strategy_class(sessions=db.sessions, cache=RedisCache(client, prefix=f"{bench.key_prefix}s{n}:"))
        await strategy.read(alex.id)
        raw = (aioredis.Redis.from_url(target._real_url, decode_responses=True) if redis_name == "redis"
               else fakeredis.FakeAsyncRedis(server=bench.fake_server, decode_responses=True))
        key = strategy.repo.user_key(alex.id)
        anchor, hits = await timed_alternately(
            lambda raw=raw, key=key: raw.get(key), lambda s=strategy: s.read(alex.id), 1500
        )
        figures.append(Figure("cache-strategies", pair, f"{strategy_class.name}: hit / raw GET (p50)",
                              statistics.median(hits) / statistics.median(anchor), "x"))
        await strategy.close()
        await raw.delete(key)
        await raw.aclose()
        await client.aclose()
    workload = Workload(reads=2000, users=50, skew=1.1, writes_per_100=11, readers=32, ttl_seconds=5, seed=1)
    for r in await compare_strategies(db=db, target=target, fake_server=bench.fake_server,
                                      prefix=bench.key_prefix, workload=workload):
        figures += [
            Figure("cache-strategies", pair, f"{r.name}: hit ratio", r.hit_ratio, ""),
            Figure("cache-strategies", pair, f"{r.name}: reads that loaded from the database", r.read_loads, "reads"),
            Figure("cache-strategies", pair, f"{r.name}: database statements (all)", r.statements, "statements"),
            Figure("cache-strategies", pair, f"{r.name}: stale reads (checked against the database)", r.stale_reads, "reads"),
            Figure("cache-strategies", pair, f"{r.name}: reads failed open", r.errors, "reads"),
            Figure("cache-strategies", pair, f"{r.name}: read p50", r.p50_ms, "ms"),
            Figure("cache-strategies", pair, f"{r.name}: read p99", r.p99_ms, "ms"),
            Figure("cache-strategies", pair, f"{r.name}: Redis commands", r.redis_commands, "commands"),
        ]
        if r.unflushed_at_end is not None:
            figures.append(Figure("cache-strategies", pair, f"{r.name}: acknowledged writes not in the database at the end",
                                  r.unflushed_at_end, "users"))
    return figures


SERVER_CORE = "0"  # `taskset -c 0`: the served app gets one core; the harness runs on the other


def room_pairs(bench: Bench) -> dict[str, str]:
    """Backend pair name -> Redis URL; the database is made fresh for each run."""
    pairs = {"sqlite+fakeredis": "fakeredis://"}
    if "postgresql" in bench.urls:
        pairs["postgresql+redis" if "redis" in bench.urls else "postgresql+fakeredis"] = bench.urls.get("redis", "fakeredis://")
    return pairs


async def fresh_database(stack: AsyncExitStack, bench: Bench, pair: str) -> str:
    if pair.startswith("sqlite"):
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        return f"sqlite+aiosqlite:///{Path(folder) / 'room.db'}"
    return await stack.enter_async_context(scratch_postgres(bench.urls["postgresql"], "lab_room"))


def harness_on_the_other_core() -> set[int]:
    """Pin this process (the harness) off the server's core; returns the old affinity."""
    before = os.sched_getaffinity(0)
    others = before - {int(SERVER_CORE)}
    if others:
        os.sched_setaffinity(0, others)
    return before


async def bench_room(bench: Bench) -> list[Figure]:
    """A room without browsers (harness/room.py): `streamlit run app.py` pinned to one core
    (`taskset -c 0`) on a fresh database of each backend pair, and 30, then 100 learners that
    speak Streamlit's websocket protocol, arriving 0.1 s apart and each waiting a think time
    (uniform in bench.room_think) before every click. A click's time is from its rerun request
    to the end of the page's run, as the harness receives it: the server's work, no rendering.
    Any learner's error, and any row not as the learners made it, fails the bench."""
    from harness import room
    from harness.served import app_subprocess_env, save_server_log, served_app

    figures = []
    for pair, redis_url in room_pairs(bench).items():
        for learners in bench.room_learners:
            async with AsyncExitStack() as stack:
                db_url = await fresh_database(stack, bench, pair)
                env = app_subprocess_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url,
                                          "LAB_REDIS_PREFIX": f"{bench.key_prefix}room{learners}:"})
                log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                affinity = harness_on_the_other_core()
                try:
                    with served_app(env, log_dir, prefix=("taskset", "-c", SERVER_CORE)) as app:
                        cpu_before = room.process_cpu_seconds(app.process.pid)
                        run = await room.run_room(app.url, learners=learners, think=bench.room_think, timeout=120)
                        server_cpu = room.process_cpu_seconds(app.process.pid) - cpu_before
                        rss = room.process_rss_mib(app.process.pid)
                        log = save_server_log(app, f"room-{pair}-{learners}") if run.errors else None
                finally:
                    os.sched_setaffinity(0, affinity)
                mismatches = await room.check_database(db_url, run.walked)
            label = f"{pair}, {learners} learners"
            figures += room_figures(bench, "room", label, run, mismatches, log, {"server": (server_cpu, rss, run.clicks)})
    return figures


def room_figures(bench: Bench, section: str, label: str, run, mismatches: list[str], log, servers: dict) -> list[Figure]:
    """The figures of one room run; its failures go to bench.failures. `servers`: name -> (CPU
    seconds spent during the walk, RSS after it in MiB, the clicks it answered)."""
    from harness import room

    for problem in run.errors + [f"database: {m}" for m in mismatches]:
        bench.failures.append(f"{section} {label}: {problem}")
    if log:
        bench.failures.append(f"{section} {label}: server log {log}")
    done = [c.seconds for c in run.clicks if c.ok]
    figures = [
        Figure(section, label, "clicks (rerun requests) answered", len(done), "clicks"),
        Figure(section, label, "learners with an error", len(run.errors), "learners"),
        Figure(section, label, "database rows not as the learners made them", len(mismatches), "checks"),
        Figure(section, label, "think time before each click, min", bench.room_think[0], "s"),
        Figure(section, label, "think time before each click, max", bench.room_think[1], "s"),
        Figure(section, label, "all learners' walk, wall time", run.seconds, "s"),
        # Not failures: a read that misses the cache's 50 ms budget (or finds every pooled connection
        # busy) is served from the database, as designed. On an overloaded core this counts them.
        Figure(section, label, "warnings on section 4's clicks (Redis late or not answering: read from the database)",
               sum(len(me.degraded) for me in run.walked), "warnings"),
        Figure(section, label, "traffic-run reads that failed open", sum(me.traffic_errors for me in run.walked), "reads"),
    ]
    for name, (cpu, rss, clicks) in servers.items():
        answered = sum(click.ok for click in clicks)
        figures += [
            Figure(section, label, f"{name} CPU busy (% of one core)", 100 * cpu / run.seconds, "%"),
            Figure(section, label, f"{name} CPU per click it answered", 1000 * cpu / max(answered, 1), "ms"),
            Figure(section, label, f"{name} memory (RSS) after the walk", rss, "MiB"),
        ]
    if done:
        figures += [Figure(section, label, f"click to script finished p{q}", room.percentile(done, q) * 1000, "ms")
                    for q in (50, 95, 99)]
    for action, samples in sorted(run.by_action().items()):
        figures += [Figure(section, label, f"  {action} p{q}", room.percentile(samples, q) * 1000, "ms")
                    for q in (50, 95)]
    return figures


async def bench_room_proxy(bench: Bench) -> list[Figure]:
    """The room through nginx (deploy/nginx-lab2.conf, harness/proxy.py) in front of two
    `streamlit run app.py` processes sharing one fresh PostgreSQL database and the Redis server,
    each running its own publisher. Nothing is pinned: the two processes, nginx and the harness
    share the machine's cores. The same walk and figures as `room`, per process, plus how many
    learners nginx sent to each; any learner's error or wrong row fails the bench."""
    from harness import room
    from harness.proxy import COOKIE, proxied
    from harness.served import app_subprocess_env, save_server_log, served_app

    if "postgresql" not in bench.urls or "redis" not in bench.urls:
        bench.failures.append("room_proxy: needs a PostgreSQL and a Redis server (LAB_TEST_DATABASE_URL, LAB_TEST_REDIS_URL)")
        return []
    figures = []
    for learners in bench.room_learners:
        async with AsyncExitStack() as stack:
            db_url = await fresh_database(stack, bench, "postgresql")
            env = app_subprocess_env({"DATABASE_URL": db_url, "REDIS_URL": bench.urls["redis"],
                                      "LAB_REDIS_PREFIX": f"{bench.key_prefix}proxy{learners}:"})
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            with served_app(env, folder) as one, served_app(env, folder) as two, \
                    proxied([one.url, two.url], folder / "nginx") as proxy:
                apps = {"app1": one, "app2": two}
                cpu_before = {name: room.process_cpu_seconds(app.process.pid) for name, app in apps.items()}
                run = await room.run_room(proxy.url, learners=learners, think=bench.room_think, timeout=120)
                servers = {f"process {name}": (room.process_cpu_seconds(app.process.pid) - cpu_before[name],
                                               room.process_rss_mib(app.process.pid),
                                               [c for me in run.walked if me.cookies.get(COOKIE) == name for c in me.clicks])
                           for name, app in apps.items()}
                websockets = proxy.websockets_by_app(expected=learners)
                log = [save_server_log(app, f"room-proxy-{name}-{learners}") for name, app in apps.items()] if run.errors else None
            mismatches = await room.check_database(db_url, run.walked)
        label = f"postgresql+redis, 2 processes, {learners} learners"
        figures += room_figures(bench, "room_proxy", label, run, mismatches, log, servers)
        figures += [Figure("room_proxy", label, f"learners nginx sent to {name}", websockets.get(name, 0), "learners")
                    for name in apps]
    return figures


async def _spawn_seconds(argv: list[str], cgroup: bool = False) -> float:
    """Seconds from spawning argv until it exits; with cgroup, through the exercises' launcher
    into a cgroup of its own (made and removed around it), as a graded run starts."""
    from exercises import sandbox
    from exercises.child_process import HERE

    group = sandbox.RunCgroup(sandbox.capabilities().cgroup, f"{os.getpid()}-bench", sandbox.Limits()) \
        if cgroup and sandbox.capabilities().cgroup else None
    began = time.perf_counter()
    if cgroup:
        plan = {"cgroups": group.procs_files if group else [], "nice": 10, "argv": argv,
                "rlimits": sandbox.rlimits(sandbox.Limits(), cgroup=group is not None)}
        argv = [str(sandbox.interpreter()), "-I", "-S", str(HERE / "launch.py"), json.dumps(plan)]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL)
    await process.wait()
    seconds = time.perf_counter() - began
    if group is not None:
        group.remove()
    return seconds


async def bench_exercises(bench: Bench, rounds: int = 3, starts: int = 10) -> list[Figure]:
    """Learner code graded in the sandbox (exercises/), on an exercise cluster of its own in a
    temporary folder: its first start (initdb, migrations, the seeded template); the sandbox's
    start-up against a bare `python -c pass` of the same interpreter (medians of `starts`,
    alternating); then, per exercise, the answer key graded `rounds` times: the time from the
    start of grading to the results (target: at most 3 s), and the sandboxed interpreter's start up
    to its first answer (it imports SQLAlchemy, asyncpg and redis)."""
    import exercises
    from exercises import sandbox
    from exercises.child_process import support_folder
    from exercises.cluster import ExerciseCluster

    caps, section = sandbox.capabilities(), "exercises"
    where = "bubblewrap" if caps.os_sandbox else "no bubblewrap"
    python = str(sandbox.interpreter())
    boxed = sandbox.bwrap_command(lab=support_folder(), sockets={}, limits=sandbox.Limits(), packages=[],
                                  argv=[python, "-I", "-S", "-c", "pass"], env={"PATH": "/usr/bin:/bin"}) \
        if caps.os_sandbox else [python, "-I", "-S", "-c", "pass"]
    bare, isolated, sandboxed = [], [], []
    load = os.getloadavg()[0]
    for _ in range(starts):
        bare.append(await _spawn_seconds([python, "-c", "pass"]))
        isolated.append(await _spawn_seconds([python, "-I", "-S", "-c", "pass"]))
        sandboxed.append(await _spawn_seconds(boxed, cgroup=True))
    figures = [
        Figure(section, "-", "load average over the last minute, at the start", load, ""),
        Figure(section, "-", f"python -c pass, bare (median of {starts})", statistics.median(bare) * 1000, "ms"),
        Figure(section, "-", f"python -I -S -c pass, bare: the sandbox's flags (median of {starts})",
               statistics.median(isolated) * 1000, "ms"),
        Figure(section, where, f"python -I -S -c pass in the sandbox: launcher, cgroup, {where} (median of {starts})",
               statistics.median(sandboxed) * 1000, "ms"),
        Figure(section, where, "  sandboxed / bare python -c pass", statistics.median(sandboxed) / statistics.median(bare), "x"),
        Figure(section, where, "  sandboxed / bare with the same flags",
               statistics.median(sandboxed) / statistics.median(isolated), "x"),
    ]
    with tempfile.TemporaryDirectory(prefix="lab2-bench-exercises-") as folder:
        cluster = ExerciseCluster(Path(folder))
        try:
            began = time.perf_counter()
            await cluster.ensure_ready()
            figures.append(Figure(section, "embedded postgresql", "exercise cluster's first start (initdb, migrations, "
                                  "seeded template)", time.perf_counter() - began, "s"))
            for exercise in exercises.catalogue():
                grades = [await exercises.grade(exercise.id, exercise.answer_key, cluster=cluster) for _ in range(rounds)]
                for grade in grades:
                    if not grade.passed:
                        bench.failures.append(f"exercises: the answer key of {exercise.id} failed: {grade.message}")
                pair = f"embedded postgresql+{grades[0].redis}" if grades[0].redis else "embedded postgresql"
                figures += [
                    Figure(section, pair, f"{exercise.id}: grading start to results (median of {rounds})",
                           statistics.median(g.seconds for g in grades), "s"),
                    Figure(section, pair, f"{exercise.id}: slowest of {rounds}", max(g.seconds for g in grades), "s"),
                    Figure(section, pair, f"{exercise.id}: sandboxed interpreter ready, imports included (median)",
                           statistics.median(g.start_seconds for g in grades) * 1000, "ms"),
                ]
        finally:
            await asyncio.to_thread(cluster.stop)
    return figures


async def bench_exercise_room(bench: Bench) -> list[Figure]:
    """A room pressing "Run checks" at once (harness/exercise_room.py): `streamlit run app.py` on a
    fresh SQLite file + fakeredis (the learners' rows; their code runs on the exercise cluster in
    data/exercises), the first of --learners learners (30 by default) on section 3 with the answer key
    in the editor, all clicking together, and 3 bystanders rerunning section 1 (no code run) before
    and during the rush. Not pinned to a core: the sandboxes are the app's children and would share
    its core. Any learner's error, a result that is not a pass, or a stored attempt that is not the
    run fails the bench."""
    import exercises
    from exercises.runqueue import default_slots
    from harness import exercise_room, room
    from harness.served import app_subprocess_env, save_server_log, served_app

    learners, section = bench.room_learners[0], "exercise_room"
    code = exercises.get(exercise_room.EXERCISE).answer_key
    async with AsyncExitStack() as stack:
        db_url = await fresh_database(stack, bench, "sqlite")
        db = Database(db_url)
        await run_db_setup_and_create_user(db)
        await db.dispose()
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env = app_subprocess_env({"DATABASE_URL": db_url, "REDIS_URL": "fakeredis://",
                                  "LAB_REDIS_PREFIX": f"{bench.key_prefix}exroom:"})
        with served_app(env, log_dir) as app:
            run = await exercise_room.rush(app.url, app.process.pid, learners=learners, code=code, bystanders=3,
                                           before=20)
            log = save_server_log(app, "exercise-room") if run.errors else None
        stored = await exercise_room.stored_attempts(db_url, run.walked)
    label = f"sqlite+fakeredis, {learners} learners"
    for problem in run.errors + [f"bystander {b.number}: {b.error}" for b in run.bystanders if b.error]:
        bench.failures.append(f"{section}: {problem}")
    if log:
        bench.failures.append(f"{section}: server log {log}")
    bench.failures += [f"{section}: learner {me.number} did not pass" for me in run.walked if not me.error and not me.passed]
    bench.failures += [f"{section}: learner {n}'s attempt is not stored as run" for n, attempt in stored.items()
                       if attempt is None or (attempt.runs, attempt.passed) != (1, True)]
    results = [me.results_seconds for me in run.walked if not me.error]
    before = [s for b in run.bystanders for s in b.before]
    during = [s for b in run.bystanders for s in b.during]
    told = [me for me in run.walked if me.places]
    figures = [
        Figure(section, label, "learners with an error", len(run.errors), "learners"),
        Figure(section, label, "runs at a time (the queue's bound, LAB_EXERCISE_SLOTS or cores // 2)", default_slots(), "runs"),
        Figure(section, label, "most sandboxes running at once, counted among the server's children", run.sandboxes_at_once,
               "runs"),
        Figure(section, label, f"sandboxes' nice value (the app's: {run.server_nice})", max(run.sandbox_nice, default=0), ""),
        Figure(section, label, "click to the last learner's results", run.seconds, "s"),
        Figure(section, label, "learners told their place in line", len(told), "learners"),
        Figure(section, label, "largest place in line shown", max((me.places[0] for me in told), default=0), "place"),
        Figure(section, label, "learners whose results came in a later page run (over 120 s)",
               sum(me.page_runs > 1 for me in run.walked), "learners"),
        Figure(section, label, "first expected wait shown to a waiting learner (median)",
               statistics.median(me.expected_waits[0] for me in told) if told else 0, "s"),
        Figure(section, label, "time that learner then waited, as the page printed it (median)",
               statistics.median(me.waited_seconds for me in told) if told else 0, "s"),
        Figure(section, label, "one run, as the page printed it (median)",
               statistics.median(me.graded_seconds - me.waited_seconds for me in run.walked if not me.error), "s"),
    ]
    if results:
        figures += [Figure(section, label, f"click to results p{q}", room.percentile(results, q), "s") for q in (50, 95)]
        figures.append(Figure(section, label, "click to results, slowest", max(results), "s"))
    if before and during:
        for name, samples in (("before the rush", before), ("during the rush", during)):
            figures += [Figure(section, label, f"bystanders' rerun of section 1 {name} p{q}",
                               room.percentile(samples, q) * 1000, "ms") for q in (50, 95)]
        figures.append(Figure(section, label, "  bystanders' rerun p50, during / before",
                              statistics.median(during) / statistics.median(before), "x"))
    return figures


async def bench_reruns(bench: Bench) -> list[Figure]:
    """What one rerun of each page costs the server: `streamlit run app.py` on SQLite +
    fakeredis pinned to one core, one session (harness/room.py) initialises, opens each page,
    then reruns it 20 times with nothing changed; the server process's CPU time (all threads)
    divided by 20, and the median request-to-finished time. The anchor: harness/bare_page.py,
    served on the same core, rerun as often in alternating rounds with as many elements as the
    page sent; what the page costs above it is the page's own code (queries, rendering)."""
    from harness import room
    from harness.served import app_subprocess_env, served_app

    figures = []
    pinned = ("taskset", "-c", SERVER_CORE)
    with tempfile.TemporaryDirectory() as folder:
        env = app_subprocess_env({"DATABASE_URL": f"sqlite+aiosqlite:///{Path(folder) / 'reruns.db'}",
                                  "REDIS_URL": "fakeredis://", "LAB_REDIS_PREFIX": f"{bench.key_prefix}reruns:"})
        affinity = harness_on_the_other_core()
        try:
            with (served_app(env, Path(folder), prefix=pinned) as app,
                  served_app(env, Path(folder), prefix=pinned, script="harness/bare_page.py") as bare):
                costs = await room.page_rerun_costs(app.url, app.process.pid, bare=(bare.url, bare.process.pid))
                alembic_info = app.log().count("INFO  [alembic")
        finally:
            os.sched_setaffinity(0, affinity)
    for cost in costs:
        figures += [
            Figure("reruns", "sqlite+fakeredis", f"{cost.page}: server CPU per rerun", cost.cpu_seconds * 1000, "ms"),
            Figure("reruns", "sqlite+fakeredis", f"{cost.page}: elements sent per rerun", cost.deltas, ""),
            Figure("reruns", "sqlite+fakeredis", f"{cost.page}: bare page with as many elements, CPU per rerun",
                   cost.bare_cpu_seconds * 1000, "ms"),
            Figure("reruns", "sqlite+fakeredis", f"{cost.page}: page / bare page", cost.cpu_seconds / cost.bare_cpu_seconds, "x"),
            Figure("reruns", "sqlite+fakeredis", f"{cost.page}: rerun p50", cost.wall_p50 * 1000, "ms"),
        ]
    figures.append(Figure("reruns", "sqlite+fakeredis", "Alembic INFO lines in the server log", alembic_info, "lines"))
    return figures


SECTIONS: dict[str, Callable[[Bench], Awaitable[list[Figure]]]] = {
    "anchors": bench_anchors,
    "n_plus_one": bench_n_plus_one,
    "pooling": bench_pooling,
    "cache": bench_cache,
    "cache-strategies": bench_cache_strategies,
    "outbox": bench_outbox,
    "relays": bench_relays,
    "embedded_postgres": bench_embedded_postgres,
    "reruns": bench_reruns,
}
ON_REQUEST = {"load": bench_load, "room": bench_room, "room_proxy": bench_room_proxy}  # named with --only; not part of the default run
ON_REQUEST["exercises"] = bench_exercises  # named with --only; not part of the default run
ON_REQUEST["exercise_room"] = bench_exercise_room  # named with --only; not part of the default run


# --- running -----------------------------------------------------------------------------


async def open_backends(stack: AsyncExitStack, bench: Bench, pg_url: str | None, redis_url: str | None) -> None:
    tmp = stack.enter_context(tempfile.TemporaryDirectory())
    bench.urls["sqlite"] = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
    if pg_url:
        bench.urls["postgresql"] = await stack.enter_async_context(scratch_postgres(pg_url, "lab_bench"))
    for name, url in bench.urls.items():
        db = Database(url)
        await db.upgrade_to_head()
        stack.push_async_callback(db.dispose)
        bench.databases[name] = db
    bench.redis["fakeredis"] = fakeredis.FakeAsyncRedis(server=bench.fake_server, decode_responses=True)
    if redis_url:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        bench.redis["redis"] = client
        bench.urls["redis"] = redis_url

        async def cleanup() -> None:
            keys = [k async for k in client.scan_iter(match=bench.key_prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

        stack.push_async_callback(cleanup)


async def main(args: argparse.Namespace) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    async with AsyncExitStack() as stack:
        bench = Bench(load_sessions=args.sessions, room_learners=tuple(args.learners), room_think=tuple(args.think))
        await open_backends(stack, bench, args.pg, args.redis)
        for name in args.only or SECTIONS:
            print(f"# {name} ...", file=sys.stderr, flush=True)
            figures += await (SECTIONS | ON_REQUEST)[name](bench)
    return figures, bench.failures


def print_table(figures: list[Figure]) -> None:
    rows = [("section", "backend", "metric", "value", "unit")]
    rows += [(f.section, f.backend, f.metric, f"{f.value:.3f}", f.unit) for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS | ON_REQUEST), help="run these sections only")
    parser.add_argument("--sessions", type=int, default=30, help="load: learners at once (default 30)")
    parser.add_argument("--learners", type=int, nargs="+", default=[30, 100], help="room: learners per run (default 30 100)")
    parser.add_argument("--think", type=float, nargs=2, default=[2.0, 6.0], metavar=("MIN", "MAX"),
                        help="room: seconds a learner waits before each click, uniform (default 2 6)")
    parser.add_argument("--pg", default=os.environ.get("LAB_TEST_DATABASE_URL"), help="PostgreSQL admin URL")
    parser.add_argument("--redis", default=os.environ.get("LAB_TEST_REDIS_URL"), help="Redis server URL")
    arguments = parser.parse_args()
    results, failures = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps([asdict(f) for f in results], indent=2))
    else:
        print_table(results)
    for failure in failures:
        print(f"# FAILED {failure}", file=sys.stderr)
    if failures:
        sys.exit(f"# {len(failures)} failure(s): the figures above are not a clean run")
