"""Faults for section 5, injected from outside the relay: the relay is handed a broker client whose
pipeline cannot connect while the broker is "down", gets an error reply while it "refuses", runs
the commands and then times out while it is "hung", or appends and then dies as if the process had."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from source.publisher import Publisher


class SimulatedCrash(Exception):
    """The relay 'dies' after appending to the stream and before marking the events published."""

    def __init__(self, appended: int) -> None:
        super().__init__(f"relay crashed after appending {appended} event(s), before marking them published")
        self.appended = appended


class Faults:
    """Switched from any thread, read by the relay on its own."""

    def __init__(self, *, broker_failure_rate: float = 0.0, crash_rate: float = 0.0, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.broker_down = False  # only the relay's publish path fails: the cache keeps working
        self.broker_refusing = False  # an error reply (as Redis's OOM when maxmemory is reached)
        self.broker_hung = False  # Redis runs the commands, the reply never comes in time
        self.broker_failure_rate = broker_failure_rate
        self.crash_rate = crash_rate
        self._crashes_armed = 0
        self.crashes = 0  # batches appended and then "died" on

    def arm_crash(self) -> None:
        """Crash after the next append (once)."""
        with self._lock:
            self._crashes_armed += 1

    @property
    def crash_armed(self) -> bool:
        return self._crashes_armed > 0

    def broker_refuses(self) -> bool:
        with self._lock:
            return self.broker_down or self._rng.random() < self.broker_failure_rate

    def crash_now(self) -> bool:
        with self._lock:
            crash = bool(self._crashes_armed) or self._rng.random() < self.crash_rate
            if self._crashes_armed:
                self._crashes_armed -= 1
            self.crashes += crash
            return crash


class PipelineWrapper:
    """A broker pipeline with something done around its `execute`: subclasses override `execute`."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    async def __aenter__(self) -> PipelineWrapper:
        await self.pipeline.__aenter__()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.pipeline.__aexit__(*exc_info)

    def __getattr__(self, name: str):
        return getattr(self.pipeline, name)

    async def execute(self, *args, **kwargs):
        return await self.pipeline.execute(*args, **kwargs)


class WrappedBroker:
    """A Redis client as the relay sees it: every pipeline it opens goes through `wrap`."""

    def __init__(self, client: aioredis.Redis, wrap: Callable[[object], PipelineWrapper]) -> None:
        self.client, self.wrap = client, wrap

    def pipeline(self, *args, **kwargs) -> PipelineWrapper:
        return self.wrap(self.client.pipeline(*args, **kwargs))

    def __getattr__(self, name: str):
        return getattr(self.client, name)


class _FaultyPipeline(PipelineWrapper):
    def __init__(self, pipeline, faults: Faults) -> None:
        super().__init__(pipeline)
        self.faults = faults

    async def execute(self, *args, **kwargs):
        if self.faults.broker_refuses():
            raise redis.ConnectionError("broker unreachable (fault switched on in the lab)")
        if self.faults.broker_refusing:
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory' (lab fault)")
        replies = await self.pipeline.execute(*args, **kwargs)
        if self.faults.broker_hung:  # the commands ran; the relay never hears back
            raise redis.TimeoutError("Timeout reading from the broker (lab fault: it ran the commands)")
        if self.faults.crash_now():
            raise SimulatedCrash(len(replies))  # the relay's transaction rolls back: still pending
        return replies


class FaultyBroker(WrappedBroker):
    """The relay's broker client with `faults` applied to its pipelines."""

    def __init__(self, client: aioredis.Redis, faults: Faults) -> None:
        super().__init__(client, lambda pipeline: _FaultyPipeline(pipeline, faults))
        self.faults = faults


class LabPublisher(Publisher):
    """The app's publisher, its relay's broker client wrapped with the lab's fault switches."""

    def __init__(self, *, faults: Faults | None = None, **kwargs) -> None:
        self.faults = faults or Faults()
        super().__init__(wrap_broker=lambda client: FaultyBroker(client, self.faults), **kwargs)
