"""Throwaway copies of the lab's tables, for the experiments that must not touch the shared ones: a
schema of their own in the app's PostgreSQL database, or a file of their own for SQLite; removed
afterwards, whatever happened."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import Table, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

from source.database import Database
from source.models import Base, RelayLease, RelayMember

# What a relay needs besides the events: the partitions' leases (in aggregate order on PostgreSQL).
RELAY_TABLES = [RelayLease.__table__, RelayMember.__table__]


@asynccontextmanager
async def throwaway_tables(database_url: str, *, name: str, tables: list[Table], pool_size: int = 2,
                           ) -> AsyncIterator[Callable[[], Database]]:
    """Yields a factory of Databases (each its own engine) whose sessions see fresh copies of
    `tables`: PostgreSQL, the schema `<name>_<run>` (the factory's `schema`); SQLite, a file of their own."""
    run, folder, schema = uuid.uuid4().hex[:10], None, None
    if make_url(database_url).get_backend_name() == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix=f"lab2-{name}-"))
        database_url = f"sqlite+aiosqlite:///{folder / f'{name}.db'}"
    else:
        schema = f"{name}_{run}"

    def connect() -> Database:
        db = Database(database_url, pool_size=pool_size, max_overflow=2, application_name=f"lab2-{name}")
        if schema:  # the models' unqualified tables, rendered as <name>_<run>.<table>
            db.sessions = async_sessionmaker(
                db.engine.execution_options(schema_translate_map={None: schema}), expire_on_commit=False
            )
        return db

    connect.schema = schema
    admin = connect()
    try:
        async with admin.engine.begin() as conn:
            if schema:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                conn = await conn.execution_options(schema_translate_map={None: schema})
            await conn.run_sync(Base.metadata.create_all, tables=tables)
        yield connect
    finally:
        try:
            if schema:
                async with admin.engine.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await admin.dispose()
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
