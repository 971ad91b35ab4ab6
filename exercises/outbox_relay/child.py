"""Section 5's ops, inside the sandbox (copied to /lab as outbox_relay_ops.py): the learner's
relay_batch, called as a relay process calls it, one new session per batch."""

import asyncio

from child_backends import connect  # exercises/child_backends.py, copied beside this file


async def setup(context) -> None:
    connect(context, pool_size=4, max_overflow=0)


async def teardown(context) -> None:
    await context.engine.dispose()


async def _batch(context, stream: str, batch_size: int) -> int:
    async with context.sessions() as session:  # closed after the call: what was not committed rolls back
        count = await context.solution.relay_batch(session, context.client, stream, batch_size=batch_size)
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"relay_batch returned {type(count).__name__}, not the number of events it published")
    return count


async def relay(context, stream: str, batch_size: int) -> int:
    """One batch."""
    return await _batch(context, stream, batch_size)


async def relays(context, stream: str, batch_size: int, relays: int = 1, max_calls: int = 40) -> list:
    """`relays` relays at once, each calling relay_batch until it returns 0 (or raises, or has
    been called max_calls times): for each relay, its calls' outcomes, ["ok", n] or ["error", text]."""

    async def loop() -> list:
        calls = []
        for _ in range(max_calls):
            try:
                count = await _batch(context, stream, batch_size)
            except Exception as error:  # noqa: BLE001 - reported to the grader
                calls.append(["error", f"{type(error).__name__}: {error}"[:300]])
                break
            calls.append(["ok", count])
            if count == 0:
                break
            await asyncio.sleep(0)  # let the other relay in between batches
        return calls

    return list(await asyncio.gather(*(loop() for _ in range(relays))))


# fakeredis only: what the grader reads from, and does to, a redis-server from outside.
async def fake_entries(context, stream: str) -> list:
    import fakeredis

    raw = fakeredis.FakeAsyncRedis(server=context.fake_server)
    refusing, context.fake_server.connected = not context.fake_server.connected, True  # the grader reads anyway
    try:
        entries = await raw.xrange(stream)
    finally:
        context.fake_server.connected = not refusing
    return [[entry_id.decode(), {k.decode("latin-1"): v.decode("latin-1") for k, v in fields.items()}]
            for entry_id, fields in entries]


async def fake_refuse(context, refuse: bool) -> None:
    context.fake_server.connected = not refuse
