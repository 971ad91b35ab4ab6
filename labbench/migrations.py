"""6. Schema migrations: Alembic's history, the database's revision, the SQL a step would run,
one step up or down, a drift check of the models against the live schema, and the answer key's
required-column revision (minimal and hardened) run on a throwaway table of a rolled-back
transaction."""

from __future__ import annotations

import functools
import io
import os
import uuid
from dataclasses import dataclass

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, String, Table, exc, insert, inspect, select

from runtime.learners import FIRST_REVISION, room_metadata
from source import config, migration_patterns
from source.database import _MIGRATION_LOCK, WRITE_TRANSACTION, Database, alembic_config, migration_lock
from source.models import Base, compared

from .progress import Report, silent
from .recorder import record


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    filename: str
    is_head: bool


@dataclass(frozen=True)
class StepResult:
    before: str | None
    after: str | None
    tables_added: list[str]
    tables_dropped: list[str]
    columns_added: list[str]
    columns_dropped: list[str]
    indexes_added: list[str]
    indexes_dropped: list[str]


def revision_history() -> list[Revision]:
    """Every revision in the migration scripts, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    heads = set(scripts.get_heads())
    history = [
        Revision(
            revision=rev.revision,
            down_revision=rev.down_revision if isinstance(rev.down_revision, str) else None,
            message=rev.doc or "",
            filename=rev.path.rsplit("/", 1)[-1],
            is_head=rev.revision in heads,
        )
        for rev in scripts.walk_revisions()
    ]
    return list(reversed(history))


@functools.cache
def _stores_learners() -> frozenset[str]:
    order = [r.revision for r in revision_history()]
    return frozenset(order[order.index(FIRST_REVISION):])


def stores_learners(revision: str | None) -> bool:
    """True when a database at this revision has the learners' tables (revision 0004 or later)."""
    return revision in _stores_learners()


def migration_source(revision: str) -> str:
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    with open(script.path, encoding="utf-8") as handle:
        return handle.read()


# Loading the scripts costs a few milliseconds; pages ask on every rerun. What they show is read
# again only when a revision file is added, removed or edited.


def scripts_on_disk() -> tuple[tuple[str, int], ...]:
    """The revision files and their modification times."""
    versions = config.PROJECT_DIR / "alembic" / "versions"
    return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(versions) if e.name.endswith(".py")))


@functools.lru_cache(maxsize=4)
def _history_of(scripts: tuple) -> tuple[Revision, ...]:
    return tuple(revision_history())


@functools.lru_cache(maxsize=64)
def _source_of(revision: str, scripts: tuple) -> str:
    return migration_source(revision)


def history_as_on_disk() -> list[Revision]:
    """revision_history(), loaded again only after the scripts changed."""
    return list(_history_of(scripts_on_disk()))


def source_as_on_disk(revision: str) -> str:
    """migration_source(), read again only after the scripts changed."""
    return _source_of(revision, scripts_on_disk())


def forget_loaded_scripts() -> None:
    _history_of.cache_clear()
    _source_of.cache_clear()


def offline_sql(db: Database, *, from_revision: str | None, to_revision: str) -> str:
    """The SQL that upgrading (or downgrading) between two revisions would send, without
    touching the database (Alembic's offline mode, rendered for this database's dialect)."""
    cfg = alembic_config()
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    cfg.attributes["url"] = db.url.render_as_string(hide_password=False)
    order = [r.revision for r in revision_history()]
    start = from_revision or "base"
    upgrading = to_revision != "base" and (from_revision is None or order.index(to_revision) > order.index(from_revision))
    # Alembic's `context` and `op` are module globals: two sessions rendering at once (or one
    # rendering while another migrates) would tear down each other's environment.
    with _MIGRATION_LOCK:
        if upgrading:
            command.upgrade(cfg, f"{start}:{to_revision}", sql=True)
        else:
            command.downgrade(cfg, f"{start}:{to_revision}", sql=True)
    return buffer.getvalue()


def _schema(sync_connection) -> tuple[dict[str, set[str]], set[str]]:
    """Each table's columns, and every index as "table.index"."""
    inspector = inspect(sync_connection)
    tables = [table for table in inspector.get_table_names() if table != "alembic_version"]
    columns = {table: {column["name"] for column in inspector.get_columns(table)} for table in tables}
    indexes = {f"{table}.{index['name']}" for table in tables for index in inspector.get_indexes(table)}
    return columns, indexes


def _step(sync_connection, direction: str) -> tuple[str | None, str | None, tuple, tuple]:
    context = MigrationContext.configure(sync_connection)
    before_revision, before = context.get_current_revision(), _schema(sync_connection)
    cfg = alembic_config(sync_connection)
    if direction == "up":
        command.upgrade(cfg, "+1")
    else:
        command.downgrade(cfg, "-1")
    after_revision = MigrationContext.configure(sync_connection).get_current_revision()
    return before_revision, after_revision, before, _schema(sync_connection)


