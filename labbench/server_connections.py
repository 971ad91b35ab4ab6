"""2. The app's connections as PostgreSQL lists them in pg_stat_activity, to set beside the pool's
own figures (labbench/pool_figures.py).

The app's engine logs in under an application_name of its own (Database(application_name=...)),
so its connections are the rows of pg_stat_activity with that name in this database. They are
read on a separate connection, opened for the read and closed after it, under another name: the
read itself neither checks a connection out of the app's pool nor counts among the app's rows.

What each state means for a pooled connection: "idle" is a connection waiting in the pool, or
checked out but with no transaction begun yet; "idle in transaction" is checked out, its
transaction open between statements; "active" is running a statement now."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from source.database import Database

OBSERVER_NAME = "lab2-pool-observer"


@dataclass(frozen=True)
class ServerView:
    application_name: str
    states: dict[str, int]  # pg_stat_activity.state -> connections in it

    @property
    def open(self) -> int:
        return sum(self.states.values())

    @property
    def idle(self) -> int:
        return self.states.get("idle", 0)

    @property
    def busy(self) -> int:
        """In a transaction or running a statement: necessarily checked out of the pool."""
        return self.open - self.idle


async def app_connections(db: Database) -> ServerView | None:
    """PostgreSQL's own list of db's connections, counted by state; None where there is no server
    to ask (SQLite) or db's connections carry no application_name."""
    if not db.application_name:
        return None
    observer = create_async_engine(
        db.url, poolclass=NullPool,
        connect_args={"server_settings": {"application_name": OBSERVER_NAME}},
    )
    try:
        async with observer.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database() GROUP BY 1"
            ), {"name": db.application_name})).all()
    finally:
        await observer.dispose()
    return ServerView(db.application_name, {state: int(n) for state, n in rows})
