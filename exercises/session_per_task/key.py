"""Section 2: twenty lookups at once, each task on a session of its own."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from source.models import User


async def find_name(session: AsyncSession, user_id: str) -> str | None:
    """Given (leave it as it is): one lookup. pg_sleep(0.02) stands in for a query that takes
    20 ms in the database, so that lookups running at the same time show in the timings."""
    result = await session.execute(select(User.name, func.pg_sleep(0.02)).where(User.id == user_id))
    row = result.first()
    return row.name if row is not None else None


async def lookup_all(sessions: async_sessionmaker[AsyncSession], user_ids: list[str]) -> list[str | None]:
    """Each user's name, in the order of `user_ids`; None for an ID that no user has.

    The lookups run at the same time (asyncio.gather), and each task uses a session of its own,
    opened from `sessions`: an AsyncSession is one unit of work on one connection, and tasks
    running at the same time must not share it.
    """

    async def lookup(user_id: str) -> str | None:
        # A session per task: its own unit of work, on its own connection from the pool.
        async with sessions() as session:
            return await find_name(session, user_id)

    return list(await asyncio.gather(*(lookup(user_id) for user_id in user_ids)))
