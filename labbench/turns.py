"""Experiments that must not overlap take turns across the app's processes (two behind nginx, say).

An asyncio.Lock or a threading.Lock is seen by its own process only. On PostgreSQL a
transaction-scoped advisory lock is seen by every process on the server: it is released when the
turn ends, and by a process that dies, with its connection. A SQLite file serves one app process,
whose own lock is enough.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# The lab's advisory-lock keys (2002 is the migrations': source/database.py).
DEMO_SCORE = 2004  # section 4: the demo user's one score
POOL_EXPERIMENT = 2005  # section 2: its connections and timings are the server's
STRATEGY_COMPARISON = 2006  # section 4: the strategies write to the shared traffic users


@asynccontextmanager
async def turn(sessions: async_sessionmaker[AsyncSession], key: int, *, wait: bool = True) -> AsyncIterator[bool]:
    """Hold lock `key` while the block runs; yields whether it is held. With wait=False, yields
    False at once when another session holds it."""
    async with sessions.begin() as session:
        if (await session.connection()).dialect.name == "postgresql":
            if wait:
                await session.execute(select(func.pg_advisory_xact_lock(key)))
                yield True
            else:
                yield bool(await session.scalar(select(func.pg_try_advisory_xact_lock(key))))
            return
    yield True
