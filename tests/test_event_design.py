"""Section 5b's workbench on SQLite + fakeredis and on PostgreSQL + Redis: the generated model code
imports and matches the DDL shown, and each design choice's consequence is measured from the
real components (throwaway tables and keys, gone afterwards)."""

from __future__ import annotations

import itertools
import types

import pytest
from sqlalchemy import inspect, text

from labbench import dual_write, event_design, event_table, relay_wake
from labbench.event_table import Design
from labbench.pubsub_vs_streams import pubsub_vs_streams
from source import Database

DESIGNS = [Design(*choice) for choice in itertools.product((True, False), repeat=3)]


@pytest.fixture
def redis_kind(backend):
    """Pairs each database with its Redis: SQLite with fakeredis, PostgreSQL with the server."""
    return "fakeredis" if backend == "sqlite" else "redis"


@pytest.fixture
async def bare_db(db_url):
    """A Database on a fresh, empty database (the workbench needs no lab schema)."""
    database = Database(db_url)
    try:
        yield database
    finally:
        async with database.engine.connect() as conn:
            left = await conn.run_sync(lambda c: [t for t in inspect(c).get_table_names() if t.startswith("evd_")])
        await database.dispose()
        assert left == [], f"throwaway tables left behind: {left}"


def generated_module(design: Design) -> types.ModuleType:
    module = types.ModuleType(f"generated_{id(design)}")
    # dont_inherit: the code is compiled as its own file would be, without this module's __future__ import
    exec(compile(event_table.model_code(design), module.__name__, "exec", dont_inherit=True), module.__dict__)
    return module


def reflected(sync_conn) -> dict[str, dict[str, bool]]:
    inspector = inspect(sync_conn)
    return {t: {c["name"]: c["nullable"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: f"status{d.status_column:d}-seq{d.sequence:d}-ver{d.versioned:d}")
async def test_the_generated_model_code_imports_and_matches_the_ddl_shown(design, bare_db):
    module = generated_module(design)
    metadata = module.Base.metadata
    # The DDL shown is what Alembic emits for the design; the generated models emit the same.
    shown = event_table.alembic_ddl(design, bare_db.backend)
    assert event_table.metadata_ddl(metadata, bare_db.backend) == shown
    # Run the shown DDL itself, and reflect: the tables, columns and NULLs are the models'.
    async with bare_db.engine.begin() as conn:
        for statement in filter(str.strip, shown.split(";")):
            await conn.execute(text(statement))
        from_ddl = await conn.run_sync(reflected)
        await conn.run_sync(lambda c: metadata.drop_all(c))
        await conn.run_sync(lambda c: metadata.create_all(c))
        from_models = await conn.run_sync(reflected)
        await conn.run_sync(lambda c: metadata.drop_all(c))
    expected = {c.name: c.nullable for c in event_table.event_columns(design)}
    assert from_ddl == from_models
    assert from_ddl[event_table.TABLE] == expected
    assert (event_table.COUNTER_TABLE in from_ddl) == design.sequence
    assert ("sequence" in expected, "status" in expected, "schema_version" in expected) == (
        design.sequence, design.status_column, design.versioned)


async def test_a_status_column_keeps_the_history_and_the_retries_delete_on_publish_keeps_neither(
    bare_db, redis_client, key_prefix
):
    keep = await event_design.retention_experiment(bare_db, redis_client, prefix=key_prefix, keeps_status=True,
                                                   events=20, fail_every=5)
    drop = await event_design.retention_experiment(bare_db, redis_client, prefix=key_prefix, keeps_status=False,
                                                   events=20, fail_every=5)
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}*")] == []  # its streams are gone
    for result in (keep, drop):  # the same workload: 4 first attempts refused, every event in the stream once
        assert (result.published, result.failed_attempts) == (20, 4)
    assert (keep.rows_left, keep.history_rows, keep.attempts_recorded) == (20, 20, 4)
    assert (drop.rows_left, drop.history_rows, drop.attempts_recorded) == (0, 0, 0)


def test_inversions_count_pairs_seen_against_the_truth():
    assert event_design.inversions("abcd", "abcd") == 0
    assert event_design.inversions("abcd", "bacd") == 1
    assert event_design.inversions("abcd", "dcba") == 6


async def test_sequence_numbers_keep_commit_order_where_created_at_from_skewed_clocks_does_not(bare_db):
    result = await event_design.ordering_experiment(bare_db, skew_ms=50, per_writer=20)
    assert result.events == 40 and result.sequences_unique_and_gapless
    assert result.writer_switches > 0, "the writers never interleaved"
    assert result.created_at_inversions > 0
    assert result.sequence_inversions == 0


async def test_a_schema_version_lets_the_consumer_upcast_and_correlation_ids_find_the_chain(bare_db):
    versioned = await event_design.versioning_experiment(bare_db, versioned=True, old_events=5, new_events=5)
    bare = await event_design.versioning_experiment(bare_db, versioned=False, old_events=5, new_events=5)
    assert (versioned.events, versioned.applied, versioned.upcast, versioned.rejected) == (13, 13, 5, 0)
    assert versioned.chain == ["ScoreRequested", "AIRScoreCalculated", "NotificationQueued"]
    assert (bare.events, bare.applied, bare.upcast, bare.rejected, bare.chain) == (13, 8, 0, 5, [])


async def test_a_polling_relay_queries_while_idle_and_appends_every_event(bare_db, redis_client, key_prefix):
    result = await relay_wake.wake_experiment(bare_db, redis_client, prefix=key_prefix, mode="poll",
                                                interval=0.25, idle_seconds=1.0, events=5)
    # One look per interval at most: 1 s idle at 0.25 s is at most 4 looks (fewer when a look is slow).
    assert 1 <= result.idle_queries <= 5
    assert result.appended == 5 and len(result.latencies_ms) == 5 and min(result.latencies_ms) > 0
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}*")] == []


