"""Section 5's view of the consumer's health, read now from Redis: the pending-entries list
(delivered, not acknowledged), the lag, the age of the oldest pending entry, the dead letters;
the lab's poison entries, appended to the stream as a broken producer would; and the aggregates
whose events wait behind a parked or retrying event."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import aliased

from source.consumer import CONSUMER_GROUP, dead_letter_key, read_raw
from source.database import Database
from source.models import DomainEvent, RelayLease, new_id


@dataclass(frozen=True)
class ConsumerHealth:
    pending: int  # entries delivered to a consumer and not acknowledged (the PEL)
    lag: int | None  # entries in the stream not yet delivered to the group (None: Redis cannot tell)
    oldest_pending_age: float | None  # seconds since the oldest unacknowledged entry was appended
    consumers: list[dict] = field(default_factory=list)
    pending_entries: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    dead_letter_count: int = 0


def shown(value: bytes | None) -> str:
    """A field as a dead letter keeps it: bytes that are not UTF-8 shown as escapes, never decoded."""
    return "-" if value is None else value.decode("utf-8", "backslashreplace")


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


async def consumer_health(*, redis_client: aioredis.Redis, stream: str, limit: int = 10) -> ConsumerHealth:
    """Raises redis.RedisError / OSError if Redis does not answer."""
    dead = dead_letter_key(stream)
    letters = [
        {"dead letter": dead_id.decode(), "stream entry": shown(f.get(b"dead_stream_id")),
         "event": shown(f.get(b"event_id"))[:12], "deliveries": shown(f.get(b"dead_deliveries")),
         "error": shown(f.get(b"dead_error"))}
        for dead_id, f in await read_raw(redis_client, "XREVRANGE", dead, "+", "-", "COUNT", limit)
    ]
    dead_count = await redis_client.xlen(dead)
    if not await redis_client.exists(stream):
        return ConsumerHealth(0, 0, None, dead_letters=letters, dead_letter_count=dead_count)
    group = next((g for g in await redis_client.xinfo_groups(stream) if g["name"] == CONSUMER_GROUP), None)
    if group is None:
        return ConsumerHealth(0, None, None, dead_letters=letters, dead_letter_count=dead_count)
    seconds, micros = await redis_client.time()  # the server's clock, the one entry IDs are made from
    now_ms = seconds * 1000 + micros // 1000
    summary = await redis_client.xpending(stream, CONSUMER_GROUP)
    oldest = (now_ms - _entry_ms(summary["min"])) / 1000 if summary["pending"] else None
    entries = [
        {"entry": p["message_id"], "consumer": p["consumer"], "deliveries": p["times_delivered"],
         "idle (s)": round(p["time_since_delivered"] / 1000, 1)}
        for p in await redis_client.xpending_range(stream, CONSUMER_GROUP, min="-", max="+", count=limit)
    ]
    consumers = [
        {"consumer": c["name"], "pending": c["pending"], "idle (s)": round(c["idle"] / 1000, 1)}
        for c in await redis_client.xinfo_consumers(stream, CONSUMER_GROUP)
    ]
    return ConsumerHealth(
        pending=summary["pending"], lag=group.get("lag"), oldest_pending_age=oldest, consumers=consumers,
        pending_entries=entries, dead_letters=letters, dead_letter_count=dead_count,
    )


POISONS = {
    "payload is not JSON": {"payload": "not json"},
    "no score_id": {"payload": json.dumps({"air_score": 50.0})},
    "air_score is not a number": {"payload": json.dumps({"score_id": "s-1", "air_score": "high"})},
    "an 80-character event ID": {"event_id": "x" * 80},
    "a NUL byte in the event ID": {"event_id": "bad\x00id"},
    "created_at before year 1 in UTC": {"created_at": "0001-01-01T00:00:00+14:00"},
    "bytes that are not UTF-8": {"aggregate_id": b"\xff\xfe-user"},
    "a 1 MB payload": {"payload": json.dumps({"score_id": "s-1", "air_score": 50.0, "pad": "x" * 1_000_000})},
}


async def append_poison(*, redis_client: aioredis.Redis, stream: str, kind: str, user_id: str) -> str:
    """Append an entry the consumer cannot apply (as a broken producer might); its stream ID."""
    fields = {
        "event_id": new_id(), "event_type": "AIRScoreCalculated", "aggregate_type": "User", "aggregate_id": user_id,
        "sequence": "1", "created_at": "2026-01-01T00:00:00+00:00",
        "payload": json.dumps({"score_id": new_id(), "air_score": 50.0}),
    }
    return await redis_client.xadd(stream, {**fields, **POISONS[kind]})


async def blocked_aggregates(*, db: Database, limit: int = 10) -> list[dict]:
    """Aggregates whose later events wait: behind an event parked as failed, or behind one that
    waits for its retry. One row per blocking event, with how many events wait behind it."""
    now = datetime.now(UTC)
    later = aliased(DomainEvent)
    behind = (
        select(func.count())
        .where(
            later.aggregate_type == DomainEvent.aggregate_type, later.aggregate_id == DomainEvent.aggregate_id,
            later.status == "pending", later.sequence > DomainEvent.sequence,
        )
        .scalar_subquery()
    )
    blocking = or_(DomainEvent.status == "failed",
                   and_(DomainEvent.status == "pending", DomainEvent.next_attempt_at > now))
    async with db.sessions() as session:
        rows = (await session.execute(
            select(DomainEvent, behind).where(blocking).order_by(DomainEvent.created_at, DomainEvent.sequence).limit(limit)
        )).all()
    return [
        {"user": event.aggregate_id[:8], "blocking event": f"{event.id[:8]} (no. {event.sequence})",
         "why": ("parked as failed: retry or discard it" if event.status == "failed"
                 else f"waits for its retry at {event.next_attempt_at:%H:%M:%S} UTC"),
         "events waiting behind it": waiting, "last error": event.last_error or ""}
        for event, waiting in rows
    ]


@dataclass(frozen=True)
class BrokerDurability:
    """What the server says about keeping the stream: None where it would not say (the embedded
    Redis has no CONFIG; a managed Redis may refuse it)."""

    maxmemory_policy: str | None
    maxmemory: int | None
    appendonly: str | None
    appendfsync: str | None
    save: str | None = None  # RDB snapshot points, e.g. "3600 1 300 100"; "" takes none

    @property
    def memory_limited(self) -> bool | None:
        """maxmemory 0 sets no limit: Redis then neither evicts nor refuses a write for memory."""
        return None if self.maxmemory is None else self.maxmemory > 0

    @property
    def may_evict_the_stream(self) -> bool | None:
        """With a memory limit, allkeys-* policies evict any key once it is reached, the stream
        included; volatile-* ones only keys with a TTL (the stream has none); noeviction none."""
        if self.maxmemory_policy is None or self.maxmemory is None:
            return None
        return self.memory_limited and self.maxmemory_policy.startswith("allkeys")


async def lease_holders(*, db: Database) -> dict[str, int]:
    """PostgreSQL: the relays holding partitions under a lease not yet expired, and how many each."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(RelayLease.holder, func.count()).where(RelayLease.expires_at > func.now())
            .group_by(RelayLease.holder).order_by(RelayLease.holder))
    return dict(rows.all())


async def broker_durability(*, redis_client: aioredis.Redis) -> BrokerDurability:
    values = {}
    for name in ("maxmemory-policy", "maxmemory", "appendonly", "appendfsync", "save"):
        try:
            values[name] = (await redis_client.config_get(name)).get(name)
        except redis.ResponseError:  # CONFIG unknown or not allowed
            values[name] = None
    return BrokerDurability(
        maxmemory_policy=values["maxmemory-policy"],
        maxmemory=None if values["maxmemory"] is None else int(values["maxmemory"]),
        appendonly=values["appendonly"], appendfsync=values["appendfsync"], save=values["save"],
    )
