"""Cache-aside on Redis, on SQLite + fakeredis and on PostgreSQL + the real Redis: hits and
misses reported by the cache itself, invalidation on write, single flight, and failing open."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import delete, func, select

from harness.private_redis import private_redis
from labbench.cache_inspect import inspect_key
from labbench.cache_traffic import ensure_latest_score, run_traffic, traffic_users
from labbench.recorder import record
from labbench.unreachable_redis import unreachable_redis
from source import (
    AIRScore,
    CachedUserRepository,
    CacheStats,
    Database,
    InvalidInput,
    RedisCache,
    run_db_setup_and_create_user,
)
from source.cache import TOMBSTONE_SECONDS, cache_client
from source.cached_repository import UserData
from source.redis_setup import RedisTarget, make_redis_client
from source.repositories import UserRepository

COOLDOWN = 0.2  # seconds a failed Redis is skipped in these tests (the app uses 1 s)
BOUND = 0.25  # a read while Redis is down, generously; redis-py's defaults take seconds or hang


@pytest.fixture
def redis_kind(backend) -> str:
    """The pairs the lab runs on: SQLite with fakeredis, PostgreSQL with the real Redis."""
    return "fakeredis" if backend == "sqlite" else "redis"


@pytest.fixture
async def cache(redis_client, redis_target, fake_server, key_prefix):
    """A cache on the app's own client settings (50 ms timeouts, no retries, bounded pool)."""
    client = cache_client(redis_target, fake_server=fake_server)
    yield RedisCache(client, prefix=key_prefix, cooldown_seconds=COOLDOWN)
    await client.aclose()


@pytest.fixture
async def users(db):
    return await run_db_setup_and_create_user(db)


@pytest.fixture
def jane(users):
    return users[1]


def repository(db, cache, stats: CacheStats | None = None) -> CachedUserRepository:
    return CachedUserRepository(sessions=db.sessions, cache=cache, stats=stats)


# --- reads ---------------------------------------------------------------------------------


async def test_first_read_misses_and_loads_from_the_database_then_hits(db, cache, jane):
    repo = repository(db, cache)
    with record(db) as first_sql:
        first = await repo.get_by_id_cached(jane.id)
    with record(db) as second_sql:
        second = await repo.get_by_id_cached(jane.id)
    assert (first.outcome, first.loaded, first_sql.count) == ("miss", True, 1)
    assert (second.outcome, second.loaded, second_sql.count) == ("hit", False, 0)
    assert second.value == first.value and second.value.name == "Jane Doe"
    counts = cache.stats.snapshot()
    assert (counts.hits, counts.misses, counts.errors, counts.db_loads) == (1, 1, 0, 1)
    assert counts.hit_ratio == 0.5 and counts.t_cache > 0 and counts.t_database > 0


async def test_stores_json_under_the_lab_prefix_with_a_jittered_ttl(db, cache, redis_client, key_prefix, jane):
    repo = repository(db, cache)
    await repo.get_by_id_cached(jane.id)
    key = repo.user_key(jane.id)
    assert key.startswith(key_prefix)
    raw = await redis_client.get(key)
    assert json.loads(raw)["email"] == "jane.doe@innovateai.com"
    assert 0.9 * 300 - 1 <= await redis_client.ttl(key) <= 1.1 * 300
    state = await inspect_key(cache.client, key)
    assert state.raw == raw and state.ttl_seconds is not None
    assert len({cache.ttl_for(object()) for _ in range(50)}) > 5  # expiries are spread


async def test_the_latest_score_is_cached_too(db, cache, jane):
    repo = repository(db, cache)
    await repo.add_score(jane.id, occupation_code="15-2051")
    first, second = [await repo.get_latest_score_cached(jane.id) for _ in range(2)]
    assert (first.outcome, second.outcome) == ("miss", "hit")
    assert second.value == first.value and second.value.user_id == jane.id


