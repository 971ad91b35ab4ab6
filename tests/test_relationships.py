"""The four relationship kinds (revision 0003 adds one-to-one and many-to-many): the statements
each loader sends, what deleting a user sends and what the database then does, and the
migration's upgrade, downgrade and data preservation, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc

import pytest
from alembic import command
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError, MissingGreenlet
from sqlalchemy.orm import joinedload, selectinload

from labbench.migrations import drift
from labbench.recorder import record
from source import (
    Assessment,
    Database,
    Profile,
    Skill,
    User,
    calculate_and_store_airscore,
    run_db_setup_and_create_user,
)
from source.database import alembic_config
from source.models import user_skills
from source.services import SAMPLE_PROFILES, SAMPLE_SKILLS


def _migrate(sync_connection, direction: str, revision: str) -> None:
    getattr(command, direction)(alembic_config(sync_connection), revision)


async def migrate(db: Database, direction: str, revision: str) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(_migrate, direction, revision)


async def tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))


async def count(db: Database, table: str) -> int:
    async with db.sessions() as session:
        return await session.scalar(text(f"SELECT count(*) FROM {table}"))


# --- the migration -----------------------------------------------------------------------


async def test_0001_to_0003_upgrades_without_drift_and_downgrades_to_nothing(db_url):
    db = Database(db_url)
    try:
        await migrate(db, "upgrade", "0001")
        assert "user_profiles" not in await tables(db)
        await migrate(db, "upgrade", "0003")
        assert {"user_profiles", "skills", "user_skills"} <= await tables(db)
        assert await db.current_revision() == "0003"
        # at 0003 the differences from the models are only what later revisions add, none in 0003's tables
        assert not [d for d in await drift(db) if "user_profiles" in d or "skills" in d]
        await migrate(db, "upgrade", "head")
        assert await drift(db) == []
        await migrate(db, "downgrade", "0002")
        assert not {"user_profiles", "skills", "user_skills"} & await tables(db)
        await migrate(db, "downgrade", "base")
        assert await tables(db) <= {"alembic_version"}
    finally:
        await db.dispose()


async def test_a_database_at_0002_with_data_upgrades_to_0003_without_loss(db_url):
    db = Database(db_url)
    try:
        await migrate(db, "upgrade", "0002")
        async with db.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO users (id, email, name, created_at, updated_at) VALUES "
                "('00000000-0000-0000-0000-000000000001', 'kept@example.com', 'Kept', "
                "'2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"))
            await conn.execute(text(
                "INSERT INTO air_scores (id, user_id, occupation_code, air_score, vr_score, hr_score, "
                "synergy_score, ci_lower, ci_upper, parameter_version, calculation_metadata, created_at, "
                "updated_at) VALUES ('00000000-0000-0000-0000-0000000000a1', "
                "'00000000-0000-0000-0000-000000000001', 'X', 70.5, 70, 70, 75, 65.6, 75.4, 'v2.1', '{}', "
                "'2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"))
        await migrate(db, "upgrade", "head")
        async with db.sessions() as session:
            user = await session.get(User, "00000000-0000-0000-0000-000000000001")
            scores = await user.awaitable_attrs.scores
            assert (user.email, user.name) == ("kept@example.com", "Kept")
            assert [(s.id, s.air_score) for s in scores] == [("00000000-0000-0000-0000-0000000000a1", 70.5)]
            assert await user.awaitable_attrs.profile is None and await user.awaitable_attrs.skills == []
        assert await drift(db) == []
    finally:
        await db.dispose()


# --- sample data ---------------------------------------------------------------------------


async def test_sample_users_get_their_profiles_and_skills_once(db):
    await run_db_setup_and_create_user(db)
    await run_db_setup_and_create_user(db)  # idempotent
    expected_pairs = sum(len(skills) for skills in SAMPLE_SKILLS.values())
    assert await count(db, "user_profiles") == len(SAMPLE_PROFILES)
    assert await count(db, "skills") == len({s for skills in SAMPLE_SKILLS.values() for s in skills})
    assert await count(db, "user_skills") == expected_pairs
    async with db.sessions() as session:
        users = (await session.scalars(
            select(User).options(selectinload(User.profile), selectinload(User.skills)))).all()
        for user in users:
            assert user.profile.headline == SAMPLE_PROFILES[user.email]["headline"]
            assert [s.name for s in user.skills] == sorted(SAMPLE_SKILLS[user.email])


# --- loading: statements per loader ----------------------------------------------------------


async def _load_all(db: Database, *options) -> tuple[int, list[str], dict]:
    """Load every user (sorted by email) with the options, then await each user's profile and
    skills; returns the statements sent, their SQL and what was loaded."""
    async with db.sessions() as session:
        with record(db) as log:
            result = await session.execute(select(User).order_by(User.email).options(*options))
            users = list(result.unique().scalars())
            loaded = {}
            for user in users:
                profile = await user.awaitable_attrs.profile
                skills = await user.awaitable_attrs.skills
                loaded[user.email] = (profile.headline, [s.name for s in skills])
    return log.count, log.sql, loaded


@pytest.mark.parametrize(
    "options, statements",
    [
        pytest.param((), 1 + 2 * 2, id="lazy: 1 + one per user per relationship"),
        pytest.param((selectinload(User.profile), selectinload(User.skills)), 3, id="selectin both: 1 + 1 + 1"),
        pytest.param((joinedload(User.profile), selectinload(User.skills)), 2, id="joined profile, selectin skills"),
        pytest.param((joinedload(User.profile), joinedload(User.skills)), 1, id="joined both: 1"),
    ],
)
async def test_each_loader_sends_the_statements_it_declares_and_loads_the_same_data(db, options, statements):
    await run_db_setup_and_create_user(db)
    sent, sql, loaded = await _load_all(db, *options)
    assert sent == statements, sql
    assert loaded == {email: (SAMPLE_PROFILES[email]["headline"], sorted(SAMPLE_SKILLS[email]))
                      for email in SAMPLE_PROFILES}
    if not options:  # the lazy loads: one by primary key, one through the association table
        assert sum("FROM user_profiles" in s for s in sql) == 2
        assert sum("user_skills" in s for s in sql) == 2
    if any("JOIN" in s for s in sql[:1]):
        assert "LEFT OUTER JOIN user_profiles" in sql[0]


async def test_selectin_for_many_to_many_joins_the_association_table_in_one_statement(db):
    await run_db_setup_and_create_user(db)
    sent, sql, _ = await _load_all(db, selectinload(User.skills), selectinload(User.profile))
    assert sent == 3
    skills_sql = next(s for s in sql if "skills" in s and "FROM users" not in s)
    assert "JOIN skills" in skills_sql and "user_skills.user_id IN" in skills_sql


async def test_one_to_one_is_a_scalar_and_many_to_many_is_shared(db):
    alex, jane = await run_db_setup_and_create_user(db)
    async with db.sessions() as session:
        python = await session.scalar(select(Skill).where(Skill.name == "Python").options(selectinload(Skill.users)))
        assert [u.email for u in python.users] == sorted([alex.email, jane.email])
        profile = await session.get(Profile, alex.id)
        assert (await profile.awaitable_attrs.user).email == alex.email
        assert isinstance(await (await session.get(User, jane.id)).awaitable_attrs.profile, Profile)


# --- deleting: ORM cascade against ON DELETE CASCADE -----------------------------------------


async def test_session_delete_sends_orm_cascade_and_leaves_the_profile_to_the_database(db):
    alex, jane = await run_db_setup_and_create_user(db)
    await calculate_and_store_airscore(sessions=db.sessions, user_id=alex.id, occupation_code="X")
    async with db.sessions() as session, session.begin():
        user = await session.get(User, alex.id)
        with record(db) as log:
            await session.delete(user)
            await session.flush()
    sql = log.sql
    # ORM cascade (scores, assessments): SQLAlchemy loads each collection, then deletes its rows.
    assert sum(s.startswith("SELECT") and "FROM air_scores" in s for s in sql) == 1
    assert sum(s.startswith("SELECT") and "FROM assessments" in s for s in sql) == 1
    assert sum(s.startswith("DELETE FROM air_scores") for s in sql) == 1
    # Many-to-many (no passive_deletes): it loads the user's skills and deletes their pairs.
    assert sum(s.startswith("DELETE FROM user_skills") for s in sql) == 1
    # passive_deletes=True (profile): not loaded, not deleted by SQLAlchemy; the database does it.
    assert not any("user_profiles" in s for s in sql)
    assert sql[-1].startswith("DELETE FROM users")
    assert len(sql) == 6, sql  # 3 SELECTs (assessments, scores, skills) and 3 DELETEs (pairs, scores, user)
    assert await count(db, "user_profiles") == 1  # Jane's: ON DELETE CASCADE removed Alex's
    assert await count(db, "user_skills") == len(SAMPLE_SKILLS[jane.email])
    assert await count(db, "skills") == len({s for skills in SAMPLE_SKILLS.values() for s in skills})  # kept
    assert await count(db, "air_scores") == 0


async def test_core_delete_cascades_in_the_database_only_where_the_foreign_key_says_so(db):
    alex, jane = await run_db_setup_and_create_user(db)
    # Jane has a profile and skills, no scores: ON DELETE CASCADE takes them with her.
    async with db.sessions.begin() as session:
        with record(db) as log:
            await session.execute(delete(User).where(User.id == jane.id))
    assert log.count == 1
    assert await count(db, "user_profiles") == 1 and await count(db, "user_skills") == len(SAMPLE_SKILLS[alex.email])
    # Alex has a score: air_scores.user_id has no ON DELETE, so the database refuses.
    await calculate_and_store_airscore(sessions=db.sessions, user_id=alex.id, occupation_code="X")
    with pytest.raises(IntegrityError):
        async with db.sessions.begin() as session:
            await session.execute(delete(User).where(User.id == alex.id))
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 1
        assert await session.scalar(select(func.count()).select_from(user_skills)) == len(SAMPLE_SKILLS[alex.email])


async def test_page_ones_cascade_demo_shows_what_each_way_sent_and_left_and_leaves_nothing(db):
    from labbench.cascade_demo import cascade_demo

    await run_db_setup_and_create_user(db)
    session_way, core_refused, core_way = await cascade_demo(db)
    sql = session_way.sql
    assert [s.split()[0] for s in sql].count("DELETE") == 3  # assessments, user_skills, users
    assert any(s.startswith("SELECT") and "FROM assessments" in s for s in sql)
    assert not any("user_profiles" in s for s in sql) and sql[-1].startswith("DELETE FROM users")
    assert set(session_way.rows_left.values()) == {0}  # the profile too: the database removed it
    assert core_refused.outcome.startswith("refused by the database")
    assert core_refused.rows_left == {"users": 1, "assessments": 1, "user_profiles": 1, "user_skills": 2}
    assert len(core_way.sql) == 1 and set(core_way.rows_left.values()) == {0}
    async with db.sessions() as session:  # every throwaway user is gone
        assert await session.scalar(select(func.count()).where(User.email.like("cascade-%"))) == 0
        assert await session.scalar(select(func.count()).select_from(Assessment)) == 0


async def test_a_profile_already_loaded_is_deleted_by_the_session_itself(db):
    _, jane = await run_db_setup_and_create_user(db)
    async with db.sessions() as session, session.begin():
        user = await session.get(User, jane.id)
        assert (await user.awaitable_attrs.profile) is not None
        with record(db) as log:
            await session.delete(user)
            await session.flush()
    assert sum(s.startswith("DELETE FROM user_profiles") for s in log.sql) == 1
    assert await count(db, "user_profiles") == 1  # Alex's


# The refused load leaves the driver's cursor coroutine unawaited; Python warns about it.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
async def test_an_unloaded_relationship_raises_on_plain_attribute_access(db):
    alex, _ = await run_db_setup_and_create_user(db)
    async with db.sessions() as session:
        user = await session.get(User, alex.id)
        with pytest.raises(Exception) as caught:
            _ = user.assessments
    # PostgreSQL raises MissingGreenlet itself; on SQLite it comes wrapped in a StatementError.
    error = caught.value
    assert isinstance(error, MissingGreenlet) or isinstance(getattr(error, "orig", None), MissingGreenlet), error
    # Collect that coroutine now, under this test's filter: left to a later collection, its warning
    # was reported under whichever test ran then (test_0003_renders_offline_for_the_dialect[sqlite]).
    del caught, error
    gc.collect()


async def test_0003_renders_offline_for_the_dialect(db):
    from labbench.migrations import offline_sql

    revision = await db.current_revision()
    up = offline_sql(db, from_revision="0002", to_revision="0003")
    for table in ("skills", "user_profiles", "user_skills"):
        assert f"CREATE TABLE {table}" in up
    assert up.count("ON DELETE CASCADE") == 3  # the profile's key and both of user_skills'
    assert "CONSTRAINT pk_user_skills PRIMARY KEY (user_id, skill_id)" in up
    down = offline_sql(db, from_revision="0003", to_revision="0002")
    assert "DROP TABLE user_skills" in down and "DROP TABLE skills" in down
    assert await db.current_revision() == revision  # nothing ran


async def test_reset_removes_added_pairs_and_restores_the_sample_profiles_and_skills(db, redis_client, key_prefix):
    from labbench.lab_data import reset_lab_data

    alex, _ = await run_db_setup_and_create_user(db)
    async with db.sessions.begin() as session:
        user = await session.get(User, alex.id, options=[selectinload(User.skills), selectinload(User.profile)])
        user.skills.append(Skill(name="Rust"))
        user.profile.headline = "Changed"
    report = await reset_lab_data(db, redis_client, prefix=key_prefix)
    assert report.rows_deleted["skills"] == 5 and report.rows_deleted["user_profiles"] == 2
    assert report.rows_deleted["user_skills"] == sum(len(s) for s in SAMPLE_SKILLS.values()) + 1
    async with db.sessions() as session:
        user = await session.get(User, alex.id, options=[selectinload(User.skills), selectinload(User.profile)])
        assert [s.name for s in user.skills] == sorted(SAMPLE_SKILLS[alex.email])
        assert user.profile.headline == SAMPLE_PROFILES[alex.email]["headline"]
        assert await session.scalar(select(func.count()).select_from(Skill)) == 4
