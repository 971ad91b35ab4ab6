"""6. Schema migrations: Alembic's history, the database's revision, the SQL a step would run,
one step up or down, and a drift check of the models against the live schema."""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from runtime.learners import FIRST_REVISION, room_metadata
from source import config
from source.database import _MIGRATION_LOCK, Database, alembic_config, migration_lock
from source.models import Base


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


async def step(db: Database, *, direction: str) -> StepResult:
    """Upgrade or downgrade exactly one revision and report what changed in the schema."""
    if direction not in ("up", "down"):
        raise ValueError("direction is 'up' or 'down'")
    async with migration_lock(), db.engine.begin() as conn:
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
    context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
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