async def test_an_unknown_user_is_cached_briefly_as_missing(db, cache, redis_client):
    repo = repository(db, cache)
    unknown = "00000000-0000-4000-8000-000000000000"
    first, second = [await repo.get_by_id_cached(unknown) for _ in range(2)]
    assert (first.outcome, first.value, second.outcome, second.value) == ("miss", None, "hit", None)
    assert await redis_client.ttl(repo.user_key(unknown)) <= 1.1 * 30


async def test_a_malformed_id_is_refused_before_redis_or_the_database(db, cache, redis_client, key_prefix):
    with record(db) as sql, pytest.raises(InvalidInput, match="not a valid user ID"):
        await repository(db, cache).get_by_id_cached("42; DROP TABLE users")
    assert sql.count == 0 and cache.stats.snapshot().requests == 0
    assert [key async for key in redis_client.scan_iter(match=f"{key_prefix}*")] == []


async def test_an_unreadable_entry_is_treated_as_a_miss_and_replaced(db, cache, redis_client, jane):
    repo = repository(db, cache)
    await redis_client.set(repo.user_key(jane.id), '{"not": "a user"}')
    lookup = await repo.get_by_id_cached(jane.id)
    assert lookup.outcome == "miss" and lookup.value.name == "Jane Doe"
    assert json.loads(await redis_client.get(repo.user_key(jane.id)))["name"] == "Jane Doe"


# --- writes keep the cache true ------------------------------------------------------------


async def test_updating_a_user_invalidates_the_cached_user(db, cache, redis_client, jane):
    repo = repository(db, cache)
    await repo.get_by_id_cached(jane.id)
    updated, invalidation = await repo.update_user(jane.id, years_experience=9)
    assert invalidation.removed == 1
    state = await inspect_key(cache.client, repo.user_key(jane.id))
    assert state.tombstone and state.raw is None and 0 < state.ttl_seconds <= TOMBSTONE_SECONDS
    after = await repo.get_by_id_cached(jane.id)
    assert after.outcome == "miss" and after.value.years_experience == 9 == updated.years_experience
    assert after.stored and (await repo.get_by_id_cached(jane.id)).outcome == "hit"  # it replaced the tombstone