async def test_listen_notify_sends_no_idle_queries_and_exists_only_on_postgresql(bare_db, redis_client, key_prefix):
    if bare_db.backend == "sqlite":
        with pytest.raises(ValueError, match="PostgreSQL only"):
            await relay_wake.wake_experiment(bare_db, redis_client, prefix=key_prefix, mode="notify")
        return
    result = await relay_wake.wake_experiment(bare_db, redis_client, prefix=key_prefix, mode="notify",
                                                fallback=5.0, idle_seconds=1.0, events=5)
    assert result.idle_queries == 0
    assert result.appended == 5 and len(result.latencies_ms) == 5
    assert result.median_ms < 1000  # woken at commit, not by the 5 s fallback look


async def test_pubsub_loses_what_was_sent_while_away_and_the_stream_keeps_it(redis_client, key_prefix):
    result = await pubsub_vs_streams(redis_client, prefix=key_prefix, per_phase=5, away_seconds=0.2)
    before, away, back = result.phases
    assert (before.sent, before.pubsub_received, before.stream_received) == (5, 5, 5)
    assert (away.sent, away.pubsub_receivers, away.pubsub_received, away.stream_received) == (5, 0, 0, 5)
    assert (back.sent, back.pubsub_received, back.stream_received) == (5, 5, 5)
    assert result.pubsub_lost == result.sent_while_away == 5 and result.stream_lost == 0
    # Two subscribers each get everything; two consumers of one group share it; a new group replays all.
    assert (result.pubsub_first, result.pubsub_second) == (10, 10)
    assert (result.group_first, result.group_second, result.group_overlap) == (5, 5, 0)
    assert result.second_group == result.stream_length == 25
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}*")] == []


