"""2. The minimal async engine and session factory: what source/database.py starts from.

One engine per database URL for the whole process (its pool lives as long as it does), one
session per request or task. database.Database adds to this what production needs, each for a
failure section 2 shows: a connection the server closed is replaced (pre-ping), old ones are
recycled, a request waits a bounded time for a free connection, and SQLite gets its settings.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from .models import User


class Database:
    def __init__(self, url: str | URL) -> None:
        self.url = make_url(url)
        # A pool: it opens a connection only when a request needs one, keeps at most 5 idle
        # between requests and opens up to 10 more under load.
        self.engine: AsyncEngine = create_async_engine(self.url)
        # expire_on_commit=False: objects stay readable after commit. In async code an
        # expired attribute would need a query on access, which cannot happen implicitly.
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def dispose(self) -> None:
        await self.engine.dispose()


async def find_user(*, sessions: async_sessionmaker[AsyncSession], email: str) -> User | None:
    """One request: a session of its own, its connection back in the pool when the block ends."""
    async with sessions() as session:
        return await session.scalar(select(User).where(User.email == email))