async def test_concurrent_updates_of_one_user_all_commit(db, cache, jane):
    """Each update reads the user, then writes. On SQLite a deferred transaction whose snapshot
    went stale while another update committed fails at once with "database is locked" (the room
    harness met it in the traffic run's midway update); the update takes the write lock at BEGIN."""
    repo = repository(db, cache)
    results = await asyncio.gather(*(repo.update_user(jane.id, years_experience=n) for n in range(1, 21)),
                                   return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert (await repo.get_by_id_cached(jane.id)).value.years_experience in range(1, 21)


async def test_adding_a_score_invalidates_the_cached_latest_score(db, cache, jane):
    repo = repository(db, cache)
    await repo.add_score(jane.id, occupation_code="15-2051")
    before = await repo.get_latest_score_cached(jane.id)
    newer, _ = await repo.add_score(jane.id, occupation_code="15-2051")
    after = await repo.get_latest_score_cached(jane.id)
    assert after.outcome == "miss" and after.value.id == newer.id != before.value.id


async def test_invalidate_user_cache_deletes_the_user_and_the_latest_score(db, cache, jane):
    repo = repository(db, cache)
    await repo.add_score(jane.id, occupation_code="15-2051")
    await repo.get_by_id_cached(jane.id)
    await repo.get_latest_score_cached(jane.id)
    assert (await repo.invalidate_user_cache(jane.id)).removed == 2
    assert (await repo.invalidate_user_cache(jane.id)).removed == 0  # tombstones are not values
    user, score = await repo.get_by_id_cached(jane.id), await repo.get_latest_score_cached(jane.id)
    assert (user.outcome, score.outcome) == ("miss", "miss")


async def test_a_bad_update_writes_nothing_and_keeps_the_cache(db, cache, jane):
    repo = repository(db, cache)
    await repo.get_by_id_cached(jane.id)
    with pytest.raises(InvalidInput):
        await repo.update_user(jane.id, years_experience=500)
    again = await repo.get_by_id_cached(jane.id)
    assert again.outcome == "hit" and again.value.years_experience == 5.0


async def test_a_load_that_began_before_a_write_does_not_store_the_old_row(db, cache, redis_client, jane):
    old = UserData.from_model(jane)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> UserData:
        started.set()
        await release.wait()
        return old

    key = repository(db, cache).user_key(jane.id)
    reader = asyncio.create_task(cache.read_through(key, load=slow_load, kind=UserData))
    await started.wait()
    await cache.invalidate(key)  # a write committed while the reader was loading
    release.set()
    lookup = await reader
    assert lookup.value == old  # the reader gets what it read...
    assert not lookup.stored and "invalidated" in lookup.not_stored  # ...but does not put it back
    assert (await inspect_key(cache.client, key)).tombstone


class OtherProcessReader:
    """A cached read of one user, in another process, whose load has read the row and waits
    for `go`. On PostgreSQL + Redis it is a real second process (tests/cache_race_reader.py);
    the embedded fakeredis lives inside one process, so there it is a second RedisCache on the
    same fake server, sharing nothing in memory with the test's cache (no single flight, no
    in-process stale flag): what another process would share, which is only Redis."""

    @classmethod
    async def start(cls, *, redis_kind, db, db_url, redis_target, fake_server, key_prefix, user_id):
        self = cls()
        if redis_kind == "redis":
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).with_name("cache_race_reader.py")),
                db_url, redis_target._real_url, key_prefix, user_id,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            assert (await asyncio.wait_for(self.proc.stdout.readline(), 30)).strip() == b"loaded"
            return self
        self.proc, self.client = None, cache_client(redis_target, fake_server=fake_server)
        other = RedisCache(self.client, prefix=key_prefix)
        loaded, self.go = asyncio.Event(), asyncio.Event()

        async def load() -> UserData:
            async with db.sessions() as session:
                row = UserData.from_model(await UserRepository(session).get_existing(user_id))
            loaded.set()
            await self.go.wait()
            return row

        key = CachedUserRepository(sessions=db.sessions, cache=other).user_key(user_id)
        self.task = asyncio.create_task(other.read_through(key, load=load, kind=UserData))
        await loaded.wait()
        return self

    async def finish(self) -> dict:
        if self.proc is not None:
            out, _ = await asyncio.wait_for(self.proc.communicate(b"go\n"), 30)
            assert self.proc.returncode == 0
            return json.loads(out.splitlines()[-1])
        self.go.set()
        lookup = await self.task
        await self.client.aclose()
        return {"outcome": lookup.outcome, "loaded": lookup.loaded, "stored": lookup.stored,
                "not_stored": lookup.not_stored, "years_experience": lookup.value.years_experience}


async def test_a_reader_in_another_process_that_loaded_the_old_row_does_not_store_it(
    db, db_url, cache, redis_kind, redis_target, fake_server, key_prefix, jane
):
    repo = repository(db, cache)
    other = await OtherProcessReader.start(
        redis_kind=redis_kind, db=db, db_url=db_url, redis_target=redis_target, fake_server=fake_server,
        key_prefix=key_prefix, user_id=jane.id,
    )  # it missed and has read years_experience 5 from the database
    _, invalidation = await repo.update_user(jane.id, years_experience=21)  # commit, then invalidate
    seen = await other.finish()
    assert (seen["outcome"], seen["loaded"], seen["years_experience"]) == ("miss", True, 5.0)
    assert not seen["stored"] and seen["not_stored"].startswith("the key changed")  # Redis refused it
    after = await repo.get_by_id_cached(jane.id)
    assert after.outcome == "miss" and after.value.years_experience == 21 and after.stored


