"""Section 4's "What Redis holds": a cache key read as Redis holds it, its raw JSON and remaining
TTL, or the tombstone a write left in it. For the page and the tests; the cache never reads it."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from source.cache import TOMBSTONE
from source.cached_repository import CachedUserRepository
from source.errors import clean_id


@dataclass(frozen=True)
class KeyState:
    key: str
    raw: str | None  # the JSON exactly as stored; None if the key holds no value
    ttl_seconds: int | None  # remaining time to live; None if the key does not exist
    tombstone: bool = False  # the key holds a write's marker, not a value: a read of it misses


async def inspect_key(client: aioredis.Redis, key: str) -> KeyState:
    """The key as Redis holds it (raises a RedisError if Redis does not answer)."""
    async with client.pipeline(transaction=False) as pipe:
        raw, ttl = await pipe.get(key).ttl(key).execute()
    if raw is not None and raw.startswith(TOMBSTONE):
        return KeyState(key, None, ttl if ttl >= 0 else None, tombstone=True)
    return KeyState(key, raw, ttl if ttl >= 0 else None)


async def inspect_user_cache(
    repository: CachedUserRepository, user_id: str, *, client: aioredis.Redis
) -> tuple[KeyState, KeyState]:
    """The user's two keys, the user and the latest score, as the repository's Redis holds them,
    read through `client`: the page's own, not the cache's, which gives up after 50 ms."""
    user_id = clean_id(user_id, label="user ID")
    return (await inspect_key(client, repository.user_key(user_id)),
            await inspect_key(client, repository.latest_score_key(user_id)))
