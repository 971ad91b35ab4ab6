"""Alembic environment (async template). The URL comes from DATABASE_URL, or is the app's own
default (the embedded PostgreSQL, or its SQLite fallback); the app migrates on its own
connection via config.attributes."""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from runtime.embedded_postgres import resolve_database
from runtime.learners import room_metadata
from source.models import Base, UTCDateTime, compared

config = context.config
# The command line logs as alembic.ini says. The app passes its own connection (migrating) or
# URL (rendering SQL offline) and keeps its own logging: no INFO lines per page run in its log.
if config.config_file_name is not None and not {"connection", "url"} & config.attributes.keys():
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# The lesson's models, and the room's bookkeeping (learners' progress), kept apart from them.
target_metadata = [Base.metadata, room_metadata]


def render_item(type_, obj, autogen_context):
    # Migrations store the plain column type, so they never import the app's code.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite alters tables by copying them
        render_item=render_item,
        include_object=compared,
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = config.attributes.get("url") or resolve_database().url  # the app passes its own database's URL
    configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    from source.database import Database

    db = Database(resolve_database().url, null_pool=True)  # the app's pragmas and transaction handling
    async with db.engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
        await connection.commit()
    await db.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
