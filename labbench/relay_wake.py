"""5b. How the relay wakes: polling vs LISTEN/NOTIFY (PostgreSQL), measured on a throwaway table
and stream: the statements an idle relay sends, and each event's latency from commit to stream."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, text, update

from labbench.event_design import Scratch, run_id, scratch_metadata, utc_now, writing
from labbench.event_table import Design
from labbench.recorder import record
from source.database import Database

# --- 4. how the relay wakes: polling vs LISTEN/NOTIFY ------------------------------------------


@dataclass(frozen=True)
class WakeResult:
    mode: str
    interval: float  # polling: seconds between looks; notify: seconds without a wake before it looks anyway
    idle_seconds: float
    idle_queries: int  # statements the relay sent while nothing was written
    latencies_ms: list[float]  # from just before the writer's COMMIT to the reply to XADD, per event
    appended: int  # entries the stream holds afterwards

    @property
    def idle_queries_per_second(self) -> float:
        return self.idle_queries / self.idle_seconds

    @property
    def median_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[len(ordered) // 2]


async def wake_experiment(db: Database, redis_client, *, prefix: str, mode: str = "poll", interval: float = 0.5, fallback: float = 5.0,
                          idle_seconds: float = 2.0, events: int = 5) -> WakeResult:
    """A relay on a throwaway table appends pending rows to a throwaway stream. First it runs
    `idle_seconds` with nothing to do (its statements are counted); then `events` rows are
    committed at random moments and each one's latency is taken from just before the writer sends
    COMMIT to the relay's reply to XADD. "notify": the writer calls pg_notify in its transaction (delivered at
    commit); the relay listens and looks when woken, or after `fallback` seconds without a wake
    (in case a notification is missed, e.g. while the listening connection reconnects)."""
    if mode == "notify" and db.backend != "postgresql":
        raise ValueError("LISTEN/NOTIFY exists on PostgreSQL only")
    run = run_id()
    metadata, table, _ = scratch_metadata(Design(status_column=True, sequence=False, versioned=False), run, "wake")
    stream, channel = f"{prefix}evd:{run}:wake", f"evd_{run}"
    committing: dict[str, float] = {}
    appended_at: dict[str, float] = {}
    woken, stop, looked = asyncio.Event(), asyncio.Event(), asyncio.Event()
    listener = None
    counted = {"queries": 0}
    wait = fallback if mode == "notify" else interval

    async def relay() -> None:
        with record(db) as log:
            while not stop.is_set():
                woken.clear()  # before looking: a commit's notification after this wakes the next look
                async with writing(db) as conn:
                    rows = (await conn.execute(select(table.c.id).where(table.c.status == "pending")
                                               .order_by(table.c.created_at))).all()
                    for (event_id,) in rows:
                        await redis_client.xadd(stream, {"id": event_id})
                        appended_at[event_id] = time.perf_counter()
                    if rows:
                        await conn.execute(update(table).where(table.c.id.in_([r[0] for r in rows]))
                                           .values(status="published", published_at=utc_now()))
                counted["queries"] = log.count
                looked.set()
                try:
                    await asyncio.wait_for(_first(woken.wait(), stop.wait()), wait)
                except TimeoutError:
                    pass

    task: asyncio.Task | None = None
    try:
        async with Scratch(db, metadata):
            try:
                if mode == "notify":
                    import asyncpg

                    listener = await asyncpg.connect(db.asyncpg_dsn)
                    await listener.add_listener(channel, lambda *_: woken.set())
                task = asyncio.create_task(relay())
                await _first(looked.wait(), asyncio.shield(task))  # the relay's first look, before the idle window
                if task.done():
                    task.result()  # the relay failed: raise its error
                before = counted["queries"]
                await asyncio.sleep(idle_seconds)
                idle = counted["queries"] - before
                for n in range(events):
                    await asyncio.sleep(random.uniform(0.05, max(0.1, interval)))
                    event_id = f"w{n:03d}-{run}"
                    async with writing(db) as conn:
                        await conn.execute(insert(table).values(
                            id=event_id, aggregate_id="user-1", event_type="AIRScoreCalculated",
                            payload={"n": n}, created_at=utc_now()))
                        if mode == "notify":
                            await conn.execute(text("SELECT pg_notify(:channel, :id)"),
                                               {"channel": channel, "id": event_id})
                        committing[event_id] = time.perf_counter()  # the block's end sends COMMIT
                deadline = time.perf_counter() + wait + 5
                while len(appended_at) < events and time.perf_counter() < deadline and not task.done():
                    await asyncio.sleep(0.01)
                stop.set()
                await task
                length = await redis_client.xlen(stream)
            finally:  # the relay and the listener stop before their table goes
                stop.set()
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                if listener is not None:
                    await listener.close()
    finally:
        await redis_client.delete(stream)
    latencies = [(appended_at[i] - committing[i]) * 1000 for i in committing if i in appended_at]
    return WakeResult(mode, wait, idle_seconds, idle, latencies, length)


async def _first(*awaitables) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
