"""Section 4: cache-aside, written against a plain Redis client.

`get_user` reads through Redis: ask Redis first; on a miss, read the database and store what it
read, so that the next read is a hit. `rename_user` changes a user's name in the database, and
then makes sure Redis stops serving the old one. Both are handed the session factory and the
Redis client by the caller.

The client is `redis.asyncio.Redis(..., decode_responses=True)` with redis-py's defaults: no
timeouts, and a command whose connection fails is tried again up to 10 times, with waits of up
to 1 s between tries. A Redis that hangs or refuses keeps a command waiting unless you bound
the wait yourself.
"""

from __future__ import annotations

import asyncio  # noqa: F401 - you will likely need these
import json  # noqa: F401

from redis.asyncio import Redis
from redis.exceptions import RedisError  # noqa: F401
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from source.models import User  # noqa: F401


async def get_user(user_id: str, *, sessions: async_sessionmaker[AsyncSession], redis: Redis) -> dict | None:
    """The user as {"id": ..., "name": ..., "email": ...}, or None when no user has this ID.

    A miss reads the database and stores the user in Redis (as JSON, with a TTL), so that the
    next read of the same user sends nothing to the database. When Redis refuses, hangs or
    fails, the read is served from the database, within 100 ms in all.
    """
    raise NotImplementedError("write get_user")


async def rename_user(user_id: str, name: str, *, sessions: async_sessionmaker[AsyncSession], redis: Redis) -> None:
    """Set the user's name in the database and commit. Once this returns, no read may get the
    old name from Redis. If the COMMIT fails, the error propagates, and Redis must not hold a
    name that the database never committed.

    The checks make one COMMIT fail and one take 0.3 s (a deferred constraint in the exercise
    database), as a busy database sometimes does.
    """
    raise NotImplementedError("write rename_user")
