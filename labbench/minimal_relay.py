"""The bench's anchor for the relay: a minimal correct relay on a raw asyncpg connection, on the
lab's own migrated table, keeping the lab relay's guarantees: the due filter, the wait behind an
earlier event of the aggregate that is retrying or parked, FOR UPDATE SKIP LOCKED, the same
stream fields, one XADD pipeline, the pending guard on the UPDATE, one transaction per batch, and
a retry record per event when the broker fails; in aggregate order, the lab's two claim statements
(advisory locks, then the events of the aggregates held) in place of SKIP LOCKED. PostgreSQL only.
Not for learners: relay_batch is the readable one; this one says how fast the same work can go."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import redis
import redis.asyncio as aioredis

from source.outbox_claims import WINDOW_PER_EVENT

DUE = """e.status = 'pending' AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= $1)
  AND NOT EXISTS (
    SELECT 1 FROM domain_events w
    WHERE w.aggregate_type = e.aggregate_type AND w.aggregate_id = e.aggregate_id
      AND (w.status = 'failed' OR (w.status = 'pending' AND w.next_attempt_at > $1))
      AND (w.created_at < e.created_at OR (w.created_at = e.created_at AND w.id < e.id)))"""
COLUMNS = "e.id, e.event_type, e.aggregate_type, e.aggregate_id, e.created_at, e.payload, e.attempts"
CLAIM = f"""
SELECT {COLUMNS} FROM domain_events e WHERE {DUE}
ORDER BY e.created_at, e.id
LIMIT $2
FOR UPDATE OF e SKIP LOCKED
"""
# The aggregate-order claim, as the lab's (outbox_claims.py): take the advisory locks of up to $2
# aggregates among the oldest $3 due events, then, in a second statement and so a second snapshot,
# the due events of the aggregates held.
LOCK_KEY = "hashtextextended(e.aggregate_type || '/' || e.aggregate_id, 0)"
LOCK_OLDEST_AGGREGATES = f"""
SELECT lock_key FROM (
  SELECT lock_key FROM (
    SELECT {LOCK_KEY} AS lock_key, e.created_at FROM domain_events e WHERE {DUE}
    ORDER BY e.created_at, e.id LIMIT $3) oldest
  GROUP BY lock_key ORDER BY min(created_at) LIMIT $3) aggregates
WHERE pg_try_advisory_xact_lock(lock_key)
LIMIT $2
"""
EVENTS_OF_HELD = f"""
SELECT {COLUMNS} FROM domain_events e WHERE {LOCK_KEY} = ANY($3::bigint[]) AND {DUE}
ORDER BY e.created_at, e.id
LIMIT $2
FOR UPDATE OF e
"""
MARK = "UPDATE domain_events SET status = 'published', published_at = $2 WHERE id = ANY($1::varchar[]) AND status = 'pending'"
RETRY = """UPDATE domain_events SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
WHERE id = ANY($1::varchar[])"""


async def claim(connection: asyncpg.Connection, now: datetime, batch_size: int, *, ordered: bool) -> list:
    if not ordered:
        return await connection.fetch(CLAIM, now, batch_size)
    window = batch_size * WINDOW_PER_EVENT  # the lab's, so that both claims search as far
    held = [row["lock_key"] for row in await connection.fetch(LOCK_OLDEST_AGGREGATES, now, batch_size, window)]
    return await connection.fetch(EVENTS_OF_HELD, now, batch_size, held) if held else []


async def minimal_relay_batch(
    connection: asyncpg.Connection, redis_client: aioredis.Redis, stream: str, *, batch_size: int = 100,
    ordered: bool = False,
) -> int:
    """One batch, in any order (SKIP LOCKED) or in aggregate order; the number of events published
    (0: nothing due)."""
    now = datetime.now(UTC)
    async with connection.transaction():
        rows = await claim(connection, now, batch_size, ordered=ordered)
        if not rows:
            return 0
        try:
            async with redis_client.pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.xadd(stream, {
                        "event_id": row["id"], "event_type": row["event_type"], "aggregate_type": row["aggregate_type"],
                        "aggregate_id": row["aggregate_id"], "created_at": row["created_at"].isoformat(),
                        "payload": json.dumps(json.loads(row["payload"]), sort_keys=True),
                    })
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            later = now + timedelta(seconds=0.5 * random.uniform(0.5, 1.0))
            await connection.execute(RETRY, [row["id"] for row in rows], f"{type(exc).__name__}: {exc}"[:500], later)
            return 0
        await connection.execute(MARK, [row["id"] for row in rows], now)
    return len(rows)


async def minimal_notify_relay(dsn: str, redis_client: aioredis.Redis, stream: str, *, channel: str,
                               stop, fallback_poll: float = 1.0, ordered: bool = False) -> None:
    """The anchor for commit-to-stream latency: LISTEN on its own connection, and on each NOTIFY
    (or every `fallback_poll` seconds) run minimal_relay_batch until nothing is due."""
    import asyncio

    connection, listener = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    wake = asyncio.Event()
    try:
        await listener.add_listener(channel, lambda *_: wake.set())
        while not stop.is_set():
            wake.clear()
            while await minimal_relay_batch(connection, redis_client, stream, ordered=ordered) == 100:
                pass
            try:
                await asyncio.wait_for(wake.wait(), fallback_poll)
            except TimeoutError:
                pass
    finally:
        await listener.close()
        await connection.close()
