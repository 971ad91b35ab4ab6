"""Section 4's ops, inside the sandbox (copied to /lab as cache_aside_ops.py)."""

import asyncio
from collections.abc import Mapping

from child_backends import connect  # exercises/child_backends.py, copied beside this file


async def setup(context) -> None:
    connect(context, pool_size=10, max_overflow=10)


async def teardown(context) -> None:
    await context.engine.dispose()


def _user(value):
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"get_user returned {type(value).__name__}, not a dict (or None)")
    return {field: None if value.get(field) is None else str(value.get(field)) for field in ("id", "name", "email")}


async def read(context, user_id: str):
    return _user(await context.solution.get_user(user_id, sessions=context.sessions, redis=context.client))


async def rename(context, user_id: str, name: str) -> None:
    await context.solution.rename_user(user_id, name, sessions=context.sessions, redis=context.client)


def _outcome(result) -> list:
    if isinstance(result, BaseException):
        return ["error", f"{type(result).__name__}: {result}"[:300]]
    return ["ok", result]


async def read_many(context, user_id: str, readers: int) -> list:
    results = await asyncio.gather(*(read(context, user_id) for _ in range(readers)), return_exceptions=True)
    return [_outcome(result) for result in results]


async def rename_while_reading(context, user_id: str, name: str, read_after: float) -> dict:
    """The write starts; `read_after` seconds later (during its slow COMMIT) a read; then, once
    the write is done, another read."""
    write = asyncio.ensure_future(rename(context, user_id, name))
    await asyncio.sleep(read_after)
    during = _outcome((await asyncio.gather(read(context, user_id), return_exceptions=True))[0])
    written = _outcome((await asyncio.gather(write, return_exceptions=True))[0])
    after = _outcome((await asyncio.gather(read(context, user_id), return_exceptions=True))[0])
    return {"during": during, "write": written, "after": after}


# fakeredis only: what the grader does to a redis-server from outside, done here.
async def fake_flush(context) -> None:
    await context.client.flushall()


async def fake_keys(context) -> int:
    return await context.client.dbsize()


async def fake_refuse(context) -> None:
    context.fake_server.connected = False
