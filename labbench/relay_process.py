"""A relay in a process of its own, for the tests that SIGKILL it: `python -m labbench.relay_process
DATABASE_URL REDIS_URL STREAM`. After each pipeline has appended its batch it prints "appended N"
and waits `--hold` seconds before the relay marks the batch published, so that a test can kill
it between the append and the commit: mid-batch."""

from __future__ import annotations

import argparse
import asyncio
import sys

import redis.asyncio as aioredis

from labbench.faults import PipelineWrapper, WrappedBroker
from source.database import Database
from source.outbox import RelaySettings, event_publisher
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
    args = parser.parse_args(argv)
    db = Database(args.database_url)
    client = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    settings = RelaySettings(batch_size=args.batch, poll_interval=0.02, notify_fallback_poll=0.5, design=args.design)
    print("ready", flush=True)
    await event_publisher(db=db, redis_client=WrappedBroker(client, lambda pipeline: _HoldingPipeline(pipeline, args.hold)), stream=args.stream,
                          stop=asyncio.Event(), settings=settings)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
