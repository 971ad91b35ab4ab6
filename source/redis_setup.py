"""Which Redis the lab talks to: a server by URL, or the embedded fakeredis stand-in."""

from __future__ import annotations

from dataclasses import dataclass, field

import fakeredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from . import config
from .redis_pool import BoundedPool

# One in-process "server" per process: every embedded client shares its data, the way
# every client of a real server does.
FAKE_SERVER = fakeredis.FakeServer()
EMBEDDED_SCHEME = "fakeredis://"  # REDIS_URL=fakeredis:// asks for the stand-in explicitly


@dataclass(frozen=True)
class RedisTarget:
    kind: str  # "server" or "embedded"
    url: str  # masked: safe to show
    reason: str
    _real_url: str = field(default="", repr=False)  # may hold a password

    @property
    def label(self) -> str:
        return f"server {self.url}" if self.kind == "server" else "embedded (fakeredis)"


def resolve_redis(url: str | None = None, *, probe_timeout: float = 0.1) -> RedisTarget:
    """The server at REDIS_URL (or the stand-in for fakeredis://); if REDIS_URL is unset, the default server if it answers a PING
    within probe_timeout, else the embedded stand-in. A URL the learner set is never swapped."""
    if url is None:
        url, chosen = config.redis_url()
    else:
        chosen = True
    masked = config.mask_url(url)
    if url.startswith(EMBEDDED_SCHEME):
        return RedisTarget("embedded", "fakeredis", "REDIS_URL asks for the embedded stand-in")
    if chosen:
        return RedisTarget("server", masked, "REDIS_URL is set", url)
    try:
        probe = redis.Redis.from_url(
            url, socket_connect_timeout=probe_timeout, socket_timeout=probe_timeout,
            retry=SyncRetry(NoBackoff(), 0),
        )
        try:
            probe.ping()
        finally:
            probe.close()
    except redis.RedisError:
        return RedisTarget("embedded", "fakeredis", f"no Redis answered at {masked}")
    return RedisTarget("server", masked, f"found at {masked}", url)


def make_redis_client(
    target: RedisTarget,
    *,
    timeout: float | None = 0.05,
    retries: int = 0,
    fake_server: fakeredis.FakeServer | None = None,
    max_connections: int | None = None,
) -> aioredis.Redis:
    """An asyncio client. Timeouts and retries are explicit: redis-py's defaults retry for
    seconds, far too long for a cache that must fail open. Pass timeout=None for blocking reads;
    fake_server (tests) replaces the process-wide embedded server. `timeout` bounds the connect
    and each reply separately. max_connections bounds the pool (a command that finds every
    connection busy waits up to `timeout` for one, see BoundedPool): without a bound, a burst of
    concurrent commands opens one new connection each, and on a busy machine many of those
    handshakes miss a 50 ms timeout."""
    if target.kind == "embedded":
        return fakeredis.FakeAsyncRedis(server=fake_server or FAKE_SERVER, decode_responses=True)
    options = dict(
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries),
        retry_on_timeout=False,
    )
    if max_connections is not None:
        pool = BoundedPool.from_url(
            target._real_url, max_connections=max_connections, timeout=timeout, **options
        )
        return aioredis.Redis.from_pool(pool)
    return aioredis.Redis.from_url(target._real_url, **options)