async def step(db: Database, *, direction: str, report: Report = silent) -> StepResult:
    """Upgrade or downgrade exactly one revision and report what changed in the schema."""
    if direction not in ("up", "down"):
        raise ValueError("direction is 'up' or 'down'")
    report("Waiting for any other migration on this database to finish", 0.0)
    async with migration_lock(), db.engine.begin() as conn:
        report(f"Running the revision's {'upgrade' if direction == 'up' else 'downgrade'}() and reading the "
               "schema before and after", 0.2)
        before_rev, after_rev, (before, indexes_before), (after, indexes_after) = await conn.run_sync(_step, direction)
    shared = before.keys() & after.keys()
    return StepResult(
        before=before_rev,
        after=after_rev,
        tables_added=sorted(after.keys() - before.keys()),
        tables_dropped=sorted(before.keys() - after.keys()),
        columns_added=sorted(f"{t}.{c}" for t in shared for c in after[t] - before[t]),
        columns_dropped=sorted(f"{t}.{c}" for t in shared for c in before[t] - after[t]),
        indexes_added=sorted(indexes_after - indexes_before),
        indexes_dropped=sorted(indexes_before - indexes_after),
    )


def _drift(sync_connection) -> list[str]:
    context = MigrationContext.configure(sync_connection, opts={"compare_type": True, "include_object": compared})
    return [_describe(diff) for diff in compare_metadata(context, [Base.metadata, room_metadata])]


def _describe(diff) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_describe(d) for d in diff)
    operation, *rest = diff
    names = [getattr(item, "name", None) or str(item) for item in rest if item is not None]
    return f"{operation}: {', '.join(str(n) for n in names[:3])}"


async def drift(db: Database) -> list[str]:
    """Differences between the models and the live schema: empty means no drift."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(_drift)


# --- the answer key's required column, run ---------------------------------------------------

ROWS = ("ada@example.com", "alan@example.com", "grace@example.com")
# What adding a NOT NULL column to a table with rows can do; the run says which it did.
REQUIRED_COLUMN_OUTCOMES = (
    "It works: the rows get NULL in the new column",
    "It works: the rows get an empty string",
    "The database refuses: the rows already there would break NOT NULL",
)


@dataclass(frozen=True)
class ColumnRun:
    hardened: bool
    sql: list[str]  # what the revision sent, in order
    error: str | None  # what the database refused, if it did
    plans: list[str | None]  # the new column's value in each row afterwards (empty if it was not added)
    nullable: bool | None  # whether the column accepts NULL afterwards (None: no column)

    @property
    def outcome(self) -> int | None:
        """Which of REQUIRED_COLUMN_OUTCOMES happened (None: something else, e.g. the hardened run)."""
        if self.error:
            return 2
        if self.plans and all(plan is None for plan in self.plans):
            return 0
        if self.plans and all(plan == "" for plan in self.plans):
            return 1
        return None


async def required_column(db: Database, *, hardened: bool) -> ColumnRun:
    """A table of this run's own with three rows, then the answer key's revision that adds the
    required column `plan`. Runs in one transaction on a connection of its own, rolled back at the
    end: no other session ever sees the table."""
    table = Table(f"mig_{uuid.uuid4().hex[:10]}_users", MetaData(), Column("id", Integer, primary_key=True),
                  Column("email", String(255)))
    revision = migration_patterns.add_plan_hardened if hardened else migration_patterns.add_plan_minimal
    error, plans, nullable = None, [], None
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(**WRITE_TRANSACTION)
        outer = await conn.begin()
        try:
            await conn.run_sync(table.metadata.create_all)
            await conn.execute(insert(table), [{"email": email} for email in ROWS])
            savepoint = await conn.begin_nested()
            with record(db) as log:
                try:
                    await conn.run_sync(lambda sync: revision(Operations(MigrationContext.configure(sync)), table.name))
                    await savepoint.commit()
                except exc.DBAPIError as refused:
                    error = str(refused.orig).strip().splitlines()[0]
                    await savepoint.rollback()
            columns = {c["name"]: c for c in await conn.run_sync(lambda sync: inspect(sync).get_columns(table.name))}
            if "plan" in columns:
                nullable = columns["plan"]["nullable"]
                with_plan = Table(table.name, MetaData(), Column("id", Integer), Column("plan", String(20)))
                plans = list((await conn.scalars(select(with_plan.c.plan).order_by(with_plan.c.id))).all())
        finally:
            await outer.rollback()  # the table and its rows go with it
    return ColumnRun(hardened, [sql.strip() for sql in log.sql if not _bookkeeping(sql)], error, plans, nullable)


def _bookkeeping(sql: str) -> bool:
    """The savepoint around the revision, and (SQLite, batch mode) Alembic's reads of the table's definition."""
    return "SAVEPOINT" in sql or sql.lstrip().startswith(("PRAGMA", "SELECT sql FROM"))
