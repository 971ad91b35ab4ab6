"""Section 5b's ops, inside the sandbox (copied to /lab as event_table_ops.py): the learner's
table made in a schema of the run's own (`design`), their writer called by two writers at once,
and a relay loop that calls their claim and marks, as section 5b's workbench runs its designs."""

import asyncio
import random
from datetime import UTC, datetime, timedelta

from child_backends import connect  # exercises/child_backends.py, copied beside this file

SCHEMA = "design"


async def setup(context) -> None:
    connect(context, pool_size=4, max_overflow=0, connect_args={"server_settings": {"search_path": SCHEMA}})


async def teardown(context) -> None:
    await context.engine.dispose()


async def create_tables(context) -> str:
    """Every table of the learner's model's metadata; the event table's name."""
    model = context.solution.OutboxEvent
    async with context.engine.begin() as conn:
        await conn.run_sync(model.metadata.create_all)
    return str(model.__tablename__)


async def _write(context, event_id: str, aggregate_id: str, created_at: datetime, n: int, writer: str) -> None:
    async with context.sessions.begin() as session:  # the writer's transaction: committed when the block ends
        await context.solution.add_event(session, event_id=event_id, aggregate_id=aggregate_id,
                                         event_type="AIRScoreCalculated", payload={"n": n, "writer": writer},
                                         created_at=created_at)


async def write_racing(context, aggregate_id: str, ids: dict, skew_ms: float) -> list:
    """Writers A and B add their events (`ids[writer]`) to one aggregate at the same time, each
    event in a transaction of its own; B's clock runs skew_ms behind A's. The errors, if any."""
    errors = []

    async def writer(name: str, offset: timedelta) -> None:
        for n, event_id in enumerate(ids[name]):
            try:
                await _write(context, event_id, aggregate_id, datetime.now(UTC) - offset, n, name)
            except Exception as error:  # noqa: BLE001 - reported to the grader
                first_line = str(error).split("\n")[0]  # SQLAlchemy adds the statement on the next lines
                errors.append(f"writer {name}, event {n + 1}: {type(error).__name__}: {first_line}"[:300])
            await asyncio.sleep(random.uniform(0, 0.003))  # think time: the writers interleave

    await asyncio.gather(writer("A", timedelta(0)), writer("B", timedelta(milliseconds=skew_ms)))
    return errors


async def write_in_turn(context, aggregate_id: str, ids: list) -> None:
    """One writer, one event after the other."""
    for n, event_id in enumerate(ids):
        await _write(context, event_id, aggregate_id, datetime.now(UTC), n, "A")


async def relay(context, stream: str, refuse_first: list, limit: int = 10, max_cycles: int = 12) -> dict:
    """Cycles of: a batch from next_batch, each event appended to the stream and passed to
    published(), or, for the events in refuse_first at their first attempt, not appended and
    passed to refused(); the cycle's changes committed. Until next_batch returns nothing."""
    tried, refusals, appended, cycles, batch = set(), 0, 0, 0, [None]
    while batch and cycles < max_cycles:
        cycles += 1
        async with context.sessions.begin() as session:
            batch = list(await context.solution.next_batch(session, limit=limit))
            for event in batch:
                event_id = str(event.id)
                if event_id in refuse_first and event_id not in tried:
                    tried.add(event_id)
                    refusals += 1
                    await context.solution.refused(session, event, "refused by the lab (a first attempt)")
                    continue
                await context.client.xadd(stream, {"event_id": event_id, "aggregate_id": str(event.aggregate_id)})
                appended += 1
                await context.solution.published(session, event)
    return {"cycles": cycles, "refusals": refusals, "appended": appended, "drained": not batch}


# fakeredis only: what the grader reads from a redis-server from outside.
async def fake_entries(context, stream: str) -> list:
    import fakeredis

    raw = fakeredis.FakeAsyncRedis(server=context.fake_server)
    return [[entry_id.decode(), {k.decode("latin-1"): v.decode("latin-1") for k, v in fields.items()}]
            for entry_id, fields in await raw.xrange(stream)]
