"""4. Single flight: concurrent misses on one key share one database load."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class _Flight:
    task: asyncio.Task
    stale: bool = False  # a write invalidated the key while this load ran: do not store it
    landed_at: float | None = None  # when the loading caller finished storing its value


class _Reading:
    """SingleFlight.reading's context manager: a plain class, cheaper per read than a generator."""

    __slots__ = ("flights", "key")

    def __init__(self, flights: SingleFlight, key: str) -> None:
        self.flights, self.key = flights, key

    def __enter__(self) -> None:
        self.flights._readers[self.key] += 1

    def __exit__(self, *exc_info) -> None:
        readers = self.flights._readers
        readers[self.key] -= 1
        if not readers[self.key]:
            del readers[self.key]
            self.flights._flights.pop(self.key, None)


class SingleFlight:
    """Concurrent misses on one key share one database load. This holds within one process
    (one event loop): each app process still loads once on its own."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}
        self._readers: Counter[str] = Counter()

    def reading(self, key: str) -> _Reading:
        """Wraps a whole read of key: a load is kept until the last read that overlapped it ends."""
        return _Reading(self, key)

    async def join(self, key: str, load: Callable[[], Awaitable[T]], *, asked_at: float) -> tuple[T, _Flight | None]:
        """The loaded value, and the flight if this caller started it (it stores the value, then
        calls `land`). A reader that asked Redis before a load landed may still join it: its GET
        may have run just before that load's SET, and loading again is what single flight is for."""
        flight = self._flights.get(key)
        if flight is not None and (flight.landed_at is None or asked_at < flight.landed_at):
            return await asyncio.shield(flight.task), None
        flight = self._flights[key] = _Flight(asyncio.ensure_future(load()))
        try:
            # shield: if this caller is cancelled, the load still completes for the others.
            return await asyncio.shield(flight.task), flight
        except BaseException:
            if self._flights.get(key) is flight:
                del self._flights[key]  # nobody joins a failed load
            raise

    def land(self, flight: _Flight) -> None:
        flight.landed_at = time.perf_counter()

    def forget(self, key: str) -> None:
        """A write changed the data behind key: later readers must not join a load that may
        have read the old row, and that load must not store it."""
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.stale = True