# --- single flight -------------------------------------------------------------------------


def count_commands(cache, monkeypatch) -> list[str]:
    """The names of the commands the cache's client sends (pipelines excepted), as sent."""
    sent, real = [], cache.client.execute_command

    async def counted(*args, **options):
        sent.append(str(args[0]).upper())
        return await real(*args, **options)

    monkeypatch.setattr(cache.client, "execute_command", counted)
    return sent


async def test_a_hundred_concurrent_misses_send_one_get_and_load_from_the_database_once(db, cache, jane, monkeypatch):
    repo = repository(db, cache)
    sent = count_commands(cache, monkeypatch)
    with record(db) as sql:
        lookups = await asyncio.gather(*(repo.get_by_id_cached(jane.id) for _ in range(100)))
    assert sql.count == 1 and sent.count("GET") == 1
    assert sum(lookup.loaded for lookup in lookups) == 1 == cache.stats.snapshot().db_loads
    # They shared one GET, so the 99 that did not load share its answer: all miss (or, if that
    # one GET missed its 50 ms on a busy machine, all are served from the database); the loader's
    # own outcome is an error instead if its store missed the 50 ms. All get the same row.
    shared = {lookup.outcome for lookup in lookups if not lookup.loaded}
    assert len(shared) == 1 and shared <= {"miss", "error"}
    assert all(lookup.value == lookups[0].value for lookup in lookups)
    assert sum(lookup.stored for lookup in lookups) <= 1


async def test_a_hundred_concurrent_hits_send_one_get(db, cache, jane, monkeypatch):
    repo = repository(db, cache)
    await repo.get_by_id_cached(jane.id)
    sent = count_commands(cache, monkeypatch)
    lookups = await asyncio.gather(*(repo.get_by_id_cached(jane.id) for _ in range(100)))
    assert sent == ["GET"]
    assert len({lookup.outcome for lookup in lookups}) == 1 and lookups[0].outcome in ("hit", "error")
    assert cache.stats.snapshot().requests == 101


async def test_a_read_after_an_invalidation_does_not_join_a_get_sent_before_it(db, cache, jane, monkeypatch):
    repo = repository(db, cache)
    await repo.get_by_id_cached(jane.id)
    real_get = cache.client.get
    asked, answer = asyncio.Event(), asyncio.Event()

    async def slow_get(name):  # Redis answers this GET with the old row, late
        value = await real_get(name)
        asked.set()
        await answer.wait()
        return value

    monkeypatch.setattr(cache.client, "get", slow_get)
    early = asyncio.create_task(repo.get_by_id_cached(jane.id))
    await asked.wait()
    monkeypatch.setattr(cache.client, "get", real_get)
    _, invalidation = await repo.update_user(jane.id, years_experience=12)
    late = await repo.get_by_id_cached(jane.id)  # started after the write: sends its own GET
    answer.set()
    assert (await early).value.years_experience == 5.0  # began before the write: the old row
    assert late.outcome == "miss" and late.value.years_experience == 12 and invalidation.removed == 1


async def test_a_reader_whose_get_ran_before_the_set_shares_the_load_that_landed(cache, jane, monkeypatch):
    loads, loading, finish = [], asyncio.Event(), asyncio.Event()

    async def load() -> UserData:
        loads.append(1)
        loading.set()
        await finish.wait()
        return UserData.from_model(jane)

    key, real_get = f"{cache.prefix}straggler", cache.client.get
    first = asyncio.create_task(cache.read_through(key, load=load, kind=UserData))
    await loading.wait()  # the first reader's GET missed; it is loading
    asked, answer = asyncio.Event(), asyncio.Event()

    async def late_answer(name):  # Redis runs this GET now (a miss); its answer arrives late
        value = await real_get(name)
        asked.set()
        await answer.wait()
        return value

    monkeypatch.setattr(cache.client, "get", late_answer)
    straggler = asyncio.create_task(cache.read_through(key, load=load, kind=UserData))
    await asked.wait()
    monkeypatch.setattr(cache.client, "get", real_get)
    finish.set()
    first = await first  # loads, stores, lands
    answer.set()
    late = await straggler  # it missed too, but before the SET: it takes the landed load
    assert len(loads) == 1 and (first.outcome, late.outcome) == ("miss", "miss")
    assert first.stored and not late.loaded


