"""Redis addresses that fail the way real ones do, to watch the cache fail open without stopping
anyone's Redis."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Literal

from source.redis_setup import RedisTarget


@dataclass
class UnreachableRedis:
    """A Redis address that fails the way real ones do: "refused" is a closed port (the
    server is down: the client learns at once); "hung" accepts connections and never answers
    (an overloaded server or a dropped network: only a timeout ends the wait)."""

    kind: Literal["refused", "hung"]
    target: RedisTarget
    server: asyncio.Server | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def unreachable_redis(kind: Literal["refused", "hung"]) -> UnreachableRedis:
    """Call on the event loop that will use it (the hung server runs on that loop)."""
    server = None
    if kind == "refused":
        with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    elif kind == "hung":
        server = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    url = f"redis://127.0.0.1:{port}/0"
    reason = "connection refused (closed port)" if kind == "refused" else "accepts, never answers"
    return UnreachableRedis(kind, RedisTarget("server", url, reason, url), server)


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(4096):
            pass  # read and ignore, like a server too busy to reply
    except (asyncio.CancelledError, ConnectionError):
        pass
    finally:
        writer.close()
