"""Scratch databases on a PostgreSQL server, for the tests and bench.py: each gets its own
database, made fresh and dropped afterwards, so nothing another user keeps is touched."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


async def _admin(admin_url: str, sql: str) -> None:
    engine = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def create_postgres_database(admin_url: str, prefix: str = "lab_test") -> str:
    """A new, empty database on the server at admin_url; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(admin_url: str, url: str) -> None:
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@asynccontextmanager
async def scratch_postgres(admin_url: str, prefix: str = "lab_test"):
    url = await create_postgres_database(admin_url, prefix)
    try:
        yield url
    finally:
        await drop_postgres_database(admin_url, url)
