"""1. ORM cascade next to ON DELETE CASCADE, run: throwaway users (each with an assessment, a
profile and skill pairs) deleted three ways, with the statements each way sent and the rows the
database then still held. Each user is created and removed within the run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

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
