"""A relay in a process of its own: `python -m labbench.relay_process DATABASE_URL REDIS_URL STREAM`.

For the tests that SIGKILL it: after each pipeline has appended its batch it prints "appended N"
and waits `--hold` seconds before the relay marks the batch published, so that a test can kill
it between the append and the commit: mid-batch.

For bench.py's commit-to-stream latency, `--as-deployed`: the lab's relay with its default
settings and no wrapper, or with `--minimal` the minimal raw-asyncpg relay (its claim as
`--design` says), until SIGTERM. A
process of its own, as a relay worker is deployed: it shares no event loop and no garbage
collector with the code that commits and reads."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import redis.asyncio as aioredis

from labbench.faults import PipelineWrapper, WrappedBroker
from source.database import Database
from source.outbox import NOTIFY_CHANNEL, RelaySettings, event_publisher, relay_database
from source.outbox_claims import AGGREGATE_ORDER, ANY_ORDER


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
    args = parser.parse_args(argv)
    client = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    if args.as_deployed:
        await as_deployed(args, client)
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


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
