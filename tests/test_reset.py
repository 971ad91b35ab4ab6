"""Resetting the lab touches only what the lab created."""

from __future__ import annotations

from sqlalchemy import text

from labbench.lab_data import reset_lab_data
from source import (
    User,
    UserRepository,
    calculate_and_store_airscore,
    run_db_setup_and_create_user,
)


async def test_reset_empties_the_lab_and_restores_the_sample_users_keeping_their_ids(db, redis_client, key_prefix):
    alex, _ = await run_db_setup_and_create_user(db)
    async with db.sessions.begin() as session:
        await UserRepository(session).update(alex.id, name="Alex Renamed")
        await UserRepository(session).create(email="learner@example.com", name="Learner")
        await session.execute(text("CREATE TABLE not_the_labs (id INTEGER PRIMARY KEY)"))
        await session.execute(text("INSERT INTO not_the_labs (id) VALUES (1)"))
    await calculate_and_store_airscore(sessions=db.sessions, user_id=alex.id, occupation_code="X")
    await redis_client.set(f"{key_prefix}user:1", "{}")
    await redis_client.set(f"{key_prefix}user:2", "{}")
    outsider = f"other-{key_prefix}"
    await redis_client.set(outsider, "keep me")
    try:
        report = await reset_lab_data(db, redis_client, prefix=key_prefix)
        assert report.keys_deleted == 2
        assert report.rows_deleted["users"] == 1 and report.rows_deleted["domain_events"] == 1
        assert await redis_client.get(outsider) == "keep me"
        async with db.sessions() as session:
            emails = sorted((await session.scalars(User.__table__.select().with_only_columns(User.email))).all())
            kept = await session.scalar(text("SELECT count(*) FROM not_the_labs"))
            restored = await UserRepository(session).get_by_id(alex.id)  # same ID: open sessions keep working
        assert emails == ["alex.smith@innovateai.com", "jane.doe@innovateai.com"]
        assert restored.name == "Alex Smith"
        assert kept == 1
    finally:
        await redis_client.delete(outsider)
