"""What PostgreSQL saw a run's role send, read from the exercise cluster's own log.

Every run's role logs each statement it sends (log_statement = 'all', which only a superuser may
change) as one JSON line (jsonlog). The grader reads them here, outside the child: nothing the
child does to its own process changes what the server wrote.

To know that every line of a step is in the file, the grader writes a fence: a RAISE LOG from its
own connection, after the step's answer came back. The server's log collector writes the lines it
receives in order, so once the fence is in the file, everything the run sent before it is too.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import text

FENCE = "lab-fence "
FENCE_TIMEOUT = 10.0
_SENT = re.compile(r"^(?:statement|execute [^:]*): (.*)$", re.DOTALL)
_TRANSACTION = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION|END|ABORT|SAVEPOINT|RELEASE)\b", re.I)
# What SQLAlchemy's asyncpg dialect sends on a new connection, and asyncpg's type introspection:
# the driver's, not the learner's.
_SETUP = re.compile(r"^\s*(select pg_catalog\.version\(\)|select current_schema\(\)|show \w+( \w+)*)\s*;?\s*$", re.I)


@dataclass(frozen=True)
class Sent:
    """One statement the run's role sent, as the server logged it."""

    sql: str
    kind: str  # "data" (the code's own statements), "transaction" (BEGIN, COMMIT, ...) or "setup"
    connection: str  # the server's session id: one per connection
    transaction: str  # the virtual transaction id
    at: datetime


@dataclass
class Seen:
    """What the server logged for a run between two fences."""

    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the server's ERROR lines for the run

    @property
    def statements(self) -> list[Sent]:
        return [s for s in self.sent if s.kind == "data"]

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def connections(self) -> int:
        return len({s.connection for s in self.statements})

    def transactions(self) -> dict[tuple[str, str], list[Sent]]:
        """Each transaction that ran a data statement, with everything it sent."""
        used = {(s.connection, s.transaction) for s in self.statements}
        grouped: dict[tuple[str, str], list[Sent]] = {}
        for s in self.sent:
            if (s.connection, s.transaction) in used:
                grouped.setdefault((s.connection, s.transaction), []).append(s)
        return grouped

    def most_at_once(self) -> int:
        """The most transactions open at the same moment, from each one's first and last line
        (half-open intervals: one that ends as another begins does not overlap it)."""
        edges = []
        for lines in self.transactions().values():
            edges += [(min(s.at for s in lines), 1), (max(s.at for s in lines), -1)]
        most = current = 0
        for _, step in sorted(edges):  # at a tie, -1 sorts first: an end before a begin
            current += step
            most = max(most, current)
        return most


def classify(sql: str) -> str:
    if _TRANSACTION.match(sql):
        return "transaction"
    if _SETUP.match(sql) or ("pg_catalog.pg_type" in sql and "typeinfo" in sql.lower()):
        return "setup"
    return "data"


class ServerLog:
    """Follows the cluster's current log file from where it ends now."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._path = self._current()
        self._offset = self._path.stat().st_size if self._path and self._path.exists() else 0
        self._partial = b""
        self._pending: list[dict] = []

    def _current(self) -> Path | None:
        try:
            for line in (self.pgdata / "current_logfiles").read_text().splitlines():
                kind, _, name = line.partition(" ")
                if kind == "jsonlog":
                    return self.pgdata / name.strip()
        except OSError:
            pass
        return None

    def _read_new(self) -> None:
        current = self._current()
        paths = [self._path] if self._path else []
        if current is not None and current != self._path:
            paths.append(current)  # rotated: the rest of the old file, then the new one
        for number, path in enumerate(paths):
            if number:
                self._path, self._offset, self._partial = path, 0, b""
            try:
                with open(path, "rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read()
            except OSError:
                continue
            self._offset += len(chunk)
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                try:
                    self._pending.append(json.loads(line))
                except ValueError:
                    continue

    async def until_fence(self, conn, database: str) -> Seen:
        """Write a fence on `conn` (an admin connection) and return what `database` sent since
        the previous fence (or since this log was opened)."""
        token = secrets.token_hex(8)
        await conn.execute(text(f"DO $$BEGIN RAISE LOG '{FENCE}{token}'; END$$"))
        deadline = time.monotonic() + FENCE_TIMEOUT
        while True:
            self._read_new()
            for index, entry in enumerate(self._pending):
                if entry.get("message") == f"{FENCE}{token}":
                    before, self._pending = self._pending[:index], self._pending[index + 1:]
                    return _seen(before, database)
            if time.monotonic() > deadline:
                raise TimeoutError("the exercise cluster's log did not show the grader's fence")
            await asyncio.sleep(0.003)


def _seen(entries: list[dict], database: str) -> Seen:
    seen = Seen()
    for entry in entries:
        if entry.get("dbname") != database:
            continue
        message = entry.get("message") or ""
        if entry.get("error_severity") in ("ERROR", "FATAL"):
            seen.errors.append(message)
            continue
        match = _SENT.match(message)
        if match is None:
            continue
        sql = match.group(1).strip()
        at = datetime.strptime(entry["timestamp"].removesuffix(" UTC"), "%Y-%m-%d %H:%M:%S.%f")
        seen.sent.append(Sent(sql, classify(sql), entry.get("session_id", ""), entry.get("vxid", ""), at))
    return seen
