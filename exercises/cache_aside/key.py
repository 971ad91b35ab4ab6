"""Section 4: cache-aside, written against a plain Redis client."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from source.models import User

TTL_SECONDS = 300
# A cache must never make a read slower than the database: each Redis command gets this long.
REDIS_BUDGET_SECONDS = 0.05
REDIS_FAILED = (RedisError, OSError, TimeoutError)


def user_key(user_id: str) -> str:
    return f"user:{user_id}"


async def load_user(user_id: str, sessions: async_sessionmaker[AsyncSession]) -> dict | None:
    async with sessions() as session:
        user = await session.get(User, user_id)
        return None if user is None else {"id": user.id, "name": user.name, "email": user.email}


async def get_user(user_id: str, *, sessions: async_sessionmaker[AsyncSession], redis: Redis) -> dict | None:
    """The user as {"id": ..., "name": ..., "email": ...}, or None when no user has this ID.

    A miss reads the database and stores the user in Redis (as JSON, with a TTL), so that the
    next read of the same user sends nothing to the database. When Redis refuses, hangs or
    fails, the read is served from the database, within 100 ms in all.
    """
    key = user_key(user_id)
    try:
        async with asyncio.timeout(REDIS_BUDGET_SECONDS):
            cached = await redis.get(key)
    except REDIS_FAILED:
        return await load_user(user_id, sessions)  # fail open, and do not wait for Redis a second time
    if cached is not None:
        return json.loads(cached)
    user = await load_user(user_id, sessions)
    if user is not None:
        try:
            async with asyncio.timeout(REDIS_BUDGET_SECONDS):
                await redis.set(key, json.dumps(user), ex=TTL_SECONDS)
        except REDIS_FAILED:
            pass  # not cached this time; the next read tries again
    return user


async def rename_user(user_id: str, name: str, *, sessions: async_sessionmaker[AsyncSession], redis: Redis) -> None:
    """Set the user's name in the database and commit. Once this returns, no read may get the
    old name from Redis. If the COMMIT fails, the error propagates, and Redis must not hold a
    name that the database never committed.
    """
    async with sessions.begin() as session:  # commits when the block ends, or raises
        user = await session.get(User, user_id)
        if user is None:
            raise LookupError(f"no user has the ID {user_id}")
        user.name = name
    # Only now, after the COMMIT: deleted earlier, a reader could load the old row and store it
    # again before the commit. (If Redis fails here, the error tells the caller the old name
    # may be served until its TTL ends.)
    await redis.delete(user_key(user_id))
