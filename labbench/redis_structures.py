"""Section 4's look at Redis data structures: the lab's live keys as Redis reports them (TYPE,
OBJECT ENCODING, TTL, MEMORY USAGE), with what each structure is for, and a Pub/Sub channel.

The cached user is the string the cache wrote; the rest is made or read here, each with the
commands a learner would send: the same user as a hash (one field changed with HSET), a sorted
set of every user's latest AI-R score (members are user IDs, stable where names are not), a list
used as a queue (write-behind's structure), a set of the users who have a score, section 5's
outbox stream, and a Pub/Sub channel (not a key: it holds nothing).
"""

from __future__ import annotations

import json
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
    "zset": "Members ordered by a score: a leaderboard. ZADD sets a member's score; `ZRANGE key 0 2 REV "
            "WITHSCORES` reads the top 3 (ZREVRANGE is deprecated since Redis 6.2). Members are user IDs: "
            "a name can change or repeat.",
    "list": "An ordered sequence: RPUSH appends, LPOP takes from the front, so it works as a queue "
            "(write-behind queues its writes in one).",
    "set": "Unique members, unordered: SADD adds (a repeat is ignored), SISMEMBER tests one in O(1).",
    "stream": "An append-only log with IDs: section 5's relay XADDs events, consumer groups read "
              "them and acknowledge each one.",
    "channel": "Pub/Sub: PUBLISH hands a message to the clients subscribed at that moment and keeps "
               "nothing; a subscriber that is away misses it (section 5 uses a stream for that reason).",
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


async def describe(client: aioredis.Redis, key: str, sample: str, *, kind: str | None = None) -> StructureRow:
    kind_now = await client.type(key)
    encoding = memory = None
    try:
        encoding = await client.object("encoding", key)
        memory = await client.memory_usage(key)
    except (redis.ResponseError, AttributeError, NotImplementedError):
        pass  # the embedded fakeredis has neither command
    ttl = await client.ttl(key)
    return StructureRow(key, kind_now, encoding, ttl if ttl >= 0 else None, memory, sample,
                        PURPOSE.get(kind or kind_now, ""))


async def lab_structures(
    *, sessions: async_sessionmaker[AsyncSession], repo: CachedUserRepository, client: aioredis.Redis,
    user_id: str, stream: str,
) -> list[StructureRow]:
    """Reads the cached user's string as it is, writes the hash, the leaderboard, the queue and the
    set afresh (under the lab's prefix, for 300 s), reads the stream, and publishes on a channel
    once with a subscriber and once without; then describes them all."""
    key = repo.cache.key
    string_key, hash_key = repo.user_key(user_id), key("structures", "user-hash", user_id)
    board_key, queue_key, scored_key = key("structures", "leaderboard"), key("structures", "queue"), key(
        "structures", "scored-users")
    async with sessions() as session:
        user = await UserRepository(session).get_existing(user_id)
        latest = (
            select(AIRScore.user_id, func.max(AIRScore.created_at).label("at")).group_by(AIRScore.user_id).subquery()
        )
        rows = (await session.execute(
            select(User.id, User.name, AIRScore.air_score)
            .join(latest, (AIRScore.user_id == latest.c.user_id) & (AIRScore.created_at == latest.c.at))
            .join(User, User.id == AIRScore.user_id)
        )).all()
    names = {row.id: row.name for row in rows}
    fields = {k: "" if v is None else str(v) for k, v in asdict(_plain(user)).items()}
    async with client.pipeline(transaction=False) as pipe:
        pipe.delete(hash_key, board_key, queue_key, scored_key)
        pipe.hset(hash_key, mapping=fields)
        pipe.hset(hash_key, "years_experience", str((user.years_experience or 0) + 1))  # a partial update
        if rows:
            pipe.zadd(board_key, {row.id: float(row.air_score) for row in rows})
            pipe.sadd(scored_key, *names)
        for n in range(1, 4):  # three writes queued, as write-behind queues them
            pipe.rpush(queue_key, json.dumps({"user_id": user_id, "name": f"{user.name} v{n}"}))
        for structure in (hash_key, board_key, queue_key, scored_key):
            pipe.expire(structure, 300)
        await pipe.execute()
    raw = await client.get(string_key)
    top = await client.zrange(board_key, 0, 2, desc=True, withscores=True, use_rev=True)  # ZRANGE ... REV
    taken = await client.lpop(queue_key)
    member = await client.sismember(scored_key, user_id)
    events = (f"{await client.xlen(stream)} entries" if await client.exists(stream)
              else "(no stream yet: section 5's relay creates it with its first event)")
    channel = key("structures", "channel")
    return [
        await describe(client, string_key, raw or "(not cached now: fetch the user first)"),
        await describe(client, hash_key, f"years_experience (after HSET) = {await client.hget(hash_key, 'years_experience')}"),
        await describe(client, board_key, ", ".join(
            f"{names.get(member_id, '?')} ({member_id[:8]}…): {score:.2f}" for member_id, score in top) or "(no scores yet)"),
        await describe(client, queue_key, f"RPUSH 3 writes, LPOP took the first ({json.loads(taken)['name']}); "
                                          f"LLEN = {await client.llen(queue_key)}"),
        await describe(client, scored_key, f"SCARD = {await client.scard(scored_key)}; SISMEMBER this user = {member}"),
        await describe(client, stream, events),
        StructureRow(channel, "(a channel, not a key)", None, None, None, await publish_twice(client, channel),
                     PURPOSE["channel"]),
    ]


async def publish_twice(client: aioredis.Redis, channel: str) -> str:
    """PUBLISH with one subscriber listening, then with none: what each reached."""
    listener = client.pubsub()
    try:
        await listener.subscribe(channel)
        await listener.get_message(timeout=2.0)  # the subscription's confirmation
        heard = await client.publish(channel, "score updated")
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=2.0)
        await listener.unsubscribe(channel)
    finally:
        await listener.aclose()
    unheard = await client.publish(channel, "score updated again")
    got = message["data"] if message else "nothing"
    return (f"PUBLISH with 1 subscriber reached {heard} (it received: {got}); "
            f"PUBLISH after it left reached {unheard}: that message is gone")


@dataclass(frozen=True)
class _Plain:
    id: str
    email: str
    name: str
    occupation_code: str | None
    years_experience: float | None


def _plain(user: User) -> _Plain:
    return _Plain(user.id, user.email, user.name, user.occupation_code, user.years_experience)
