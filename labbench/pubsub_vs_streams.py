"""5b. Redis Pub/Sub vs Redis Streams, live: the same events published both ways while a
subscriber is away, counted when it comes back; then a second consumer in the stream's group,
a second Pub/Sub subscriber and a second group. Channel, stream and group are named under the
lab's key prefix and a run id of their own; the stream is deleted afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import redis

GROUP = "billing"


@dataclass(frozen=True)
class Phase:
    name: str
    sent: int
    pubsub_receivers: int  # what PUBLISH answered: subscribers it reached, summed over the phase's messages
    pubsub_received: int  # messages subscriber 1 got of this phase
    stream_received: int  # entries consumer 1 of the group got of this phase (when it read them)


@dataclass(frozen=True)
class PubSubVsStreams:
    channel: str
    stream: str
    phases: list[Phase]
    sent_while_away: int
    pubsub_lost: int  # sent while subscriber 1 was away and never received by it
    stream_lost: int  # entries of the first three phases consumer 1 never got
    # Fan-out phase: two Pub/Sub subscribers, two consumers in one group, and a second group
    fanout_sent: int
    pubsub_first: int
    pubsub_second: int
    group_first: int
    group_second: int
    group_overlap: int  # entries both consumers of the group got (0: a group shares the work out)
    second_group: int  # entries a new group reading from the start gets: the whole history
    stream_length: int


class Subscriber:
    """A Pub/Sub subscriber on its own connection; collects what arrives."""

    def __init__(self, client, channel: str) -> None:
        self.client, self.channel, self.got, self.pubsub = client, channel, [], None

    async def start(self) -> None:
        self.pubsub = self.client.pubsub()
        await self.pubsub.subscribe(self.channel)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the subscription is confirmed before anything is sent
            message = await self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "subscribe":
                return
        raise redis.TimeoutError("the subscription was not confirmed within 5 s")

    async def drain(self, settle: float = 0.3) -> None:
        """Take what has arrived, until nothing comes for `settle` seconds."""
        while (message := await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=settle)) is not None:
            self.got.append(message["data"])

    async def stop(self) -> None:
        if self.pubsub is not None:
            await self.pubsub.unsubscribe(self.channel)
            await self.pubsub.aclose()
            self.pubsub = None


async def _publish(client, channel: str, stream: str, tag: str, count: int) -> tuple[list[str], int]:
    ids, receivers = [], 0
    for n in range(count):
        event = f"{tag}-{n}"
        receivers += await client.publish(channel, event)
        await client.xadd(stream, {"event": event})
        ids.append(event)
    return ids, receivers


async def _read_group(client, stream: str, group: str, consumer: str, count: int = 1000) -> list[str]:
    answer = await client.xreadgroup(group, consumer, {stream: ">"}, count=count)
    entries = answer[0][1] if answer else []
    if entries:
        await client.xack(stream, group, *[entry_id for entry_id, _ in entries])
    return [fields["event"] for _, fields in entries]


def _count(received: list[str], sent: list[str]) -> int:
    return len(set(received) & set(sent))


async def pubsub_vs_streams(client, *, prefix: str, per_phase: int = 5, away_seconds: float = 1.0) -> PubSubVsStreams:
    """Subscriber 1 (Pub/Sub) and consumer 1 (stream group) are present, then away for
    `away_seconds` while events are published, then back. `client` must decode responses."""
    run = uuid.uuid4().hex[:10]
    channel, stream = f"{prefix}evd:{run}:channel", f"{prefix}evd:{run}:stream"
    first = Subscriber(client, channel)
    second = Subscriber(client, channel)
    try:
        await client.xgroup_create(stream, GROUP, id="$", mkstream=True)
        await first.start()
        phases, consumer_got = [], []

        sent, receivers = await _publish(client, channel, stream, "before", per_phase)
        await first.drain()
        got = await _read_group(client, stream, GROUP, "consumer-1")
        consumer_got += got
        phases.append(Phase("both present", len(sent), receivers, _count(first.got, sent), _count(got, sent)))

        await first.stop()  # subscriber 1 and consumer 1 go away
        away, receivers = await _publish(client, channel, stream, "away", per_phase)
        await asyncio.sleep(away_seconds)
        phases.append(Phase("subscriber away", len(away), receivers, 0, 0))

        await first.start()  # back: Pub/Sub has nothing to give it for the time away; the group does
        back, receivers = await _publish(client, channel, stream, "back", per_phase)
        await first.drain()
        got = await _read_group(client, stream, GROUP, "consumer-1")
        consumer_got += got
        phases.append(Phase("back", len(back), receivers, _count(first.got, back), _count(got, back)))
        away_row = Phase("subscriber away", len(away), phases[1].pubsub_receivers,
                         _count(first.got, away), _count(got, away))
        phases[1] = away_row

        stream_lost = len(set(sent + away + back) - set(consumer_got))
        await second.start()  # fan-out: two subscribers, two consumers in one group, a second group
        fanout, _ = await _publish(client, channel, stream, "fanout", 2 * per_phase)
        await first.drain()
        await second.drain()
        one = await _read_group(client, stream, GROUP, "consumer-1", count=per_phase)
        two = await _read_group(client, stream, GROUP, "consumer-2", count=1000)
        await client.xgroup_create(stream, "audit", id="0")
        replay = await _read_group(client, stream, "audit", "auditor-1")
        everything = sent + away + back + fanout
        length = await client.xlen(stream)
    finally:
        await first.stop()
        await second.stop()
        await client.delete(stream)
    return PubSubVsStreams(
        channel, stream, phases, len(away),
        pubsub_lost=len(away) - _count(first.got, away), stream_lost=stream_lost,
        fanout_sent=len(fanout), pubsub_first=_count(first.got, fanout), pubsub_second=_count(second.got, fanout),
        group_first=_count(one, fanout), group_second=_count(two, fanout), group_overlap=len(set(one) & set(two)),
        second_group=_count(replay, everything), stream_length=length,
    )
