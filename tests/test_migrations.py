"""Section 6's migration tools on SQLite and PostgreSQL."""

from __future__ import annotations

from labbench.migrations import drift, migration_source, offline_sql, revision_history, step


def test_history_is_ordered_oldest_first_with_one_head():
    history = revision_history()
    assert history[0].down_revision is None
    assert [r.down_revision for r in history[1:]] == [r.revision for r in history[:-1]]
    assert [r.is_head for r in history] == [False] * (len(history) - 1) + [True]
    assert "def upgrade" in migration_source(history[0].revision)


async def test_head_schema_has_no_drift(db):
    assert await drift(db) == []


async def test_stepping_down_and_up_reports_changes_and_returns_to_head(db):
    head = revision_history()[-1].revision
    down = await step(db, direction="down")
    assert down.before == head and down.after != head
    assert down.tables_dropped or down.columns_dropped or down.indexes_dropped
    assert await drift(db) != []  # the models are ahead of the schema now
    up = await step(db, direction="up")
    assert up.after == head
    assert (up.tables_added, up.columns_added, up.indexes_added) == (
        down.tables_dropped, down.columns_dropped, down.indexes_dropped)
    assert up.indexes_dropped == down.indexes_added
    assert await db.current_revision() == head and await drift(db) == []


async def test_offline_sql_is_rendered_for_the_database_dialect_without_running_it(db):
    first = revision_history()[0].revision
    sql = offline_sql(db, from_revision=None, to_revision=first)
    assert "CREATE TABLE users" in sql
    if db.backend == "postgresql":
        assert "TIMESTAMP WITH TIME ZONE" in sql
    else:
        assert "DATETIME" in sql
    down_sql = offline_sql(db, from_revision=first, to_revision="base")
    assert "DROP TABLE users" in down_sql
    assert await db.current_revision() == revision_history()[-1].revision  # nothing ran


async def test_the_claim_finds_the_events_that_hold_a_user_back_in_their_own_index(db):
    """Revision 0005 (0006 orders it by sequence): the index behind the wait rule holds only parked
    events and events waiting for a retry, and the claims look the rule up in it (EXPLAIN, on 2,000
    pending events of 20 users). Its predicate is what lets the planner use it: the claim's own
    condition implies it."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from source import outbox_claims as claims
    from tests.test_outbox import add_events

    users = [f"user-{n}" for n in range(20)]
    await add_events(db, users=users, count=2000, per_transaction=500)
    async with db.engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
        statements = {"claim": claims.SQLITE_CLAIM} if db.backend == "sqlite" else {
            "any order": claims.ANY_ORDER_CLAIM, "partitioned": claims.PARTITIONED_CLAIM}
        plans = {}
        for name, statement in statements.items():
            # The sizes are written into the statement (outbox_claims.LIMIT); the rest stay parameters.
            compiled = statement.params(limit=100, per_partition=4, now=datetime.now(UTC), relay="a-relay").compile(
                dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
            explain = "EXPLAIN " if db.backend == "postgresql" else "EXPLAIN QUERY PLAN "
            plan = await connection.exec_driver_sql(explain + str(compiled),
                                                    tuple(compiled.binds[name].effective_value
                                                          for name in compiled.positiontup))
            plans[name] = "\n".join(str(row[-1]) for row in plan)
    assert all("ix_events_holding" in plan for plan in plans.values()), plans


async def test_stepping_below_0005_puts_back_the_index_of_every_event(db):
    revisions = [r.revision for r in revision_history()]
    while (await db.current_revision()) != "0005":
        assert revisions.index(await db.current_revision()) > revisions.index("0005")
        await step(db, direction="down")
    down = await step(db, direction="down")
    assert (down.indexes_dropped, down.indexes_added) == (
        ["domain_events.ix_events_holding"], ["domain_events.ix_events_aggregate_wait"])


async def test_upgrading_from_0005_numbers_each_users_existing_events_in_their_order(db):
    """Revision 0006 on a database that already holds events: each user's events get 1, 2, 3, ...
    in (created_at, id) order, the counters continue from there, and down and up again keep it so."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, text

    from source.event_repository import DomainEventRepository
    from source.models import AggregateSequence, DomainEvent

    while (await db.current_revision()) != "0005":
        await step(db, direction="down")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(f"e{n:03}", f"user-{n % 3}", start + timedelta(seconds=(n * 7) % 10)) for n in range(30)]
    async with db.engine.begin() as connection:
        for event_id, user, created in rows:
            await connection.execute(text(
                "INSERT INTO domain_events (id, event_type, aggregate_type, aggregate_id, payload, status, attempts, "
                "created_at, updated_at) VALUES (:id, 'E', 'User', :user, '{}', 'pending', 0, :at, :at)"
            ), {"id": event_id, "user": user, "at": created})
    while (await db.current_revision()) != revision_history()[-1].revision:
        await step(db, direction="up")

    async def numbered() -> dict[str, int]:
        async with db.sessions() as session:
            return dict((await session.execute(select(DomainEvent.id, DomainEvent.sequence))).all())

    expected = {}
    for user in {user for _, user, _ in rows}:
        theirs = sorted((created, event_id) for event_id, who, created in rows if who == user)
        expected |= {event_id: n for n, (_, event_id) in enumerate(theirs, start=1)}
    assert await numbered() == expected
    async with db.sessions.begin() as session:
        assert {c.aggregate_id: c.last_sequence for c in await session.scalars(select(AggregateSequence))} == {
            f"user-{n}": 10 for n in range(3)}
        event = await DomainEventRepository(session).add(
            DomainEvent(event_type="E", aggregate_type="User", aggregate_id="user-1", payload={}))
    assert event.sequence == 11
    before = await numbered()
    await step(db, direction="down")
    await step(db, direction="up")
    assert await numbered() == before
