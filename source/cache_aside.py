"""4. Cache-aside at its smallest. A read asks Redis; on a miss it loads the row from the database
and stores it as JSON with a TTL. A write commits, then deletes the key, so the next read loads
the new row.

This is the version section 4 breaks (a stampede, a stale set, a hung Redis);
`RedisCache.read_through` in cache.py is the same read with an answer to each.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import User

Sessions = async_sessionmaker[AsyncSession]
Load = Callable[[], Awaitable[dict | None]]


class CacheAside:
    def __init__(self, redis: aioredis.Redis, sessions: Sessions, *, prefix: str):
        self.redis, self.sessions, self.prefix = redis, sessions, prefix
        self.ttl_seconds = 300

    def key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    async def get(self, key: str, load: Load) -> dict | None:
        cached = await self.redis.get(key)
        if cached is not None:
            return json.loads(cached)
        value = await load()
        await self.redis.set(key, json.dumps(value), ex=self.ttl_seconds)
        return value

    async def get_user(self, user_id: str) -> dict | None:
        async def load() -> dict | None:
            async with self.sessions() as session:
                user = await session.get(User, user_id)
            if user is None:
                return None
            return {"id": user.id, "name": user.name, "email": user.email}

        return await self.get(self.key(user_id), load)

    async def rename_user(self, user_id: str, name: str) -> None:
        async with self.sessions.begin() as session:
            user = await session.get(User, user_id)
            user.name = name
        await self.redis.delete(self.key(user_id))
