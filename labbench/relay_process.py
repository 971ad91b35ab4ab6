"""A relay in a process of its own: `python -m labbench.relay_process DATABASE_URL REDIS_URL STREAM`.

For the tests that SIGKILL it: after each pipeline has appended its batch it prints "appended N"
and waits `--hold` seconds before the relay marks the batch published, so that a test can kill
it between the append and the commit: mid-batch.

For bench.py's commit-to-stream latency, `--as-deployed`: the lab's relay with its default
settings and no wrapper, or with `--minimal` the minimal raw-asyncpg relay (its claim as
`--design` says), until SIGTERM. A
process of its own, as a relay worker is deployed: it shares no event loop and no garbage
collector with the code that commits and reads.

For bench.py's several relays (labbench/relay_fleet.py), `--fleet --relays N`: the relay says
"ready <its id>" once it is settled (in aggregate order, N relays are members and it holds its fair
share of the partitions; in any order, connected), keeps its leases while it waits, and starts on a
line on stdin ("go"). It then publishes until no event is pending, saying "published <n>" after each
batch and "done <n>" at the end, and stays a member holding its share until stdin ends."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import redis.asyncio as aioredis
from sqlalchemy import exists, select

from labbench.faults import PipelineWrapper, WrappedBroker
from source.database import Database
from source.models import DomainEvent, RelayMember
from source.outbox import NOTIFY_CHANNEL, RelaySettings, event_publisher, relay_batch, relay_database
from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER
from source.partitions import LeaseSettings, Partitions, fair_share


class _HoldingPipeline(PipelineWrapper):
    """Appends, says so, then holds the relay between its append and its commit."""

    def __init__(self, pipeline, hold: float) -> None:
        super().__init__(pipeline)
        self.hold = hold

    async def execute(self, *args, **kwargs):
        replies = await self.pipeline.execute(*args, **kwargs)
        print(f"appended {len(replies)}", flush=True)
        if self.hold:
            await asyncio.sleep(self.hold)
        return replies


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("redis_url")
    parser.add_argument("stream")
    parser.add_argument("--hold", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--design", choices=[AGGREGATE_ORDER, ANY_ORDER], default=AGGREGATE_ORDER)
    parser.add_argument("--as-deployed", action="store_true")
    parser.add_argument("--minimal", action="store_true")
    parser.add_argument("--fleet", action="store_true")
    parser.add_argument("--relays", type=int, default=1)
    args = parser.parse_args(argv)
    client = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    if args.as_deployed:
        await as_deployed(args, client)
        return
    if args.fleet:
        await fleet(args, client)
        return
    db = Database(args.database_url)
    settings = RelaySettings(batch_size=args.batch, poll_interval=0.02, notify_fallback_poll=0.5, design=args.design)
    print("ready", flush=True)
    await event_publisher(db=db, redis_client=WrappedBroker(client, lambda pipeline: _HoldingPipeline(pipeline, args.hold)), stream=args.stream,
                          stop=asyncio.Event(), settings=settings)


async def as_deployed(args: argparse.Namespace, client: aioredis.Redis) -> None:
    stop = asyncio.Event()
    # SIGTERM lets the batch in flight commit: killed between its XADD and its commit, a relay
    # leaves the event pending, and the next relay appends it again.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if args.minimal:
        from labbench.minimal_relay import minimal_notify_relay

        relay = minimal_notify_relay(Database(args.database_url).asyncpg_dsn, client, args.stream, channel=NOTIFY_CHANNEL,
                                     stop=stop, ordered=args.design == AGGREGATE_ORDER)
    else:
        relay = event_publisher(db=relay_database(args.database_url), redis_client=client, stream=args.stream, stop=stop,
                                settings=RelaySettings(design=args.design))
    print("ready", flush=True)
    await relay


async def fleet(args: argparse.Namespace, client: aioredis.Redis) -> None:
    db, partitions = relay_database(args.database_url), Partitions()
    settings = RelaySettings(batch_size=args.batch, design=args.design)
    leased = args.design == AGGREGATE_ORDER
    announced = False

    async def settle() -> None:
        nonlocal announced
        if not announced and await _settled(db, client, partitions, args):
            print(f"ready {partitions.relay_id}", flush=True)
            announced = True

    async def renew() -> None:
        if leased:
            await partitions.refresh(db)

    try:
        if not await _until_a_line(settle):
            return  # stdin closed before "go": the parent gave up
        published = 0
        while True:
            result = await relay_batch(db=db, redis_client=client, stream=args.stream, settings=settings,
                                       partitions=partitions)
            if result.error:
                raise RuntimeError(result.error)
            if result.claimed:
                published += result.published
                print(f"published {result.published}", flush=True)
            elif await _anything_pending(db):
                await asyncio.sleep(0.005)  # the rest is in other relays' partitions, or locked by them
            else:
                break
        print(f"done {published}", flush=True)
        await _until_a_line(renew)  # still a member, holding its share, until stdin ends
        if leased:
            await partitions.leave(db)
    finally:
        await db.dispose()
        await client.aclose()


async def _until_a_line(step) -> str:
    """Await `step()` every heartbeat until stdin gives a line; the line ("" at its end)."""
    line = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
    while not line.done():
        await step()
        await asyncio.wait({line}, timeout=LeaseSettings().heartbeat)
    return line.result()


async def _settled(db: Database, client: aioredis.Redis, partitions: Partitions, args: argparse.Namespace) -> bool:
    """Any order: connected. Aggregate order: all the relays are members and this one holds its share."""
    await client.ping()
    if args.design == ANY_ORDER:
        await _anything_pending(db)  # the database answers too
        return True
    await partitions.refresh(db)
    async with db.sessions() as session:
        members = list(await session.scalars(select(RelayMember.relay_id).order_by(RelayMember.relay_id)))
    return len(members) == args.relays and len(partitions.held) == fair_share(members, partitions.relay_id)


async def _anything_pending(db: Database) -> bool:
    async with db.sessions() as session:
        return await session.scalar(select(exists().where(DomainEvent.status == "pending")))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
