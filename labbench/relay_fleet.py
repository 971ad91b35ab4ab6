"""Several relays, each in a process of its own (labbench/relay_process.py --fleet), drain a burst of
events from a fresh database to a fresh stream; then an observer reads the stream (XRANGE) against
the database's order, and the lab's consumer applies the stream, so that an event applied twice shows
in the read model. For bench.py's relays section and its test.

The relays settle before the clock starts (in aggregate order: all are members and each holds its
share of the partitions), start together on "go", and the clock stops when the last one finds no
event pending. With `kill=True` the first relay to publish a batch is SIGKILLed at once, holding
its partitions, and the survivors take them over once its leases expire.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from sqlalchemy import func, select, text

from labbench.outbox_health import lease_holders
from labbench.relay_race import add_burst, order_faults
from source.consumer import CONSUMER_GROUP, ConsumerSettings, dead_letter_key, event_consumer
from source.database import Database
from source.models import DomainEvent, InboxEntry, ScoreSummary, new_id
from source.outbox_claims import AGGREGATE_ORDER
from source.outbox_stats import Stats
from source.partitions import PARTITIONS

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FleetResult:
    design: str
    relays: int
    events: int  # created
    seconds: float  # from "go" until the last relay found nothing pending
    duplicates: int  # stream entries of an event already in the stream
    inversions: int  # events appended after a later event of the same user
    lost: int  # events never appended
    applied: int  # events the consumer applied (inbox rows)
    applied_twice: int  # scores counted in the read model beyond each user's events
    per_relay: tuple[int, ...]  # events each relay said it published (the killed one: before its kill)
    take_over: float | None = None  # kill round: seconds from the kill until the survivors held every partition
    kill_to_done: float | None = None  # kill round: seconds from the kill until the last relay found nothing pending
    victim_partitions: int | None = None  # kill round: partitions the killed relay held when killed

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


class _Relay:
    """A relay process and what it has said: "ready <id>", "published <n>" per batch, "done <n>".
    A line on its stdin starts it; the end of its stdin stops it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process, self.relay_id, self.published, self.done_at = process, "", 0, None
        self.ready, self.first_batch, self.done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for line in self.process.stdout:
            word, _, rest = line.decode().strip().partition(" ")
            if word == "ready":
                self.relay_id = rest
                self.ready.set()
            elif word == "published":
                self.published += int(rest)
                self.first_batch.set()
            elif word == "done":
                self.done_at = time.perf_counter()
                self.done.set()

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        """Wait for `event`; raise if the process ends first or the time runs out."""
        waiting = asyncio.ensure_future(event.wait())
        await asyncio.wait({waiting, self.reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not event.is_set():
            waiting.cancel()
            raise RuntimeError(f"relay process {self.process.pid} ended (code {self.process.returncode}) "
                               f"or took over {timeout:g} s")


def score_event(n: int, user: str) -> DomainEvent:
    """An AIRScoreCalculated event, which the lab's consumer applies to the user's read model."""
    return DomainEvent(event_type="AIRScoreCalculated", aggregate_type="User", aggregate_id=user,
                       payload={"score_id": new_id(), "user_id": user, "air_score": float(n % 100)})


async def add_scores(db: Database, *, events: int, users: int) -> None:
    """`events` AIRScoreCalculated events over `users` users (relay_race.add_burst), then statistics."""
    await add_burst(db, events=events, users=users, make=score_event)
    async with db.engine.connect() as connection:  # as autovacuum soon would: the claim's plan needs statistics
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE domain_events"))


async def run_fleet(database_url: str, redis_url: str, *, relays: int, design: str, events: int = 10_000,
                    users: int = 20, batch: int = 100, kill: bool = False, key_prefix: str = "lab:",
                    timeout: float = 120.0) -> FleetResult:
    """Run the fleet on `database_url`, a fresh PostgreSQL database (migrated to head here), and a
    fresh stream under `key_prefix` (deleted afterwards, with its group); the relays are killed
    if anything fails."""
    if kill and (design != AGGREGATE_ORDER or relays < 2):
        raise ValueError("the kill round is for two relays or more in aggregate order")
    stream = f"{key_prefix}fleet:{uuid.uuid4().hex[:10]}"
    db, client = Database(database_url), aioredis.Redis.from_url(redis_url, decode_responses=True)
    fleet: list[_Relay] = []
    try:
        await db.upgrade_to_head()
        await add_scores(db, events=events, users=users)
        command = [sys.executable, "-m", "labbench.relay_process", database_url, redis_url, stream, "--fleet",
                   "--relays", str(relays), "--design", design, "--batch", str(batch)]
        for _ in range(relays):
            fleet.append(_Relay(await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO)))
        for relay in fleet:
            await relay.wait(relay.ready, timeout)
        started = time.perf_counter()
        for relay in fleet:
            relay.process.stdin.write(b"go\n")
        await asyncio.gather(*(relay.process.stdin.drain() for relay in fleet))
        killed = take_over = victim_partitions = None
        survivors = fleet
        if kill:
            killed, take_over, victim_partitions, survivors = await _kill_one(db, fleet, timeout)
        for relay in survivors:
            await relay.wait(relay.done, timeout)
        finished = max(relay.done_at for relay in survivors)
        for relay in survivors:
            relay.process.stdin.close()  # stop: each leaves its partitions and ends
        async with db.sessions() as session:
            order = [tuple(row) for row in await session.execute(
                select(DomainEvent.aggregate_id, DomainEvent.id).order_by(DomainEvent.aggregate_id, DomainEvent.sequence))]
        duplicates, inversions, lost = order_faults([fields for _, fields in await client.xrange(stream)], order)
        applied, applied_twice = await _apply_stream(db, client, stream, Counter(user for user, _ in order), timeout)
        return FleetResult(design, relays, events, finished - started, duplicates, inversions, lost, applied,
                           applied_twice, tuple(relay.published for relay in fleet), take_over,
                           None if killed is None else finished - killed, victim_partitions)
    finally:
        for relay in fleet:
            if relay.process.returncode is None:
                relay.process.kill()
            await relay.process.wait()
            relay.reader.cancel()
        await client.delete(stream, dead_letter_key(stream))  # the consumer group goes with its stream
        await client.aclose()
        await db.dispose()


async def _kill_one(db: Database, fleet: list[_Relay], timeout: float) -> tuple[float, float, int, list[_Relay]]:
    """SIGKILL the first relay to publish a batch; (when, seconds until the survivors held all its
    partitions, how many it held, the survivors)."""
    waits = {asyncio.ensure_future(relay.first_batch.wait()): relay for relay in fleet}
    finished, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    if not finished:
        raise RuntimeError(f"no relay published a batch within {timeout:g} s")
    victim = waits[finished.pop()]
    victim.process.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    survivors = [relay for relay in fleet if relay is not victim]
    held = Counter(await lease_holders(db=db))
    victim_partitions = held[victim.relay_id]  # its leases outlive it by up to ttl
    while set(held) != {relay.relay_id for relay in survivors} or sum(held.values()) < PARTITIONS:
        if time.perf_counter() - killed > timeout:
            raise RuntimeError(f"the killed relay's partitions were not taken over within {timeout:g} s")
        await asyncio.sleep(0.02)
        held = Counter(await lease_holders(db=db))
    return killed, time.perf_counter() - killed, victim_partitions, survivors


async def _apply_stream(db: Database, client: aioredis.Redis, stream: str, per_user: Counter,
                        timeout: float) -> tuple[int, int]:
    """The lab's consumer applies the whole stream: (events applied, scores counted twice)."""
    stop, last = asyncio.Event(), (await client.xrevrange(stream, count=1))[0][0]
    consumer = asyncio.create_task(event_consumer(db=db, redis_client=client, stream=stream, stop=stop,
                                                  settings=ConsumerSettings(batch_size=500, block=0.05), stats=Stats()))
    try:
        deadline = time.monotonic() + timeout
        while not await _consumed(client, stream, last):
            if time.monotonic() > deadline or consumer.done():
                raise RuntimeError(f"the consumer did not apply the stream within {timeout:g} s")
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await consumer
    async with db.sessions() as session:
        applied = await session.scalar(select(func.count()).select_from(InboxEntry))
        counted = dict((await session.execute(select(ScoreSummary.user_id, ScoreSummary.scores_applied))).all())
    return applied, sum(max(counted.get(user, 0) - n, 0) for user, n in per_user.items())


async def _consumed(client: aioredis.Redis, stream: str, last: str) -> bool:
    """The group has read up to the stream's last entry and acknowledged everything."""
    groups = {group["name"]: group for group in await client.xinfo_groups(stream)}
    group = groups.get(CONSUMER_GROUP)
    return group is not None and group["last-delivered-id"] == last and group["pending"] == 0