# --- counters ------------------------------------------------------------------------------


async def test_each_learner_counts_their_own_reads_and_the_cache_counts_everyones(db, cache, jane):
    mine, theirs = CacheStats(), CacheStats()
    await repository(db, cache, mine).get_by_id_cached(jane.id)
    for _ in range(2):
        await repository(db, cache, theirs).get_by_id_cached(jane.id)
    assert (mine.snapshot().misses, mine.snapshot().hits) == (1, 0)
    assert (theirs.snapshot().misses, theirs.snapshot().hits) == (0, 2)
    assert cache.stats.snapshot().requests == 3


async def test_the_formula_uses_the_measured_terms(db, cache, jane):
    repo = repository(db, cache)
    for _ in range(4):
        await repo.get_by_id_cached(jane.id)
    counts = cache.stats.snapshot()
    h, t_cache, t_db = counts.hit_ratio, counts.t_cache, counts.t_database
    assert h == 0.75
    assert counts.t_avg_formula == pytest.approx(h * t_cache + (1 - h) * (t_cache + t_db))
    assert counts.t_avg_measured == pytest.approx(counts.total_seconds / 4)


# --- Redis down: fail open, then recover -----------------------------------------------------


class RedisProxy:
    """A TCP proxy in front of the test Redis: cut() drops every connection and closes new ones
    at once (Redis down), restore() lets them through again. The real server is never touched."""

    def __init__(self, url: str) -> None:
        self.url = urlsplit(url)
        self.up = True
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        auth = self.url.netloc.rpartition("@")[0]
        return urlunsplit(self.url._replace(netloc=f"{auth + '@' if auth else ''}127.0.0.1:{port}"))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(self.url.hostname, self.url.port or 6379)
        self._writers += [writer, upstream_writer]
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def cut(self) -> None:
        self.up = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.server.close()


@dataclass
class Outage:
    cache: RedisCache
    cut: Callable[[], None]
    restore: Callable[[], None]


@pytest.fixture
async def outage(redis_kind, redis_target, redis_client, fake_server, key_prefix):
    """A cache whose Redis the test can take down and bring back: the fake server
    disconnected, or the real one behind a proxy that drops its connections."""
    if redis_kind == "fakeredis":
        client = cache_client(redis_target, fake_server=fake_server)

        def cut() -> None:
            fake_server.connected = False

        def restore() -> None:
            fake_server.connected = True

        yield Outage(RedisCache(client, prefix=key_prefix, cooldown_seconds=COOLDOWN), cut, restore)
    else:
        proxy = RedisProxy(redis_target._real_url)
        url = await proxy.start()
        client = cache_client(RedisTarget("server", "proxy", "test", url))
        yield Outage(RedisCache(client, prefix=key_prefix, cooldown_seconds=COOLDOWN), proxy.cut, proxy.restore)
        proxy.close()
    await client.aclose()


async def test_reads_are_served_from_the_database_while_redis_is_down_and_caching_resumes(db, outage, jane):
    repo = repository(db, outage.cache)
    assert (await repo.get_by_id_cached(jane.id)).outcome == "miss"
    outage.cut()
    during = [await repo.get_by_id_cached(jane.id) for _ in range(5)]
    assert all(lookup.outcome == "error" and lookup.value.name == "Jane Doe" for lookup in during)
    assert all(lookup.seconds < BOUND for lookup in during)
    assert during[1].error.startswith("skipped")  # not asked again until the cooldown is over
    outage.restore()
    await asyncio.sleep(COOLDOWN)
    assert (await repo.get_by_id_cached(jane.id)).outcome == "hit"  # resumed by itself