@pytest.mark.parametrize("strategy, committed, in_stream, lost, phantom, duplicates", [
    ("dual write", 8, 10, 0, 2, 0),
    ("publish after commit", 10, 8, 2, 0, 0),
    ("outbox", 8, 8, 0, 0, 0),
    # the relay dies after appending 1-3, then after appending 1-7 again: 3 + 7 entries repeat
    ("outbox, relay crashes", 10, 10, 0, 0, 10),
])
async def test_a_crash_between_the_two_writes_loses_or_invents_events_except_with_the_outbox(
    bare_db, redis_client, key_prefix, strategy, committed, in_stream, lost, phantom, duplicates
):
    result = await dual_write.crash_experiment(bare_db, redis_client, prefix=key_prefix, strategy=strategy,
                                               operations=10, crash_on=frozenset({3, 7}))
    assert result.crashes == 2
    assert (result.scores_committed, result.events_in_stream, result.lost, result.phantom, result.duplicates) == (
        committed, in_stream, lost, phantom, duplicates)
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}*")] == []


async def test_the_experiments_survive_other_writers_committing_meanwhile(bare_db, redis_client, key_prefix):
    """Learners share the database (the section 5 publisher writes all the time): on SQLite a
    transaction that reads and then writes must take the write lock at BEGIN, or a commit by anyone
    between its read and its write makes the write fail at once with 'database is locked'."""
    import asyncio

    stop = asyncio.Event()
    commits = 0

    async def someone_else() -> None:
        nonlocal commits
        async with bare_db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE other_writer (n INTEGER)"))
        while not stop.is_set():
            async with bare_db.engine.begin() as conn:
                await conn.execute(text("INSERT INTO other_writer VALUES (1)"))
            commits += 1
            await asyncio.sleep(0.001)

    writer = asyncio.create_task(someone_else())
    try:
        for keeps in (True, False):
            assert (await event_design.retention_experiment(bare_db, redis_client, prefix=key_prefix,
                                                            keeps_status=keeps)).published == 20
        assert (await event_design.versioning_experiment(bare_db, versioned=True)).applied == 13
        assert (await event_design.ordering_experiment(bare_db, per_writer=5)).sequence_inversions == 0
        for strategy in dual_write.STRATEGIES:
            await dual_write.crash_experiment(bare_db, redis_client, prefix=key_prefix, strategy=strategy)
        result = await relay_wake.wake_experiment(bare_db, redis_client, prefix=key_prefix, interval=0.1,
                                                    idle_seconds=0.3, events=3)
        assert result.appended == 3
    finally:
        stop.set()
        await writer
        async with bare_db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE other_writer"))
    assert commits > 10


@pytest.mark.parametrize("experiment", ["wake", "crash", "pubsub"])
async def test_an_unreachable_redis_fails_the_run_with_a_redis_error_and_leaves_no_table(bare_db, experiment):
    import redis
    import redis.asyncio as aioredis

    nobody = aioredis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2, decode_responses=True)
    runs = {
        "wake": lambda: relay_wake.wake_experiment(bare_db, nobody, prefix="x:", interval=0.1, idle_seconds=0.2,
                                                     events=1),
        "crash": lambda: dual_write.crash_experiment(bare_db, nobody, prefix="x:", strategy="outbox"),
        "pubsub": lambda: pubsub_vs_streams(nobody, prefix="x:"),
    }
    try:
        with pytest.raises(redis.RedisError):
            await runs[experiment]()
    finally:
        await nobody.aclose()
    # bare_db's teardown checks that no throwaway table is left


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: f"status{d.status_column:d}-seq{d.sequence:d}-ver{d.versioned:d}")
def test_the_ddl_shown_is_what_a_migration_with_op_create_table_emits(design, dialect):
    """The page calls it the DDL Alembic emits: a migration written with op.create_table and
    op.create_index, run in Alembic's offline mode, emits exactly the text shown."""
    import io

    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import UniqueConstraint

    buffer = io.StringIO()
    op = Operations(MigrationContext.configure(dialect_name=dialect, opts={"as_sql": True, "output_buffer": buffer}))
    for table in event_table.build_metadata(design).sorted_tables:
        unique = [UniqueConstraint(*[c.name for c in u.columns], name=u.name)
                  for u in table.constraints if isinstance(u, UniqueConstraint)]
        op.create_table(table.name, *[c._copy() for c in table.columns], *unique)
        for index in table.indexes:
            op.create_index(index.name, table.name, [c.name for c in index.columns])
    assert buffer.getvalue().strip() + "\n" == event_table.alembic_ddl(design, dialect)
