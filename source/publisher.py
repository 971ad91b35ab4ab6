"""5. The publisher thread: the relay, the consumer, retention and the check for lost entries on a
thread of their own, with their own event loop, engine and Redis clients. One per process, shared by
every session of the app."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from . import redis_setup
from .consumer import ConsumerSettings, ensure_group, event_consumer
from .database import Database
from .outbox import RelaySettings, event_publisher, relay_database, wake_mode
from .outbox_stats import PublisherSnapshot, Stats, describe
from .reconcile import ReconcileSettings, reconcile_loop, resend_unapplied
from .redis_setup import RedisTarget
from .retention import RetentionSettings, retention_loop


class Publisher:
    """The relay and the consumer on a thread of their own, with their own event loop, engine
    and Redis clients (same URLs; the same embedded server). Start twice: still one thread.
    Stop: returns within a second."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_target: RedisTarget,
        stream: str,
        settings: RelaySettings | None = None,
        consumer_settings: ConsumerSettings | None = None,
        wrap_broker: Callable[[aioredis.Redis], aioredis.Redis] | None = None,
        retention: RetentionSettings | None = None,
        reconcile: ReconcileSettings | None = None,
    ) -> None:
        self.database_url = database_url
        self.redis_target = redis_target
        self.stream = stream
        self.settings = settings or RelaySettings()
        self.consumer_settings = consumer_settings or ConsumerSettings()
        self.retention = retention or RetentionSettings()
        self.reconcile = reconcile or ReconcileSettings()
        # The relay's broker client passes through this (the lab bench wraps it to inject faults).
        self.wrap_broker = wrap_broker or (lambda client: client)
        self.stats = Stats()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def wake_mode(self) -> str:
        return wake_mode(make_url(self.database_url).get_backend_name(), self.settings)

    def snapshot(self) -> PublisherSnapshot:
        return replace(self.stats.snapshot(), running=self.running, wake_mode=self.wake_mode)

    def start(self) -> bool:
        """Start the thread unless it runs; True if this call started it."""
        with self._lock:
            if self.running:
                return False
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name="lab2-outbox-publisher", daemon=True)
            self._thread.start()
            self._ready.wait(5)  # until its loop exists, so that stop() can reach it
            return True

    def stop(self, timeout: float = 1.0) -> bool:
        """Ask the thread to stop and wait for it; True if it has ended."""
        with self._lock:
            thread, loop, stop = self._thread, self._loop, self._stop
            if thread is None or not thread.is_alive():
                return True
            if loop is not None and stop is not None:
                try:
                    loop.call_soon_threadsafe(stop.set)
                except RuntimeError:  # its loop already closed
                    pass
            thread.join(timeout)
            return not thread.is_alive()

    def _run(self) -> None:
        # This thread's one loop, for its whole life: the engine and clients below belong to it.
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        db = Database(self.database_url, pool_size=3, max_overflow=2)
        relay_db = relay_database(self.database_url)  # without the pre-ping
        publish_client = redis_setup.make_redis_client(self.redis_target, timeout=self.settings.redis_timeout)
        # A blocking XREADGROUP must not hit the socket timeout: give it the block time and more.
        consume_client = redis_setup.make_redis_client(self.redis_target, timeout=self.consumer_settings.block + 2.0)
        self.stats.set(started_at=datetime.now(UTC), wake_mode=self.wake_mode)
        common = {"db": db, "stream": self.stream, "stop": self._stop, "stats": self.stats}

        async def broker_forgot() -> None:  # the group had to be created: the stream is new or lost
            self.stats.add(resent=await resend_unapplied(db=db))

        try:  # before the relay starts, so that nothing it appends now is sent twice
            if await ensure_group(consume_client, stream=self.stream):
                await broker_forgot()
        except Exception as exc:  # Redis or the database is down: the consumer tries again
            self.stats.set(consumer_error=describe(exc), consumer_error_at=datetime.now(UTC))

        tasks = [
            asyncio.create_task(
                event_publisher(redis_client=self.wrap_broker(publish_client), settings=self.settings,
                                **(common | {"db": relay_db}))
            ),
            asyncio.create_task(
                event_consumer(redis_client=consume_client, settings=self.consumer_settings,
                               on_group_created=broker_forgot, **common)
            ),
            asyncio.create_task(retention_loop(redis_client=consume_client, settings=self.retention, **common)),
            asyncio.create_task(reconcile_loop(redis_client=consume_client, settings=self.reconcile,
                                               keep_for=self.retention.keep_for, **common)),
        ]
        stopping = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task in done and task.exception() is not None:
                    self.stats.set(last_error=describe(task.exception()), last_error_at=datetime.now(UTC))
            self._stop.set()
            _, pending = await asyncio.wait(tasks, timeout=0.5)
            for task in pending:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.2)
        finally:
            stopping.cancel()
            for closing in (publish_client.aclose(), consume_client.aclose(), db.dispose(), relay_db.dispose()):
                try:
                    await asyncio.wait_for(closing, 0.2)
                except Exception:
                    pass
