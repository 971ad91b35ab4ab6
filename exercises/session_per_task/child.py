"""Section 2's ops, inside the sandbox (copied to /lab as session_per_task_ops.py)."""

from child_backends import connect  # exercises/child_backends.py, copied beside this file
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from source.models import User


async def setup(context) -> None:
    # A pool that can give each of 20 tasks a connection of its own; none is open yet.
    connect(context, pool_size=20, max_overflow=0)


async def teardown(context) -> None:
    await context.engine.dispose()


async def _find_name(session, user_id: str):
    result = await session.execute(select(User.name, func.pg_sleep(0.02)).where(User.id == user_id))
    row = result.first()
    return row.name if row is not None else None


async def sequential(context, user_ids: list[str]) -> list:
    """The reference, run before the learner's code is loaded: the same lookups one after
    another, on one session of an engine of its own."""
    engine = create_async_engine(context.database_url, poolclass=NullPool)
    try:
        async with async_sessionmaker(engine)() as session:
            return [await _find_name(session, user_id) for user_id in user_ids]
    finally:
        await engine.dispose()


async def lookup_all(context, user_ids: list[str]) -> list:
    names = await context.solution.lookup_all(context.sessions, list(user_ids))
    if not isinstance(names, list | tuple):
        raise TypeError(f"lookup_all returned {type(names).__name__}, not a list of names")
    return [name if name is None or isinstance(name, str) else repr(name)[:200] for name in names]
