"""1. Deleting a user who has scores. First on the minimal models (source/models_minimal.py), in a
transaction of its own that is rolled back at the end, tables included: without a cascade the
session sets the scores' user_id to NULL, which the column refuses. Then the lab's models: ORM cascade
next to ON DELETE CASCADE, run on throwaway users (each with an assessment, a profile and skill pairs)
deleted three ways, with the statements each way sent and the rows the database then still held. Each
user is created and removed within the run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from source import models_minimal as minimal
from source.database import WRITE_TRANSACTION, Database
from source.models import Assessment, Profile, Skill, User, user_skills

from .recorder import record

TABLES = {"users": User.id, "assessments": Assessment.user_id, "user_profiles": Profile.user_id,
          "user_skills": user_skills.c.user_id}


@dataclass(frozen=True)
class DeleteRun:
    how: str
    sql: list[str]  # the data statements sent, in order
    outcome: str
    rows_left: dict[str, int]  # the user's rows in each table afterwards


# What `session.delete(user)` on the minimal models can do to a user's two scores; the run says which it did.
MINIMAL_OUTCOMES = (
    "The user and both scores are deleted",
    "The user is deleted; the scores stay, their user_id set to NULL",
    "The user is deleted; the scores stay, pointing at a user who no longer exists",
    "Nothing is deleted: the database refuses the statement the session sends",
)


@dataclass(frozen=True)
class MinimalDelete:
    sql: list[str]  # the data statements the delete sent, in order
    error: str | None  # what the database refused, if it did
    users_left: int  # of the one user, afterwards
    scores_left: int  # of the two scores
    scores_without_user: int  # scores whose user_id is NULL or names no user

    @property
    def outcome(self) -> int:
        """Which of MINIMAL_OUTCOMES happened."""
        if self.error:
            return 3
        if self.scores_left == 0:
            return 0
        return 1 if self.scores_without_user and "SET user_id" in " ".join(self.sql) else 2


async def minimal_delete(db: Database) -> MinimalDelete:
    """A user with two scores on the minimal models, then `session.delete(user)` and a flush. Runs in
    one transaction on a connection of its own (tables created in it), rolled back at the end."""
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(**WRITE_TRANSACTION)
        outer = await conn.begin()
        try:
            await conn.run_sync(minimal.Base.metadata.create_all)
            # Each session works in a SAVEPOINT of the outer transaction (create_savepoint).
            async with AsyncSession(conn, join_transaction_mode="create_savepoint",
                                    expire_on_commit=False) as session:
                user = minimal.User(email="alex@example.com", name="Alex Smith",
                                    scores=[minimal.AIRScore(air_score=71.5), minimal.AIRScore(air_score=74.0)])
                session.add(user)
                await session.commit()  # releases the savepoint; the outer transaction goes on
            error = None
            async with AsyncSession(conn, join_transaction_mode="create_savepoint") as session:
                user = await session.get(minimal.User, user.id)
                with record(db) as log:
                    try:
                        await session.delete(user)
                        await session.flush()
                    except IntegrityError as refused:
                        error = str(refused.orig).strip().splitlines()[0]
                        await session.rollback()
            users = await conn.scalar(select(func.count()).select_from(minimal.User))
            scores = await conn.scalar(select(func.count()).select_from(minimal.AIRScore))
            orphans = await conn.scalar(select(func.count()).select_from(minimal.AIRScore).where(
                minimal.AIRScore.user_id.not_in(select(minimal.User.id)) | minimal.AIRScore.user_id.is_(None)))
        finally:
            await outer.rollback()  # the tables and their rows go with it
    sent = [sql for sql in log.sql if "SAVEPOINT" not in sql]  # the session's savepoint, not the delete
    return MinimalDelete(sent, error, users, scores, orphans)


async def _throwaway_user(db: Database, *, with_assessment: bool) -> str:
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        skills = list((await session.scalars(select(Skill).order_by(Skill.name).limit(2))).all())
        user = User(email=f"cascade-{uuid.uuid4().hex[:10]}@example.com", name="Cascade demo", skills=skills,
                    profile=Profile(headline="Deleted in a moment"))
        if with_assessment:
            user.assessments.append(Assessment(component="demo"))
        session.add(user)
    return user.id


async def rows_of(db: Database, user_id: str) -> dict[str, int]:
    async with db.sessions() as session:
        return {table: await session.scalar(select(func.count()).where(column == user_id))
                for table, column in TABLES.items()}


async def _remove(db: Database, user_id: str) -> None:
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)
        if (user := await session.get(User, user_id)) is not None:
            await session.delete(user)


async def cascade_demo(db: Database) -> list[DeleteRun]:
    runs, made = [], []
    try:
        # 1. The session: ORM cascade loads and deletes the assessments; the profile is left to
        # the database (passive_deletes=True); the skill pairs are loaded and deleted.
        made.append(user_id := await _throwaway_user(db, with_assessment=True))
        async with db.sessions.begin() as session:
            await session.connection(execution_options=WRITE_TRANSACTION)
            user = await session.get(User, user_id)
            with record(db) as log:
                await session.delete(user)
                await session.flush()
        runs.append(DeleteRun("session.delete(user), a user with an assessment", log.sql,
                              "deleted", await rows_of(db, user_id)))

        # 2. Core, the same kind of user: assessments.user_id has no ON DELETE, so it is refused.
        made.append(user_id := await _throwaway_user(db, with_assessment=True))
        try:
            async with db.sessions.begin() as session:
                await session.connection(execution_options=WRITE_TRANSACTION)
                with record(db) as log:
                    await session.execute(delete(User).where(User.id == user_id))
            outcome = "deleted"
        except IntegrityError as exc:
            outcome = f"refused by the database ({type(exc.orig).__name__}): rolled back, nothing deleted"
        runs.append(DeleteRun("Core DELETE FROM users, a user with an assessment", log.sql, outcome,
                              await rows_of(db, user_id)))

        # 3. Core, a user without one: ON DELETE CASCADE removes the profile and the pairs.
        made.append(user_id := await _throwaway_user(db, with_assessment=False))
        async with db.sessions.begin() as session:
            await session.connection(execution_options=WRITE_TRANSACTION)
            with record(db) as log:
                await session.execute(delete(User).where(User.id == user_id))
        runs.append(DeleteRun("Core DELETE FROM users, a user without one", log.sql, "deleted",
                              await rows_of(db, user_id)))
    finally:
        for user_id in made:
            await _remove(db, user_id)
    return runs
