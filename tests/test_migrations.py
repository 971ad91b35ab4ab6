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
    assert down.tables_dropped or down.columns_dropped
    assert await drift(db) != []  # the models are ahead of the schema now
    up = await step(db, direction="up")
    assert up.after == head
    assert (up.tables_added, up.columns_added) == (down.tables_dropped, down.columns_dropped)
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