async def test_a_write_while_redis_is_down_is_not_undone_when_redis_returns(db, outage, jane):
    repo = repository(db, outage.cache)
    await repo.get_by_id_cached(jane.id)
    outage.cut()
    _, invalidation = await repo.update_user(jane.id, years_experience=11)
    assert invalidation.removed is None and invalidation.error
    assert outage.cache.unsent_invalidations == 1
    outage.restore()
    await asyncio.sleep(COOLDOWN)
    after = await repo.get_by_id_cached(jane.id)  # the queued invalidation went first
    assert after.outcome == "miss" and after.value.years_experience == 11
    assert outage.cache.unsent_invalidations == 0


@pytest.mark.parametrize("kind", ["refused", "hung"])
async def test_an_unreachable_redis_costs_at_most_one_client_timeout_per_cooldown(db, jane, key_prefix, kind):
    unreachable = await unreachable_redis(kind)
    client = cache_client(unreachable.target)
    repo = repository(db, RedisCache(client, prefix=key_prefix, cooldown_seconds=COOLDOWN))
    try:
        first, second = [await repo.get_by_id_cached(jane.id) for _ in range(2)]
        await asyncio.sleep(COOLDOWN)
        third = await repo.get_by_id_cached(jane.id)
    finally:
        await client.aclose()
        unreachable.close()
    expected = "ConnectionError" if kind == "refused" else "TimeoutError"
    assert (first.outcome, first.error) == ("error", expected) and first.seconds < BOUND
    assert second.error.startswith("skipped") and second.cache_seconds < first.cache_seconds + 0.01
    assert third.error == expected  # tried again after the cooldown
    assert first.value.name == second.value.name == third.value.name == "Jane Doe"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # the Redis server: fakeredis has no pool
async def test_a_full_pool_fails_one_read_open_without_skipping_redis(db, jane, redis_target, key_prefix):
    """Every connection busy is this process's load, not a failed Redis: the read falls back to
    the database, and the next read asks Redis again instead of skipping it for the cooldown.
    (A pool of 2 and 0.5 s timeouts: the app's 16 and 50 ms would only make the test slower to
    set up on a busy machine.)"""
    client = make_redis_client(redis_target, timeout=0.5, max_connections=2)
    cache = RedisCache(client, prefix=key_prefix, cooldown_seconds=5)
    held = [await client.connection_pool.get_connection() for _ in range(2)]
    try:
        full = await repository(db, cache).get_by_id_cached(jane.id)
    finally:
        for connection in held:
            await client.connection_pool.release(connection)
    try:
        after = await repository(db, cache).get_by_id_cached(jane.id)
    finally:
        await client.aclose()
    assert (full.outcome, full.error, full.value.name) == ("error", "PoolExhausted", "Jane Doe")
    assert after.outcome == "miss" and after.error is None, after  # asked at once, well inside the cooldown


# --- the traffic experiment ----------------------------------------------------------------


