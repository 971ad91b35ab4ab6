"""Experiments that must not overlap take turns, in one app process and across the processes
(two behind nginx, say).

An asyncio.Lock is seen by its own event loop only (the app runs one per process). On PostgreSQL a
transaction-scoped advisory lock is seen by every process on the server: it is released when the
turn ends, and by a process that dies, with its connection. A SQLite file serves one app process,
whose own lock is enough.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# The lab's advisory-lock keys (2002 is the migrations': source/database.py).
DEMO_SCORE = 2004  # section 4: the demo user's one score
POOL_EXPERIMENT = 2005  # section 2: its connections and timings are the server's
STRATEGY_COMPARISON = 2006  # section 4: the strategies write to the shared traffic users

_locks_here: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Lock]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def turn(sessions: async_sessionmaker[AsyncSession], key: int, *, wait: bool = True) -> AsyncIterator[bool]:
    """Hold turn `key` while the block runs, first in this process, then on PostgreSQL across
    processes; yields whether it is held. With wait=False, yields False at once when it is taken."""
    here = _locks_here.setdefault(asyncio.get_running_loop(), {}).setdefault(key, asyncio.Lock())
    if not wait and here.locked():
        yield False
        return
    async with here:
        async with sessions.begin() as session:
            if (await session.connection()).dialect.name == "postgresql":
                if wait:
                    await session.execute(select(func.pg_advisory_xact_lock(key)))
                    yield True
                else:
                    yield bool(await session.scalar(select(func.pg_try_advisory_xact_lock(key))))
                return
        yield True
