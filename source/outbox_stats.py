"""5. The pipeline's own figures: the relay and the consumer count what they do, on their thread,
and any other thread reads one consistent snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class PublisherSnapshot:
    running: bool = False
    wake_mode: str = ""
    started_at: datetime | None = None
    batches: int = 0
    published: int = 0
    retries_scheduled: int = 0
    failed: int = 0
    notify_wakeups: int = 0
    last_batch_at: datetime | None = None
    last_batch_size: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    consumer_name: str = ""
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    gaps: int = 0  # sequence numbers skipped when an event arrived (its user's earlier events not applied yet)
    late: int = 0  # events applied after a later event of their user
    claimed: int = 0  # entries taken over with XAUTOCLAIM (abandoned, or failed and delivered again)
    dead_lettered: int = 0
    consumers_removed: int = 0  # idle consumers with nothing pending, removed at start
    resent: int = 0  # published events sent again because the broker lost them
    last_reconciled_at: datetime | None = None  # the last check of recorded entries against the stream
    reconcile_error: str | None = None
    pruned_outbox: int = 0  # retention: published outbox rows deleted
    pruned_inbox: int = 0
    trimmed_entries: int = 0  # stream entries removed with XTRIM MINID
    retention_error: str | None = None
    consumer_error: str | None = None
    consumer_error_at: datetime | None = None


class Stats:
    """A lock-protected, immutable snapshot: writers replace it, readers get a consistent copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = PublisherSnapshot()

    def add(self, **increments: int) -> None:
        with self._lock:
            now = self._snapshot
            self._snapshot = replace(now, **{k: getattr(now, k) + v for k, v in increments.items()})

    def set(self, **values: object) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **values)

    def snapshot(self) -> PublisherSnapshot:
        with self._lock:
            return self._snapshot


def describe(exc: BaseException) -> str:
    """An error as the figures record it: its type and message, bounded."""
    return f"{type(exc).__name__}: {exc}"[:500]
