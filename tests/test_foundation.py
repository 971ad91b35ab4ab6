"""The data layer on SQLite and PostgreSQL: repositories, the outbox write, bad input,
idempotent set-up and migrations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from labbench.recorder import record
from source import (
    AIRScore,
    DomainEvent,
    DomainEventRepository,
    DuplicateEmail,
    InvalidInput,
    NotFound,
    User,
    UserRepository,
    calculate_and_store_airscore,
    create_sample_airscore,
    run_db_setup_and_create_user,
)
from source.config import PROJECT_DIR
from source.services import get_or_create_users


async def count(db, model) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def create_user(db, **fields) -> User:
    async with db.sessions.begin() as session:
        return await UserRepository(session).create(**fields)


async def test_creates_and_reads_a_user_by_id_and_email(db):
    user = await create_user(db, email=" Ada@Example.com ", name="Ada", years_experience=3)
    async with db.sessions() as session:
        repo = UserRepository(session)
        by_id = await repo.get_by_id(user.id)
        by_email = await repo.get_by_email("ada@example.com")
    assert by_id.id == by_email.id == user.id
    assert by_id.email == "ada@example.com"
    assert by_id.created_at.tzinfo is not None


async def test_repository_does_not_commit_on_its_own(db):
    async with db.sessions() as session:
        await UserRepository(session).create(email="uncommitted@example.com", name="U")
        await session.rollback()
    assert await count(db, User) == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "", "name": "N"}, "Enter an email"),
        ({"email": "not-an-email", "name": "N"}, "not a valid email"),
        ({"email": "a@b.c", "name": "   "}, "Enter a name"),
        ({"email": "a@b.c", "name": "x" * 256}, "at most 255"),
        ({"email": "a@b.c", "name": "N", "occupation_code": "x" * 21}, "at most 20"),
        ({"email": "a@b.c", "name": "N", "years_experience": -1}, "between 0 and 80"),
        ({"email": ("x" * 250) + "@b.com", "name": "N"}, "longer than 255"),
    ],
)
async def test_bad_input_gives_its_error_and_writes_nothing(db, fields, message):
    with pytest.raises(InvalidInput, match=message):
        await create_user(db, **fields)
    assert await count(db, User) == 0


async def test_duplicate_email_is_refused_and_writes_nothing(db):
    await create_user(db, email="dup@example.com", name="First")
    with pytest.raises(DuplicateEmail, match="already exists"):
        await create_user(db, email="DUP@example.com", name="Second")
    assert await count(db, User) == 1


@pytest.mark.parametrize("bad_id", ["", "123", "not-a-uuid", "'; DROP TABLE users; --"])
async def test_malformed_ids_are_refused_before_any_query(db, bad_id):
    async with db.sessions() as session:
        with record(db) as log, pytest.raises(InvalidInput, match="ID"):
            await UserRepository(session).get_by_id(bad_id)
    assert log.count == 0


async def test_unknown_id_is_reported_as_not_found(db):
    async with db.sessions() as session:
        repo = UserRepository(session)
        assert await repo.get_by_id("00000000-0000-4000-8000-000000000000") is None
        with pytest.raises(NotFound, match="No user has the ID"):
            await repo.get_existing("00000000-0000-4000-8000-000000000000")


async def test_latest_score_and_eager_load(db):
    user = await create_user(db, email="scores@example.com", name="S")
    async with db.sessions.begin() as session:
        for i in range(3):
            last = await create_sample_airscore(session=session, user_id=user.id, occupation_code=f"C{i}")
    async with db.sessions() as session:
        repo = UserRepository(session)
        latest = await repo.get_latest_score(user.id)
        with record(db) as log:
            loaded = await repo.get_user_with_scores_eager(user.id)
        scores = loaded.scores  # already loaded: no lazy load, no error
    assert latest.id == last.id
    assert [s.occupation_code for s in scores] == ["C0", "C1", "C2"]
    assert log.count == 2


async def test_score_and_its_event_commit_together(db):
    user = await create_user(db, email="outbox@example.com", name="O")
    score, event = await calculate_and_store_airscore(
        sessions=db.sessions, user_id=user.id, occupation_code="AI_ASSESSOR"
    )
    async with db.sessions() as session:
        pending = await DomainEventRepository(session).get_pending_events()
    assert [e.id for e in pending] == [event.id]
    assert event.payload["score_id"] == score.id
    assert event.aggregate_id == user.id and event.event_type == "AIRScoreCalculated"


async def test_a_failure_between_score_and_event_leaves_neither(db, monkeypatch):
    user = await create_user(db, email="atomic@example.com", name="A")

    async def broken_add(self, event):
        raise RuntimeError("crash after the score was written")

    monkeypatch.setattr(DomainEventRepository, "add", broken_add)
    with pytest.raises(RuntimeError):
        await calculate_and_store_airscore(sessions=db.sessions, user_id=user.id, occupation_code="X")
    assert await count(db, AIRScore) == 0
    assert await count(db, DomainEvent) == 0


async def test_calculating_for_an_unknown_user_writes_nothing(db):
    with pytest.raises(NotFound):
        await calculate_and_store_airscore(
            sessions=db.sessions, user_id="00000000-0000-4000-8000-000000000000", occupation_code="X"
        )
    assert await count(db, AIRScore) == 0


async def test_mark_as_published_moves_only_pending_events_and_keeps_their_stream_entries(db):
    user = await create_user(db, email="pub@example.com", name="P")
    _, event = await calculate_and_store_airscore(sessions=db.sessions, user_id=user.id, occupation_code="X")
    _, other = await calculate_and_store_airscore(sessions=db.sessions, user_id=user.id, occupation_code="X")
    async with db.sessions.begin() as session:
        assert await DomainEventRepository(session).mark_as_published([(event.id, "5-0"), (other.id, "5-1")]) == 2
    async with db.sessions.begin() as session:
        assert await DomainEventRepository(session).mark_as_published([(event.id, "9-0")]) == 0
        stored = [await session.get(DomainEvent, e.id) for e in (event, other)]
    assert [(e.status, e.stream_id) for e in stored] == [("published", "5-0"), ("published", "5-1")]
    assert stored[0].published_at is not None


async def test_each_users_events_are_numbered_one_by_one_however_many_writers_race(db):
    """The counter row is the lock: 20 concurrent scores of one user get 1..20, each number once
    (PostgreSQL: the counter's row lock; SQLite: the write lock)."""
    user = await create_user(db, email="seq@example.com", name="S")
    other = await create_user(db, email="seq2@example.com", name="T")
    results = await asyncio.gather(*(
        calculate_and_store_airscore(sessions=db.sessions, user_id=who.id, occupation_code="X")
        for who in [user] * 20 + [other] * 5
    ))
    numbers = sorted(event.sequence for _, event in results if event.aggregate_id == user.id)
    assert numbers == list(range(1, 21))
    assert sorted(event.sequence for _, event in results if event.aggregate_id == other.id) == [1, 2, 3, 4, 5]


async def test_setup_is_idempotent_sequentially_and_concurrently(db_url):
    from source import Database

    first, second = Database(db_url), Database(db_url)  # two app processes, one database
    try:
        alex, jane = await run_db_setup_and_create_user(first)
        results = await asyncio.gather(
            run_db_setup_and_create_user(first),
            run_db_setup_and_create_user(second),
            run_db_setup_and_create_user(first),
        )
        assert {(a.id, j.id) for a, j in results} == {(alex.id, jane.id)}
        assert (alex.name, jane.name) == ("Alex Smith", "Jane Doe")
        assert await count(first, User) == 2
    finally:
        await first.dispose()
        await second.dispose()


async def test_setup_races_from_a_fresh_database(db_url):
    from source import Database

    dbs = [Database(db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(run_db_setup_and_create_user(d) for d in dbs))
        assert len({(a.id, j.id) for a, j in results}) == 1
        assert await count(dbs[0], User) == 2
    finally:
        for d in dbs:
            await d.dispose()


async def test_get_or_create_users_sends_two_statements_however_many_users(db):
    rows = [{"email": f"many-{n:02d}@example.com", "name": f"Many {n:02d}"} for n in range(30)]
    with record(db) as log:
        async with db.sessions.begin() as session:
            created = await get_or_create_users(session, rows)
    assert [user.email for user in created] == [row["email"] for row in rows]
    assert log.count == 2, log.statements  # the INSERT ... ON CONFLICT DO NOTHING, then one SELECT
    some_again = [rows[5], {"email": "many-new@example.com", "name": "New"}, rows[0]]
    with record(db) as log:
        async with db.sessions.begin() as session:
            found = await get_or_create_users(session, some_again)
    assert [user.id for user in found[::2]] == [created[5].id, created[0].id]  # in the order asked
    assert found[1].name == "New" and log.count == 2
    assert await count(db, User) == 31


def alembic(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args], cwd=PROJECT_DIR, env=env,
        capture_output=True, text=True, timeout=120,
    )


async def test_migrations_upgrade_check_and_downgrade(db_url):
    up = alembic(db_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    check = alembic(db_url, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout
    down = alembic(db_url, "downgrade", "base")
    assert down.returncode == 0, down.stderr


async def test_app_migrates_to_the_same_head_as_the_cli(db):
    from alembic.script import ScriptDirectory

    from source.database import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert await db.current_revision() == head


def test_importing_source_connects_to_nothing():
    env = {**os.environ, "DATABASE_URL": "postgresql+asyncpg://nobody:secret@127.0.0.1:9/none",
           "REDIS_URL": "redis://127.0.0.1:9/0"}
    result = subprocess.run(
        [sys.executable, "-c", "import source; d = source.Database(source.database_url()); print(d.masked_url)"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "secret" not in result.stdout and "***" in result.stdout
