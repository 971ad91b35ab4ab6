"""2. The pool's figures as the pool itself holds them: connections open, checked out, idle,
and those beyond pool_size, next to the settings that bound them.

What SQLAlchemy's QueuePool (AsyncAdaptedQueuePool for an async engine) keeps, from
sqlalchemy/pool/impl.py:
- size() is the configured pool_size, not a count of anything open;
- checkedin() is the number of idle connections waiting in the pool's queue (at most pool_size:
  a connection returned to a full queue is closed);
- overflow() is the number of connections the pool has opened, minus pool_size: it starts at
  -pool_size and rises by one for each connection the pool opens, idle or not;
- checkedout() is size() - checkedin() + overflow(): connections handed out and not returned.
So the connections open are checkedout() + checkedin(), and the ones in use beyond pool_size
are max(0, checkedout() - size()); overflow() alone also counts idle connections."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.pool import QueuePool

from source.database import Database


@dataclass(frozen=True)
class PoolFigures:
    open: int  # connections the pool holds: checked out + idle
    checked_out: int  # handed to a session or connection and not yet returned
    idle: int  # open, waiting in the pool for the next checkout
    in_use_beyond_pool_size: int  # checked out past pool_size (the "overflow in use")
    opened_beyond_pool_size: int  # open past pool_size, in use or idle (QueuePool.overflow())
    pool_size: int  # configured: how many idle connections the pool keeps
    max_overflow: int  # configured: how many more it may open under load
    pool_timeout: float  # configured: how long a checkout waits once all are in use

    @property
    def limit(self) -> int:
        """At most this many connections are checked out at once; one more waits pool_timeout
        seconds for a connection to come back, then raises TimeoutError."""
        return self.pool_size + self.max_overflow


def pool_figures(db: Database) -> PoolFigures:
    pool = db.engine.pool
    if not isinstance(pool, QueuePool):
        raise TypeError(f"{type(pool).__name__} keeps no connections: there are no pool figures to read")
    checked_out, idle = pool.checkedout(), _live_idle(pool)
    return PoolFigures(
        open=checked_out + idle,
        checked_out=checked_out,
        idle=idle,
        in_use_beyond_pool_size=max(0, checked_out - pool.size()),
        opened_beyond_pool_size=max(0, checked_out + idle - pool.size()),
        pool_size=pool.size(),
        max_overflow=db.max_overflow,
        pool_timeout=pool.timeout(),
    )


def _live_idle(pool: QueuePool) -> int:
    """checkedin(), less any idle entry whose connection was closed by an invalidation (after a
    disconnect, an entry goes back to the queue empty and reconnects at its next checkout). The
    entries are read from the queue's deque, an internal of SQLAlchemy's queue: if that ever
    changes, checkedin() is the figure."""
    entries = getattr(getattr(getattr(pool, "_pool", None), "_queue", None), "_queue", None)
    if entries is None:
        return pool.checkedin()
    return sum(1 for entry in list(entries) if getattr(entry, "dbapi_connection", None) is not None)