async def test_traffic_over_skewed_users_hits_mostly_and_the_update_is_seen(db, cache, redis_kind):
    result = await run_traffic(sessions=db.sessions, cache=cache, users=20, reads=200, skew=1.2, seed=7)
    counts = result.counts
    distinct = len({read.user_rank for read in result.reads})
    assert (counts.requests, counts.errors) == (200, 0)
    # Each user's first read misses; so does the first read of the updated user after the update.
    assert counts.misses == distinct + 1 and counts.hits == 200 - distinct - 1
    after = result.first_read_after_update
    assert after.outcome == "miss" and after.value.years_experience == result.new_years != result.old_years
    assert len(result.database_ms) == 200 and result.p50_database_ms > 0  # the same reads, no cache
    if redis_kind == "redis":
        hits, misses = result.server  # other clients of the shared server may add to these
        assert result.stores == counts.misses  # sequential reads: each miss loaded and stored
        assert hits + misses >= result.key_lookups
    else:
        assert result.server is None  # fakeredis keeps no server statistics


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_the_traffic_runs_key_lookups_are_the_ones_redis_counted(db, key_prefix):
    """Redis counts a lookup for every GET, for the GET inside each store's compare-and-set and for
    the midway write's invalidation (SET ... GET); a tombstone is a key, so reading it is a keyspace
    hit. On a Redis server of this test's own, nobody else's lookups add to them. (Timeouts of 2 s:
    a read that failed open on a busy machine would leave Redis's count uncertain.)"""
    with private_redis() as url:
        client = make_redis_client(RedisTarget("server", "private", "test", url), timeout=2.0, max_connections=16)
        try:
            result = await run_traffic(sessions=db.sessions, cache=RedisCache(client, prefix=key_prefix),
                                       users=20, reads=200, skew=1.1, seed=5, baseline=False)
        finally:
            await client.aclose()
    assert result.counts.errors == 0 and result.invalidated == 1
    assert sum(result.server) == result.key_lookups == 200 + result.stores + 1


async def test_learners_arriving_together_give_the_demo_user_one_score(db, cache, jane):
    repo = repository(db, cache)
    await asyncio.gather(*(ensure_latest_score(repo, user_id=jane.id) for _ in range(10)))
    async with db.sessions() as session:
        scores = await session.scalar(select(func.count()).select_from(AIRScore).where(AIRScore.user_id == jane.id))
    assert scores == 1


@pytest.mark.parametrize("backend", ["postgresql"])  # the app processes behind a proxy share one server
async def test_two_app_processes_arriving_together_give_the_demo_user_one_score(
        db, db_url, redis_target, fake_server, key_prefix, jane):
    """Two event loops on threads, each with an engine and an asyncio lock of its own, stand in for
    two app processes: only the lock in the database keeps them from both adding a score."""
    start = threading.Barrier(2)

    def app_process() -> None:
        async def arrive() -> None:
            other, client = Database(db_url), cache_client(redis_target, fake_server=fake_server)
            try:
                start.wait(timeout=30)
                repo = CachedUserRepository(sessions=other.sessions, cache=RedisCache(client, prefix=key_prefix))
                await ensure_latest_score(repo, user_id=jane.id)
            finally:
                await client.aclose()
                await other.dispose()

        asyncio.run(arrive())

    for _ in range(5):
        await asyncio.gather(asyncio.to_thread(app_process), asyncio.to_thread(app_process))
        async with db.sessions.begin() as session:
            scores = await session.scalar(select(func.count()).select_from(AIRScore).where(AIRScore.user_id == jane.id))
            await session.execute(delete(AIRScore).where(AIRScore.user_id == jane.id))  # the next round starts bare
        assert scores == 1


async def test_traffic_with_unreachable_reads_writes_its_update_to_the_labs_redis(db, cache, key_prefix, jane):
    unreachable = await unreachable_redis("refused")
    client = cache_client(unreachable.target)
    reads = RedisCache(client, prefix=key_prefix, cooldown_seconds=COOLDOWN)
    try:
        result = await run_traffic(
            sessions=db.sessions, cache=reads, users=5, reads=20, skew=1.0, seed=2, writes_to=cache,
        )
    finally:
        await client.aclose()
        unreachable.close()
    assert result.counts.errors == 20  # every read was served from the database
    hottest = (await traffic_users(db.sessions, count=1))[0]
    state = await inspect_key(cache.client, CachedUserRepository(sessions=db.sessions, cache=cache).user_key(hottest))
    assert state.tombstone  # the midway update invalidated the lab's Redis
    assert reads.unsent_invalidations == 0  # and owed nothing to the unreachable one
