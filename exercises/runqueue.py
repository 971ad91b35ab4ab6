"""The run queue: at most `slots` runs at a time in this process, first come, first served, so a
room pressing "Run checks" together cannot starve the app's other work. Waiters on any event
loop (the app's shared loop, a test's, the command line's) share one queue.

    async with QUEUE.turn(report) as ticket:   # reports the place in line and the expected wait
        ...

`QUEUE.status()` gives the figures a page shows: running, waiting, slots, the average run.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass

from labbench.progress import Report, silent

DEFAULT_AVERAGE = 2.5  # seconds a run takes before any was measured here


def default_slots() -> int:
    """LAB_EXERCISE_SLOTS, or one run per two cores (one on a 2-core machine), at least one."""
    configured = os.environ.get("LAB_EXERCISE_SLOTS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class Place:
    """Where a waiting run stands: 1 is next."""

    place: int
    expected_wait: float  # seconds


@dataclass(frozen=True)
class Status:
    slots: int
    running: int
    waiting: int
    average_seconds: float  # of the last runs here


class _Ticket:
    def __init__(self, number: int) -> None:
        self.number = number
        self.loop = asyncio.get_running_loop()
        self.ready = self.loop.create_future()
        self.started = 0.0
        self.ran = False


class RunQueue:
    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots or default_slots()
        self._lock = threading.Lock()
        self._waiting: deque[_Ticket] = deque()
        self._running: dict[int, _Ticket] = {}
        self._numbers = itertools.count(1)
        self._recent: deque[float] = deque(maxlen=20)

    def status(self) -> Status:
        with self._lock:
            return Status(self.slots, len(self._running), len(self._waiting), self._average())

    def _average(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else DEFAULT_AVERAGE

    def place_of(self, ticket: _Ticket) -> Place | None:
        """None once the run has its turn."""
        with self._lock:
            if ticket not in self._waiting:
                return None
            place = self._waiting.index(ticket) + 1
            average = self._average()
            # The runs ahead finish in waves of `slots`; the running ones are partly done.
            elapsed = [time.monotonic() - t.started for t in self._running.values()]
            head_start = min((max(average - e, 0.0) for e in elapsed), default=0.0)
            waves = math.ceil(place / self.slots) - 1
            return Place(place, head_start + waves * average if len(elapsed) >= self.slots else waves * average)

    @asynccontextmanager
    async def turn(self, report: Report = silent):
        ticket = _Ticket(next(self._numbers))
        with self._lock:
            self._waiting.append(ticket)
            self._promote()
        try:
            while not ticket.ready.done():
                place = self.place_of(ticket)
                if place is not None:
                    report(f"Waiting for a free runner: number {place.place} in line, about "
                           f"{place.expected_wait:.0f} s", None)
                try:
                    await asyncio.wait_for(asyncio.shield(ticket.ready), 0.5)
                except TimeoutError:
                    pass
            ticket.ran = True
            yield ticket
        finally:
            with self._lock:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                if self._running.pop(ticket.number, None) is not None and ticket.ran:
                    self._recent.append(time.monotonic() - ticket.started)
                self._promote()

    def _promote(self) -> None:
        """Give free slots to the first waiters (called with the lock held)."""
        while self._waiting and len(self._running) < self.slots:
            ticket = self._waiting.popleft()
            ticket.started = time.monotonic()
            try:
                ticket.loop.call_soon_threadsafe(_set, ticket.ready)
            except RuntimeError:  # its event loop is closed: nobody waits for this turn any more
                continue
            self._running[ticket.number] = ticket


def _set(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


QUEUE = RunQueue()
