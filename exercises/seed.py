"""The exercises' template database: the lab's schema at head, USERS users with 0 to 3 scores each,
and what the checks need around it (a way to make a COMMIT fail or take its time, and the grants
of the learners' group role). Made once per cluster and migration set; each run copies it."""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError

from source.config import PROJECT_DIR
from source.database import Database
from source.models import AIRScore, User

SEED_VERSION = "1"
USERS = 620  # enough for the 600-user check of section 3, with some to spare
SLOW_COMMIT_SECONDS = 0.3

# A deferred constraint trigger runs at COMMIT. The checks list names in exercise_commit_faults
# (the learners' role cannot read it): a user renamed to a 'refuse' name fails at COMMIT, one renamed
# to a 'slow' name commits SLOW_COMMIT_SECONDS later, which opens the window in which a reader can
# cache the old row of a write that invalidated before its commit.
EXTRAS = f"""
CREATE TABLE exercise_commit_faults (
    name varchar(255) PRIMARY KEY,
    action text NOT NULL CHECK (action IN ('refuse', 'slow'))
);
CREATE FUNCTION exercise_commit_fault() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE what text;
BEGIN
    SELECT action INTO what FROM exercise_commit_faults WHERE name = NEW.name;
    IF what = 'refuse' THEN
        RAISE EXCEPTION 'the database refused this change at COMMIT' USING ERRCODE = 'check_violation';
    ELSIF what = 'slow' THEN
        PERFORM pg_sleep({SLOW_COMMIT_SECONDS});
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER users_commit_faults AFTER UPDATE ON users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION exercise_commit_fault();
REVOKE ALL ON exercise_commit_faults FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO exercise_learner;
GRANT SELECT ON users, air_scores TO exercise_learner;
GRANT UPDATE (name, updated_at) ON users TO exercise_learner;
"""


def template_name() -> str:
    """Named after what it holds: the migrations, this seed and its extras."""
    digest = hashlib.sha256()
    for path in sorted((PROJECT_DIR / "alembic" / "versions").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(f"{SEED_VERSION}{USERS}{EXTRAS}".encode())
    return f"exercise_template_{digest.hexdigest()[:12]}"


def seed_rows(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """USERS users; user i has i % 4 scores, each a few minutes apart (no two of a user at once)."""
    base = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    users, scores = [], []
    for i in range(USERS):
        user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        joined = base + timedelta(minutes=7 * i)
        users.append({"id": user_id, "email": f"learner{i:03d}@example.invalid", "name": f"Learner {i:03d}",
                      "occupation_code": "DEV_ENG", "education_level": None, "years_experience": float(i % 15),
                      "created_at": joined, "updated_at": joined})
        for k in range(i % 4):
            vr, hr, synergy = (round(rng.uniform(40, 95), 2) for _ in range(3))
            air = round(0.5 * vr + 0.4 * hr + 0.1 * synergy, 2)
            at = joined + timedelta(minutes=1 + 2 * k)
            scores.append({"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "user_id": user_id,
                           "occupation_code": "DEV_ENG", "air_score": air, "vr_score": vr, "hr_score": hr,
                           "synergy_score": synergy, "ci_lower": air - 3.0, "ci_upper": air + 3.0,
                           "parameter_version": "v1", "calculation_metadata": {"seeded": True},
                           "created_at": at, "updated_at": at})
    return users, scores


async def ensure_template(conn, admin_url: Callable[[str], str]) -> str:
    """The template's name, made (under another name, then renamed) if it does not exist yet.
    `conn`: an AUTOCOMMIT admin connection to the cluster's postgres database."""
    name = template_name()
    if await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
        return name
    building = f"exercise_build_{os.getpid()}_{secrets.token_hex(4)}"
    await conn.execute(text(f"CREATE DATABASE {building}"))
    try:
        db = Database(admin_url(building), null_pool=True)
        try:
            await db.upgrade_to_head()
            users, scores = seed_rows(random.Random(20250106))
            async with db.engine.begin() as build:
                await build.execute(insert(User), users)
                await build.execute(insert(AIRScore), scores)
                raw = await build.get_raw_connection()
                await raw.driver_connection.execute(EXTRAS)  # several statements: asyncpg's simple protocol
        finally:
            await db.dispose()
        await conn.execute(text(f"ALTER DATABASE {building} IS_TEMPLATE true"))
        await conn.execute(text(f"ALTER DATABASE {building} RENAME TO {name}"))
    except DBAPIError:
        # Another process made the same template meanwhile: use theirs.
        await _drop_template(conn, building)
        if not await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            raise
        return name
    old = (await conn.scalars(text("SELECT datname FROM pg_database WHERE datname LIKE 'exercise\\_template\\_%' "
                                   "AND datname <> :n"), {"n": name})).all()
    for stale in old:
        await _drop_template(conn, stale)
    return name


async def _drop_template(conn, name: str) -> None:
    await conn.execute(text(f'ALTER DATABASE "{name}" IS_TEMPLATE false'))
    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
