"""The bench's anchor for the relay: a minimal correct relay on a raw asyncpg connection, on the
lab's own migrated table, keeping the lab relay's guarantees: the due filter, the wait behind an
earlier event of the aggregate that is retrying or parked, FOR UPDATE SKIP LOCKED, the same
stream fields, one XADD pipeline, the pending guard on the UPDATE, one transaction per batch, and
a retry record per event when the broker fails, each event's stream entry ID kept with its mark; in
aggregate order, the lab's partitioned claim (the users of the partitions this relay leases, the
lease rows FOR SHARE, the events FOR UPDATE) in place of SKIP LOCKED. PostgreSQL only.
Not for learners: relay_batch is the readable one; this one says how fast the same work can go."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import redis
import redis.asyncio as aioredis

from source.partitions import PARTITIONS

DUE = """{e}.status = 'pending' AND ({e}.next_attempt_at IS NULL OR {e}.next_attempt_at <= $1)
  AND NOT EXISTS (
    SELECT 1 FROM domain_events w
    WHERE w.aggregate_type = {e}.aggregate_type AND w.aggregate_id = {e}.aggregate_id
      AND (w.status = 'failed' OR (w.status = 'pending' AND w.next_attempt_at > $1))
      AND w.sequence < {e}.sequence)"""
COLUMNS = "c.id, c.event_type, c.aggregate_type, c.aggregate_id, c.sequence, c.created_at, c.payload, c.attempts"
# The users of the oldest due events ($2 of them) meeting {also}, oldest first; then each user's due
# events in sequence order (as the lab's claims, outbox_claims.py).
OLDEST_USERS = f"""
SELECT * FROM (
  SELECT aggregate_type, aggregate_id, min(created_at) AS age FROM (
    SELECT e.aggregate_type, e.aggregate_id, e.created_at FROM domain_events e WHERE {DUE.format(e="e")} {{also}}
    ORDER BY e.created_at, e.id LIMIT $2) oldest
  GROUP BY aggregate_type, aggregate_id) o
ORDER BY age, aggregate_type, aggregate_id"""


def _claim(also: str, lock: str) -> str:
    return f"""
SELECT {COLUMNS} FROM ({OLDEST_USERS.format(also=also)}) u
JOIN LATERAL (
  SELECT * FROM domain_events c WHERE c.aggregate_type = u.aggregate_type AND c.aggregate_id = u.aggregate_id
    AND {DUE.format(e="c")}
  ORDER BY c.sequence LIMIT $2 {lock}) c ON true
ORDER BY u.age, u.aggregate_type, u.aggregate_id, c.sequence LIMIT $2
"""


CLAIM = _claim("", "FOR UPDATE SKIP LOCKED")
# In aggregate order: only the users of the partitions relay $3 leases, the lease rows FOR SHARE.
PARTITIONED_CLAIM = _claim(f"""AND (hashtextextended(e.aggregate_type || '/' || e.aggregate_id, 0) & {PARTITIONS - 1})
      IN (SELECT partition FROM relay_leases WHERE holder = $3 AND expires_at > now() FOR SHARE)""", "FOR UPDATE")
# A relay alone (the anchor run by itself): every partition leased to it for 10 s, renewed each second.
HOLD_ALL = f"""INSERT INTO relay_leases (partition, holder, expires_at)
SELECT p, $1, now() + interval '10 seconds' FROM generate_series(0, {PARTITIONS - 1}) AS p
ON CONFLICT (partition) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"""
MARK = """UPDATE domain_events SET status = 'published', published_at = $3, stream_id = m.stream_id
FROM unnest($1::varchar[], $2::varchar[]) AS m(id, stream_id) WHERE domain_events.id = m.id AND status = 'pending'"""
RETRY = """UPDATE domain_events SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
WHERE id = ANY($1::varchar[])"""


async def claim(connection: asyncpg.Connection, now: datetime, batch_size: int, *, relay: str | None) -> list:
    if relay is None:
        return await connection.fetch(CLAIM, now, batch_size)
    return await connection.fetch(PARTITIONED_CLAIM, now, batch_size, relay)


def _text(entry_id) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


async def minimal_relay_batch(
    connection: asyncpg.Connection, redis_client: aioredis.Redis, stream: str, *, batch_size: int = 100,
    relay: str | None = None,
) -> int:
    """One batch, in any order (SKIP LOCKED) or, given the id of a relay holding partitions, in
    aggregate order; the number of events published (0: nothing due)."""
    now = datetime.now(UTC)
    async with connection.transaction():
        rows = await claim(connection, now, batch_size, relay=relay)
        if not rows:
            return 0
        try:
            async with redis_client.pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.xadd(stream, {
                        "event_id": row["id"], "event_type": row["event_type"], "aggregate_type": row["aggregate_type"],
                        "aggregate_id": row["aggregate_id"], "sequence": str(row["sequence"]),
                        "created_at": row["created_at"].isoformat(),
                        "payload": row["payload"],
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
    wake, relay, renewed = asyncio.Event(), f"minimal-{uuid.uuid4().hex[:8]}" if ordered else None, 0.0
    try:
        await listener.add_listener(channel, lambda *_: wake.set())
        while not stop.is_set():
            wake.clear()
            if relay and time.monotonic() - renewed >= 1.0:
                await connection.execute(HOLD_ALL, relay)
                renewed = time.monotonic()
            while await minimal_relay_batch(connection, redis_client, stream, relay=relay) == 100:
                pass
            try:
                await asyncio.wait_for(wake.wait(), fallback_poll)
            except TimeoutError:
                pass
    finally:
        await listener.close()
        await connection.close()
