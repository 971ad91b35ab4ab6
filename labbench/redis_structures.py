"""Section 4's look at Redis data structures: the lab's live keys as Redis reports them (TYPE,
OBJECT ENCODING, TTL, MEMORY USAGE), with what each structure is for.

The cached user is the string the cache wrote; the hash, the leaderboard and the stream are made
or read here: the same user as a hash (one field changed with HSET, no read-modify-write), a
sorted set of every user's latest AI-R score, and section 5's outbox stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from source.cached_repository import CachedUserRepository
from source.models import AIRScore, User
from source.repositories import UserRepository

PURPOSE = {
    "string": "One value per key; here the user as JSON, replaced whole on every change. GET/SET, with a TTL.",
    "hash": "Fields under one key: HSET changes one field (here years_experience) without reading "
            "and rewriting the rest; HGETALL reads them all.",
    "zset": "Members ordered by a score: a leaderboard. ZADD updates a member's score; ZREVRANGE "
            "reads the top N in order, without sorting in the application.",
    "stream": "An append-only log with IDs: section 5's relay XADDs events, consumer groups read "
              "them and acknowledge each one.",
}


@dataclass(frozen=True)
class StructureRow:
    key: str
    type: str  # TYPE: "none" if the key does not exist
    encoding: str | None  # OBJECT ENCODING; None where the server does not report it
    ttl_seconds: int | None  # None: no expiry (or no key)
    memory_bytes: int | None  # MEMORY USAGE; None where the server does not report it
    sample: str  # a short look at the content
    purpose: str


async def describe(client: aioredis.Redis, key: str, sample: str) -> StructureRow:
    kind = await client.type(key)
    encoding = memory = None
    try:
        encoding = await client.object("encoding", key)
        memory = await client.memory_usage(key)
    except (redis.ResponseError, AttributeError, NotImplementedError):
        pass  # the embedded fakeredis has neither command
    ttl = await client.ttl(key)
    return StructureRow(key, kind, encoding, ttl if ttl >= 0 else None, memory, sample, PURPOSE.get(kind, ""))


async def lab_structures(
    *, sessions: async_sessionmaker[AsyncSession], repo: CachedUserRepository, client: aioredis.Redis,
    user_id: str, stream: str,
) -> list[StructureRow]:
    """Reads the cached user's string as it is, writes the hash and the leaderboard afresh
    (under the lab's prefix), reads the stream; then describes all four."""
    string_key = repo.user_key(user_id)
    hash_key = repo.cache.key("structures", "user-hash", user_id)
    board_key = repo.cache.key("structures", "leaderboard")
    async with sessions() as session:
        user = await UserRepository(session).get_existing(user_id)
        latest = (
            select(AIRScore.user_id, func.max(AIRScore.created_at).label("at")).group_by(AIRScore.user_id).subquery()
        )
        rows = (await session.execute(
            select(User.name, AIRScore.air_score)
            .join(latest, (AIRScore.user_id == latest.c.user_id) & (AIRScore.created_at == latest.c.at))
            .join(User, User.id == AIRScore.user_id)
        )).all()
    fields = {k: "" if v is None else str(v) for k, v in asdict(_plain(user)).items()}
    async with client.pipeline(transaction=False) as pipe:
        pipe.delete(hash_key, board_key)
        pipe.hset(hash_key, mapping=fields)
        pipe.hset(hash_key, "years_experience", str((user.years_experience or 0) + 1))  # a partial update
        if rows:
            pipe.zadd(board_key, {name: float(score) for name, score in rows})
        pipe.expire(hash_key, 300).expire(board_key, 300)
        await pipe.execute()
    raw = await client.get(string_key)
    top = await client.zrevrange(board_key, 0, 2, withscores=True)
    events = (f"{await client.xlen(stream)} entries" if await client.exists(stream)
              else "(no stream yet: section 5's relay creates it with its first event)")
    return [
        await describe(client, string_key, raw or "(not cached now: fetch the user first)"),
        await describe(client, hash_key, f"years_experience (after HSET) = {await client.hget(hash_key, 'years_experience')}"),
        await describe(client, board_key, ", ".join(f"{name}: {score:.2f}" for name, score in top) or "(no scores yet)"),
        await describe(client, stream, events),
    ]


@dataclass(frozen=True)
class _Plain:
    id: str
    email: str
    name: str
    occupation_code: str | None
    years_experience: float | None


def _plain(user: User) -> _Plain:
    return _Plain(user.id, user.email, user.name, user.occupation_code, user.years_experience)
