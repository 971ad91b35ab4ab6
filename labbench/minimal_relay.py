"""The bench's anchor for the relay: a minimal correct relay on a raw asyncpg connection, on the
lab's own migrated table, keeping the lab relay's guarantees: the due filter, the wait behind an
earlier event of the aggregate that is retrying or parked, the same
stream fields, one XADD pipeline, the pending guard on the UPDATE, one transaction per batch, and
a retry record per event when the broker fails, each event's stream entry ID kept with its mark. Its
claim is the lab's own statement, sent as SQL text (claim_sql): any order (SKIP LOCKED) or in
aggregate order (the users of the partitions this relay leases). PostgreSQL only.
Not for learners: relay_batch is the readable one; this one says how fast the same work can go."""

from __future__ import annotations

import functools
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import redis
import redis.asyncio as aioredis
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from source.outbox_claims import ANY_ORDER_CLAIM, PARTITIONED_CLAIM, per_partition
from source.partitions import PARTITIONS


@functools.cache
def claim_sql(*, ordered: bool, batch_size: int, per_partition: int) -> tuple[str, tuple[str, ...]]:
    """The lab relay's own claim (outbox_claims.py) as the SQL text PostgreSQL receives, with its
    sizes written in, and the names of its $n parameters in order: the anchor sends the same SQL
    without SQLAlchemy."""
    statement = (PARTITIONED_CLAIM if ordered else ANY_ORDER_CLAIM).params(
        limit=batch_size, per_partition=per_partition, now=None, relay=None)  # the last two stay $n parameters
    compiled = statement.compile(dialect=asyncpg_dialect.dialect(), compile_kwargs={"render_postcompile": True})
    return str(compiled), tuple(compiled.positiontup)


# A relay alone (the anchor run by itself): every partition leased to it for 3 s, renewed each
# second, and given back when it stops.
HOLD_ALL = f"""INSERT INTO relay_leases (partition, holder, expires_at)
SELECT p, $1, now() + interval '3 seconds' FROM generate_series(0, {PARTITIONS - 1}) AS p
ON CONFLICT (partition) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"""
GIVE_BACK = "UPDATE relay_leases SET holder = NULL, expires_at = NULL WHERE holder = $1"
MARK = """UPDATE domain_events SET status = 'published', published_at = $3, stream_id = m.stream_id
FROM unnest($1::varchar[], $2::varchar[]) AS m(id, stream_id) WHERE domain_events.id = m.id AND status = 'pending'"""
RETRY = """UPDATE domain_events SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
WHERE id = ANY($1::varchar[])"""


async def claim(connection: asyncpg.Connection, now: datetime, batch_size: int, *, relay: str | None) -> list:
    """In aggregate order, as the lab's relay holding every partition (HOLD_ALL) would."""
    sql, names = claim_sql(ordered=relay is not None, batch_size=batch_size,
                           per_partition=per_partition(batch_size, PARTITIONS))
    given = {"now": now, "relay": relay}
    return await connection.fetch(sql, *(given[name] for name in names))


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
        if relay:
            await connection.execute(GIVE_BACK, relay)
        await listener.close()
        await connection.close()
