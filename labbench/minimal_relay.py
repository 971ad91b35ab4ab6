"""The bench's anchor for the relay: a minimal correct relay on a raw asyncpg connection, on the
lab's own migrated table, keeping the lab relay's guarantees: the due filter, the wait behind an
earlier event of the aggregate that is retrying or parked, FOR UPDATE SKIP LOCKED, the same
stream fields, one XADD pipeline, the pending guard on the UPDATE, one transaction per batch, and
a retry record per event when the broker fails, each event's stream entry ID kept with its mark; in
aggregate order, the lab's two claim statements (advisory locks, then the events of the users held)
in place of SKIP LOCKED. PostgreSQL only.
Not for learners: relay_batch is the readable one; this one says how fast the same work can go."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import redis
import redis.asyncio as aioredis

from source.outbox_claims import WINDOW_PER_EVENT

DUE = """{e}.status = 'pending' AND ({e}.next_attempt_at IS NULL OR {e}.next_attempt_at <= $1)
  AND NOT EXISTS (
    SELECT 1 FROM domain_events w
    WHERE w.aggregate_type = {e}.aggregate_type AND w.aggregate_id = {e}.aggregate_id
      AND (w.status = 'failed' OR (w.status = 'pending' AND w.next_attempt_at > $1))
      AND w.sequence < {e}.sequence)"""
COLUMNS = "c.id, c.event_type, c.aggregate_type, c.aggregate_id, c.sequence, c.created_at, c.payload, c.attempts"
# The users of the oldest due events ($3 of them), oldest first; then each user's due events in
# sequence order (as the lab's claims, outbox_claims.py).
OLDEST_USERS = f"""
SELECT aggregate_type, aggregate_id, min(created_at) AS age FROM (
  SELECT e.aggregate_type, e.aggregate_id, e.created_at FROM domain_events e WHERE {DUE.format(e="e")}
  ORDER BY e.created_at, e.id LIMIT $3) oldest
GROUP BY aggregate_type, aggregate_id"""


def _their_events(lock: str) -> str:
    return f"""JOIN LATERAL (
  SELECT * FROM domain_events c WHERE c.aggregate_type = u.aggregate_type AND c.aggregate_id = u.aggregate_id
    AND {DUE.format(e="c")}
  ORDER BY c.sequence LIMIT $2 {lock}) c ON true"""


CLAIM = f"""
SELECT {COLUMNS} FROM (SELECT * FROM ({OLDEST_USERS}) o ORDER BY age, aggregate_type, aggregate_id LIMIT $2) u
{_their_events("FOR UPDATE SKIP LOCKED")}
ORDER BY u.age, u.aggregate_type, u.aggregate_id, c.sequence LIMIT $2
"""
# In aggregate order: take the advisory locks of up to $2 users among those of the oldest $3 due
# events, then, in a second statement and so a second snapshot, the due events of the users held.
LOCK_OLDEST_USERS = f"""
SELECT aggregate_type, aggregate_id FROM (
  SELECT aggregate_type, aggregate_id, hashtextextended(aggregate_type || '/' || aggregate_id, 0) AS lock_key
  FROM ({OLDEST_USERS}) o ORDER BY age, aggregate_type, aggregate_id LIMIT $3) users
WHERE pg_try_advisory_xact_lock(lock_key)
LIMIT $2
"""
EVENTS_OF_HELD = f"""
SELECT {COLUMNS} FROM unnest($3::varchar[], $4::varchar[]) WITH ORDINALITY AS u(aggregate_type, aggregate_id, held)
{_their_events("FOR UPDATE")}
ORDER BY u.held, c.sequence LIMIT $2
"""
MARK = """UPDATE domain_events SET status = 'published', published_at = $3, stream_id = m.stream_id
FROM unnest($1::varchar[], $2::varchar[]) AS m(id, stream_id) WHERE domain_events.id = m.id AND status = 'pending'"""
RETRY = """UPDATE domain_events SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
WHERE id = ANY($1::varchar[])"""


async def claim(connection: asyncpg.Connection, now: datetime, batch_size: int, *, ordered: bool) -> list:
    if not ordered:
        return await connection.fetch(CLAIM, now, batch_size, batch_size)
    window = batch_size * WINDOW_PER_EVENT  # the lab's, so that both claims search as far
    held = await connection.fetch(LOCK_OLDEST_USERS, now, batch_size, window)
    if not held:
        return []
    types, ids = [row["aggregate_type"] for row in held], [row["aggregate_id"] for row in held]
    return await connection.fetch(EVENTS_OF_HELD, now, batch_size, types, ids)


def _text(entry_id) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


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
                        "aggregate_id": row["aggregate_id"], "sequence": str(row["sequence"]),
                        "created_at": row["created_at"].isoformat(),
                        "payload": json.dumps(json.loads(row["payload"]), sort_keys=True),
                    })
                entry_ids = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            later = now + timedelta(seconds=0.5 * random.uniform(0.5, 1.0))
            await connection.execute(RETRY, [row["id"] for row in rows], f"{type(exc).__name__}: {exc}"[:500], later)
            return 0
        await connection.execute(MARK, [row["id"] for row in rows], [_text(e) for e in entry_ids], now)
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
