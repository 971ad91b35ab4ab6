"""5b. Why the outbox exists: the same scores stored four ways, with a crash injected between
the two writes, then counted against the database and the stream.

- dual write: insert the score, publish to the stream, commit (a crash after the publish rolls
  the score back: the stream announces a score that does not exist, a *phantom*);
- publish after commit: commit the score, then publish (a crash in between: the score exists
  and no event was sent, a *lost* event);
- outbox: insert the score and its event row in one transaction, commit; a relay publishes the
  rows afterwards (a crash between the two inserts rolls both back: nothing to lose or invent);
- outbox, the relay crashing: the writes succeed and the relay dies after appending an event and
  before its mark commits; the restarted relay appends that batch again (duplicates, none lost:
  at least once, which the consumer's inbox turns into exactly-once effects).

The crash comes from outside the strategies: a `Crash` wrapper around the step after the first
write raises on the operations chosen for it. Tables are throwaway (`evd_<run>_...`) and dropped
afterwards, the stream is deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, update

from labbench.event_design import Scratch, writing
from source.database import WRITE_TRANSACTION, Database

OUTBOX, RELAY_CRASH = "outbox", "outbox, relay crashes"
STRATEGIES = ("dual write", "publish after commit", OUTBOX, RELAY_CRASH)
OPERATIONS, CRASH_ON = 10, frozenset({3, 7})  # the page's run: operations 3 and 7 crash


class SimulatedCrash(Exception):
    """The process died here (raised by the crash wrapper, never by the strategy's own code)."""


class Crash:
    """Wraps the step that follows a strategy's first write: on the chosen operations it raises
    instead of running it."""

    def __init__(self, on: set[int]) -> None:
        self.on, self.crashes = on, 0

    def wrap(self, number: int, step: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def wrapped() -> None:
            if number in self.on:
                self.on.discard(number)  # a process dies once there; its restart goes on
                self.crashes += 1
                raise SimulatedCrash(f"crash injected in operation {number}")
            await step()
        return wrapped


@dataclass(frozen=True)
class CrashResult:
    strategy: str
    operations: int
    crashes: int
    scores_committed: int  # score rows in the database afterwards
    events_in_stream: int  # distinct events the stream holds afterwards
    lost: int  # committed scores whose event is not in the stream
    phantom: int  # events in the stream whose score was never committed
    duplicates: int  # stream entries that repeat an event already in it


async def crash_experiment(db: Database, redis_client, *, prefix: str, strategy: str, operations: int = OPERATIONS,
                           crash_on: frozenset[int] = CRASH_ON) -> CrashResult:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    run = uuid.uuid4().hex[:10]
    metadata = MetaData()
    scores = Table(f"evd_{run}_scores", metadata, Column("id", String(36), primary_key=True),
                   Column("air_score", Integer, nullable=False))
    outbox = Table(f"evd_{run}_outbox", metadata, Column("id", String(36), primary_key=True),
                   Column("score_id", String(36), nullable=False),
                   Column("status", String(20), nullable=False, server_default="pending"))
    stream = f"{prefix}evd:{run}:{strategy.replace(' ', '-')}"
    crash = Crash(set(crash_on))

    async def publish(score_id: str) -> None:
        await redis_client.xadd(stream, {"score_id": score_id})

    async def relay() -> None:
        """Publish what is pending, oldest first, then mark it, in one transaction; with RELAY_CRASH
        the relay dies after appending the events of the crash operations, before the mark."""
        while True:
            try:
                async with writing(db) as conn:
                    pending = (await conn.execute(select(outbox.c.score_id).where(outbox.c.status == "pending")
                                                  .order_by(outbox.c.id))).scalars().all()
                    for score_id in pending:
                        await publish(score_id)
                        if strategy == RELAY_CRASH:
                            await crash.wrap(int(score_id[1:4]), _carry_on)()
                    await conn.execute(update(outbox).values(status="published"))
                return
            except SimulatedCrash:
                continue  # rolled back: the restarted relay finds the same events pending

    try:
        async with Scratch(db, metadata):
            for number in range(1, operations + 1):
                score_id = f"s{number:03d}-{run}"
                try:
                    if strategy == "dual write":
                        async with db.engine.connect() as conn:  # a crash before commit: rolled back
                            conn = await conn.execution_options(**WRITE_TRANSACTION)
                            transaction = await conn.begin()
                            await conn.execute(insert(scores).values(id=score_id, air_score=70 + number))
                            await publish(score_id)
                            await crash.wrap(number, transaction.commit)()
                    elif strategy == "publish after commit":
                        async with writing(db) as conn:
                            await conn.execute(insert(scores).values(id=score_id, air_score=70 + number))
                        await crash.wrap(number, lambda score_id=score_id: publish(score_id))()
                    else:
                        async with writing(db) as conn:
                            await conn.execute(insert(scores).values(id=score_id, air_score=70 + number))

                            async def event_row(conn=conn, score_id=score_id) -> None:
                                await conn.execute(insert(outbox).values(id=f"e-{score_id}", score_id=score_id))

                            if strategy == OUTBOX:
                                await crash.wrap(number, event_row)()
                            else:  # the relay crashes below instead
                                await event_row()
                except SimulatedCrash:
                    pass  # the process is gone; the next operation is the restarted process's
            if strategy in (OUTBOX, RELAY_CRASH):
                await relay()
            async with db.engine.connect() as conn:
                committed = set((await conn.scalars(select(scores.c.id))).all())
                count = await conn.scalar(select(func.count()).select_from(scores))
        entries = await redis_client.xrange(stream)
    finally:
        await redis_client.delete(stream)
    announced = {fields["score_id"] for _, fields in entries}
    return CrashResult(strategy, operations, crash.crashes, count, len(announced), lost=len(committed - announced),
                       phantom=len(announced - committed), duplicates=len(entries) - len(announced))


async def _carry_on() -> None:
    """The step after an append, where the crash wrapper makes the relay die."""
