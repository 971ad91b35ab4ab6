"""4. What each cached read reports (a Lookup), and the counters the cache layer keeps of them:
nothing here is guessed by the caller."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Outcome = Literal["hit", "miss", "error"]


@dataclass(slots=True)
class Lookup(Generic[T]):
    key: str
    value: T | None
    outcome: Outcome  # "error": Redis failed, so the value came from the database
    seconds: float  # the whole call
    cache_seconds: float  # spent on the Redis GET (0 when Redis was skipped)
    db_seconds: float  # spent loading from the database, or waiting for another caller's load
    loaded: bool  # this call ran the database query (a miss may instead share another's load)
    error: str | None = None
    stored: bool = False  # this call stored the value in Redis (only the caller that loaded may)
    not_stored: str | None = None  # why a caller that loaded did not store its value


@dataclass(frozen=True)
class CacheCounts:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    db_loads: int = 0
    cache_seconds: float = 0.0  # sum of the GETs that Redis answered
    db_seconds: float = 0.0  # sum of the database loads
    total_seconds: float = 0.0  # sum of whole reads

    @property
    def requests(self) -> int:
        return self.hits + self.misses + self.errors

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def t_cache(self) -> float:
        answered = self.hits + self.misses
        return self.cache_seconds / answered if answered else 0.0

    @property
    def t_database(self) -> float:
        return self.db_seconds / self.db_loads if self.db_loads else 0.0

    @property
    def t_avg_formula(self) -> float:
        """T_avg = H * T_cache + (1 - H) * (T_cache + T_database), from the measured terms."""
        h = self.hit_ratio
        return h * self.t_cache + (1 - h) * (self.t_cache + self.t_database)

    @property
    def t_avg_measured(self) -> float:
        return self.total_seconds / self.requests if self.requests else 0.0


class CacheStats:
    """Counters kept by the cache layer. Reads are counted on the event loop's thread and shown
    from the page's; a snapshot is taken under the same lock, so it never mixes two reads' halves.
    Counting is a few integer additions: no object is built per read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zero()

    def _zero(self) -> None:
        self._hits = self._misses = self._errors = self._db_loads = 0
        self._cache_seconds = self._db_seconds = self._total_seconds = 0.0

    def record(self, lookup: Lookup) -> None:
        outcome = lookup.outcome
        with self._lock:
            if outcome == "hit":
                self._hits += 1
                self._cache_seconds += lookup.cache_seconds
            elif outcome == "miss":
                self._misses += 1
                self._cache_seconds += lookup.cache_seconds
            else:
                self._errors += 1
            if lookup.loaded:
                self._db_loads += 1
                self._db_seconds += lookup.db_seconds
            self._total_seconds += lookup.seconds

    def snapshot(self) -> CacheCounts:
        with self._lock:
            return CacheCounts(
                self._hits, self._misses, self._errors, self._db_loads,
                self._cache_seconds, self._db_seconds, self._total_seconds,
            )

    def reset(self) -> None:
        with self._lock:
            self._zero()
