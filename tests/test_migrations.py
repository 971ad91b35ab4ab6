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


async def test_the_claim_finds_the_events_that_hold_an_aggregate_back_in_their_own_index(db):
    """Revision 0005: the index behind the wait rule holds only parked events and events waiting
    for a retry, and both claims look the rule up in it (EXPLAIN, on 2,000 pending events of 20
    users). Its predicate is what lets the planner use it: the claim's own condition implies it."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from source.outbox_claims import DUE_EVENTS, LOCK_OLDEST_AGGREGATES
    from tests.test_outbox import add_events

    await add_events(db, users=[f"user-{n}" for n in range(20)], count=2000, per_transaction=500)
    async with db.engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
        statements = [DUE_EVENTS] + ([LOCK_OLDEST_AGGREGATES] if db.backend == "postgresql" else [])
        for statement in statements:
            compiled = statement.compile(dialect=connection.dialect)
            given = compiled.construct_params({"now": datetime.now(UTC), "limit": 100, "window": 1000})
            explain = "EXPLAIN " if db.backend == "postgresql" else "EXPLAIN QUERY PLAN "
            plan = await connection.exec_driver_sql(explain + str(compiled),
                                                    tuple(given[name] for name in compiled.positiontup))
            assert "ix_events_holding" in "\n".join(str(row[-1]) for row in plan)


async def test_stepping_below_0005_puts_back_the_index_of_every_event(db):
    revisions = [r.revision for r in revision_history()]
    while (await db.current_revision()) != "0005":
        assert revisions.index(await db.current_revision()) > revisions.index("0005")
        await step(db, direction="down")
    down = await step(db, direction="down")
    assert (down.indexes_dropped, down.indexes_added) == (
        ["domain_events.ix_events_holding"], ["domain_events.ix_events_aggregate_wait"])
