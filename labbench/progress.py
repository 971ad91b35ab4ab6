"""How an experiment says where it is: it calls `report(what, fraction)` as it goes, from whatever
thread runs it; the page shows the latest report while the experiment runs (ui.run_showing)."""

from __future__ import annotations

import threading
from collections.abc import Callable

Report = Callable[[str, float | None], None]  # (what it is doing now, fraction done or None)


def silent(_what: str, _fraction: float | None = None) -> None:
    """For callers that show nothing (tests, bench.py)."""


class Latest:
    """The last report, kept for another thread to read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[str, float | None] | None = None

    def __call__(self, what: str, fraction: float | None = None) -> None:
        with self._lock:
            self._latest = (what, fraction)

    def read(self) -> tuple[str, float | None] | None:
        with self._lock:
            return self._latest
