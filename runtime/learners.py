"""The room's bookkeeping: each learner is a row keyed by an unguessable token, with their
progress marks, quiz answers and the IDs they made, so that a refresh, a bookmark or a server
restart resumes them. Not the answer key: these tables live in a MetaData of their own (page 1
draws `Base.metadata`), created by migration 0004; Alembic's target_metadata holds both."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    cast,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy import update as sql_update

from source.database import Database
from source.models import NAMING_CONVENTION, UTCDateTime, new_id, utcnow

room_metadata = MetaData(naming_convention=NAMING_CONVENTION)
FIRST_REVISION = "0004"  # the migration that creates these tables

learners = Table(
    "learners", room_metadata,
    Column("id", String(36), primary_key=True),
    # SHA-256 of the token: the database never holds a token that would open a learner's row.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("display_name", String(40), nullable=True),
    Column("made", JSON, nullable=False),  # IDs the learner created, by name (e.g. created_user_id)
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False, index=True),
)
learner_progress = Table(
    "learner_progress", room_metadata,
    Column("learner_id", String(36), ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True),
    Column("section", String(40), primary_key=True),
    Column("done", Boolean, nullable=False),  # the section's key action
    Column("passed", Boolean, nullable=False),  # its knowledge check, every question right
)
learner_answers = Table(
    "learner_answers", room_metadata,
    Column("learner_id", String(36), ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True),
    Column("section", String(40), primary_key=True),
    Column("question", Integer, primary_key=True),
    Column("choice", Integer, nullable=False),
    Column("correct", Boolean, nullable=False),
)

TOKEN_BYTES = 24  # 192 bits from the operating system's CSPRNG
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}").fullmatch  # what token_urlsafe(24) gives


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: object) -> str | None:
    """The stored form of a well-formed token; None for anything else (no query is sent for it)."""
    if not isinstance(token, str) or not _TOKEN_SHAPE(token):
        return None
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Saved:
    """What a learner's rows hold."""

    display_name: str | None = None
    done: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)
    answers: dict[str, dict[int, tuple[int, bool]]] = field(default_factory=dict)  # section -> q -> (choice, right)
    made: dict[str, Any] = field(default_factory=dict)


async def create(db: Database, token: str) -> str:
    """A new learner's row (empty); returns its ID."""
    learner_id, now = new_id(), utcnow()
    async with db.sessions.begin() as session:
        await session.execute(insert(learners).values(
            id=learner_id, token_hash=token_hash(token), made={}, created_at=now, last_seen_at=now))
    return learner_id


async def load(db: Database, token: str) -> tuple[str, Saved] | None:
    """The learner whose token this is, with what they saved, marked seen now; None for a
    malformed or unknown token."""
    digest = token_hash(token)
    if digest is None:
        return None
    async with db.sessions.begin() as session:
        row = (await session.execute(select(learners).where(learners.c.token_hash == digest))).first()
        if row is None:
            return None
        await session.execute(sql_update(learners).where(learners.c.id == row.id).values(last_seen_at=utcnow()))
        saved = Saved(display_name=row.display_name, made=dict(row.made or {}))
        for progress in await session.execute(select(learner_progress).where(learner_progress.c.learner_id == row.id)):
            if progress.done:
                saved.done.add(progress.section)
            if progress.passed:
                saved.passed.add(progress.section)
        answers = select(learner_answers).where(learner_answers.c.learner_id == row.id)
        for answer in await session.execute(answers):
            saved.answers.setdefault(answer.section, {})[answer.question] = (answer.choice, answer.correct)
    return row.id, saved


async def save(db: Database, learner_id: str, token: str, now: Saved, before: Saved | None) -> None:
    """One transaction writing what changed since `before` (everything when None). A row that is
    gone (the tables were dropped and made again) is created again under the same token."""
    async with db.sessions.begin() as session:
        found = await session.execute(sql_update(learners).where(learners.c.id == learner_id).values(
            display_name=now.display_name, made=now.made, last_seen_at=utcnow()))
        if found.rowcount == 0:
            stamp = utcnow()
            await session.execute(insert(learners).values(
                id=learner_id, token_hash=token_hash(token), display_name=now.display_name, made=now.made,
                created_at=stamp, last_seen_at=stamp))
            before = None
        if before is None or (before.done, before.passed) != (now.done, now.passed):
            await session.execute(delete(learner_progress).where(learner_progress.c.learner_id == learner_id))
            rows = [{"learner_id": learner_id, "section": s, "done": s in now.done, "passed": s in now.passed}
                    for s in sorted(now.done | now.passed)]
            if rows:
                await session.execute(insert(learner_progress), rows)
        for section in sorted(now.answers.keys() | (before.answers.keys() if before else set())):
            answers = now.answers.get(section, {})
            if before is not None and before.answers.get(section, {}) == answers:
                continue
            await session.execute(delete(learner_answers).where(
                learner_answers.c.learner_id == learner_id, learner_answers.c.section == section))
            if answers:
                await session.execute(insert(learner_answers), [
                    {"learner_id": learner_id, "section": section, "question": q, "choice": c, "correct": right}
                    for q, (c, right) in sorted(answers.items())])


async def touch(db: Database, learner_id: str) -> None:
    async with db.sessions.begin() as session:
        await session.execute(sql_update(learners).where(learners.c.id == learner_id).values(last_seen_at=utcnow()))


async def forget(db: Database, learner_id: str) -> None:
    """'Start over': this learner's rows, and no one else's."""
    async with db.sessions.begin() as session:
        for table in (learner_answers, learner_progress):
            await session.execute(delete(table).where(table.c.learner_id == learner_id))
        await session.execute(delete(learners).where(learners.c.id == learner_id))


# --- the room, for the instructor page -----------------------------------------------------


@dataclass(frozen=True)
class ActiveLearner:
    id: str
    display_name: str | None
    last_seen_at: datetime
    done: frozenset[str]
    passed: frozenset[str]


@dataclass(frozen=True)
class QuestionShare:
    section: str
    question: int
    answered: int
    right: int


async def active_learners(db: Database, *, within: timedelta = timedelta(minutes=30)) -> list[ActiveLearner]:
    """Learners seen within `within` (most recent first), with their progress marks."""
    since = utcnow() - within
    async with db.sessions() as session:
        rows = (await session.execute(select(learners.c.id, learners.c.display_name, learners.c.last_seen_at)
                                      .where(learners.c.last_seen_at >= since)
                                      .order_by(learners.c.last_seen_at.desc()))).all()
        marks = (await session.execute(select(learner_progress).join(learners).where(
            learners.c.last_seen_at >= since))).all()
    done: dict[str, set[str]] = {}
    passed: dict[str, set[str]] = {}
    for mark in marks:
        if mark.done:
            done.setdefault(mark.learner_id, set()).add(mark.section)
        if mark.passed:
            passed.setdefault(mark.learner_id, set()).add(mark.section)
    return [ActiveLearner(row.id, row.display_name, row.last_seen_at, frozenset(done.get(row.id, ())),
                          frozenset(passed.get(row.id, ()))) for row in rows]


async def question_shares(db: Database) -> list[QuestionShare]:
    """Per question, how many learners' stored answers there are and how many are right."""
    right = func.sum(cast(learner_answers.c.correct, Integer))
    query = (select(learner_answers.c.section, learner_answers.c.question, func.count(), right)
             .group_by(learner_answers.c.section, learner_answers.c.question)
             .order_by(learner_answers.c.section, learner_answers.c.question))
    async with db.sessions() as session:
        return [QuestionShare(s, q, n, int(r or 0)) for s, q, n, r in (await session.execute(query)).all()]
