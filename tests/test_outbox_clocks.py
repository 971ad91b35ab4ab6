"""Two app servers whose clocks disagree: one writer runs 200 ms behind (libfaketime, set from
outside the answer key). Each user's events are numbered in commit order, and the stream carries
them in that order, while ordering them by created_at (each writer's own clock) would not.

Commit order is read independently of the numbering: from PostgreSQL's commit timestamps
(track_commit_timestamp, on a private embedded server the test starts for itself)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from runtime.embedded_postgres import EmbeddedPostgres, Unavailable
from source import Database
from tests.test_outbox import drain, make_users
from tests.test_outbox_faults import REPO

pytestmark = pytest.mark.parametrize("redis_kind", ["redis"])


@pytest.fixture
async def commit_timestamped_db():
    """A migrated database on a private PostgreSQL that records each transaction's commit time."""
    if shutil.which("faketime") is None:
        pytest.fail("faketime is not installed (Debian's faketime package; .ci/run installs it)")
    folder = Path(tempfile.mkdtemp(prefix="lab2-clocks-"))
    server = EmbeddedPostgres(folder)
    try:
        try:
            server.ensure_running()
        except Unavailable as exc:
            pytest.fail(f"the private PostgreSQL did not start: {exc}")
        admin = Database(server.url())
        async with admin.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("ALTER SYSTEM SET track_commit_timestamp = on"))
        await admin.dispose()
        server.stop()  # the setting takes effect at a restart
        server.ensure_running()
        db = Database(server.url())
        await db.upgrade_to_head()
        yield db
        await db.dispose()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_events_reach_the_stream_in_commit_order_whatever_the_writers_clocks_say(
    commit_timestamped_db, redis_client, stream
):
    db = commit_timestamped_db
    users = await make_users(db, 4)
    url = db.url.render_as_string(hide_password=False)
    writer = [sys.executable, str(REPO / "tests" / "clock_writer.py"), url, "120", *users]
    behind = ["faketime", "-f", "-0.2", *writer]  # this app server's clock runs 200 ms behind
    children = [await asyncio.create_subprocess_exec(*command, cwd=REPO) for command in (writer, behind)]
    assert [await child.wait() for child in children] == [0, 0]

    async with db.engine.connect() as connection:
        rows = (await connection.execute(text(
            "SELECT id, aggregate_id, sequence, created_at, pg_xact_commit_timestamp(xmin) AS committed "
            "FROM domain_events"
        ))).all()
    assert len(rows) == 240
    commit_order = {user: [r.id for r in sorted((r for r in rows if r.aggregate_id == user),
                                                 key=lambda r: r.committed)] for user in users}
    by_sequence = {user: [r.id for r in sorted((r for r in rows if r.aggregate_id == user),
                                                key=lambda r: r.sequence)] for user in users}
    assert by_sequence == commit_order  # the numbers follow the commits
    assert all(len({r.committed for r in rows if r.aggregate_id == u}) == 60 for u in users)  # no ties to hide behind

    await drain(db, redis_client, stream)
    appended = [(f["aggregate_id"], f["event_id"]) for _, f in await redis_client.xrange(stream)]
    assert {user: [e for who, e in appended if who == user] for user in users} == commit_order

    by_clock = {user: [r.id for r in sorted((r for r in rows if r.aggregate_id == user),
                                             key=lambda r: (r.created_at, r.id))] for user in users}
    inverted = sum(_inversions(commit_order[user], by_clock[user]) for user in users)
    print(f"\nordering by created_at would have put {inverted} pairs of a user's events out of commit order")
    assert inverted > 0  # the skew is real: created_at would have misordered them


def _inversions(truth: list[str], ordered: list[str]) -> int:
    """Adjacent pairs of `ordered` that commit order has the other way round."""
    rank = {event_id: n for n, event_id in enumerate(truth)}
    return sum(rank[a] > rank[b] for a, b in zip(ordered, ordered[1:], strict=False))
