"""Reading what PostgreSQL logged for a run: which lines are the code's statements, how many
transactions were open at once, and a log file that rotates between two fences."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from exercises.serverlog import FENCE, Seen, Sent, ServerLog, classify

T0 = datetime(2026, 1, 1, 12, 0, 0)


@pytest.mark.parametrize(("sql", "kind"), [
    ("BEGIN;", "transaction"), ("COMMIT;", "transaction"), ("ROLLBACK;", "transaction"),
    ("SAVEPOINT sa_savepoint_1", "transaction"),
    ("select pg_catalog.version()", "setup"), ("show standard_conforming_strings", "setup"),
    ("SELECT users.id FROM users WHERE users.id = $1::VARCHAR", "data"),
    ("SET log_statement = 'none'", "data"),
    ("show_me_the_money()", "data"),
])
def test_each_logged_statement_is_the_codes_or_the_drivers(sql, kind):
    assert classify(sql) == kind


def transaction(name: str, begin_ms: int, end_ms: int) -> list[Sent]:
    at = T0 + timedelta(milliseconds=begin_ms)
    return [Sent("BEGIN;", "transaction", name, "1/1", at),
            Sent("SELECT 1 FROM users", "data", name, "1/1", at),
            Sent("ROLLBACK;", "transaction", name, "1/1", T0 + timedelta(milliseconds=end_ms))]


def test_transactions_one_after_another_were_never_two_at_once_even_on_the_same_millisecond():
    seen = Seen([*transaction("a", 0, 21), *transaction("b", 21, 42), *transaction("c", 42, 60)])
    assert seen.most_at_once() == 1
    assert len(seen.transactions()) == 3 and seen.connections == 3


def test_overlapping_transactions_count_at_their_most():
    seen = Seen([*transaction("a", 0, 30), *transaction("b", 5, 35), *transaction("c", 10, 12),
                 *transaction("d", 31, 40)])
    assert seen.most_at_once() == 3


class FenceWriter:
    """Stands in for the admin connection: 'executing' the fence appends it to the log, as the
    server's collector would after the lines sent before it."""

    def __init__(self, log) -> None:
        self.log = log

    async def execute(self, statement):
        token = str(statement).split(FENCE, 1)[1].split("'", 1)[0]
        self.log.write(entry("postgres", f"{FENCE}{token}"))
        self.log.flush()


def entry(database: str, message: str) -> str:
    return json.dumps({"timestamp": "2026-01-01 12:00:00.000 UTC", "dbname": database, "session_id": "s",
                       "vxid": "1/1", "error_severity": "LOG", "message": message}) + "\n"


async def test_a_log_that_rotates_between_two_fences_loses_no_line(tmp_path):
    (tmp_path / "log").mkdir()
    first, second = tmp_path / "log" / "exercises-11.json", tmp_path / "log" / "exercises-12.json"
    (tmp_path / "current_logfiles").write_text("jsonlog log/exercises-11.json\n")
    first.write_text(entry("run", "statement: SELECT 'before the log was opened'"))
    log = ServerLog(tmp_path)
    with open(first, "a") as handle:
        handle.write(entry("run", "execute s1: SELECT 1 FROM users"))
        handle.write(entry("other", "execute s1: SELECT 'another run'"))
    (tmp_path / "current_logfiles").write_text("jsonlog log/exercises-12.json\n")
    with open(second, "a") as handle:
        handle.write(entry("run", "statement: COMMIT;"))
        handle.write(entry("run", "execute s2: SELECT 2 FROM users"))
        handle.flush()
        seen = await log.until_fence(FenceWriter(handle), "run")
    assert [s.sql for s in seen.sent] == ["SELECT 1 FROM users", "COMMIT;", "SELECT 2 FROM users"]
    assert seen.count == 2
