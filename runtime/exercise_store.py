"""Each learner's exercises, kept with their progress (runtime.learners): the code they wrote, the
starter it began from (by hash, with the starter's text kept once per hash, so that a changed
starter can be shown as a diff), their last run's results, and per check how many of their runs
failed it, for the instructor's figures. Also the room's switches (exercises on or off on a shared
server), where every app process reads them.

The tables live in runtime.learners.room_metadata beside the learners' own; they are created by
the migration alembic/versions/*_exercise_attempts.py. A learner's rows go with their learner row
(ON DELETE CASCADE), so "start over" deletes them too. Nothing here validates code: callers store
only what exercises.validate would accept in size (at most exercises.MAX_CODE_BYTES, no NUL).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Table,
    Text,
    cast,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from runtime.learners import room_metadata
from source.database import Database
from source.models import UTCDateTime, utcnow

exercise_starters = Table(
    "exercise_starters", room_metadata,
    Column("starter_hash", String(64), primary_key=True),  # SHA-256 of the text
    Column("exercise_id", String(60), nullable=False),
    Column("text", Text, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
)
exercise_attempts = Table(
    "exercise_attempts", room_metadata,
    Column("learner_id", String(36), ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True),
    Column("exercise_id", String(60), primary_key=True),
    Column("code", Text, nullable=False),
    Column("starter_hash", String(64), ForeignKey("exercise_starters.starter_hash"), nullable=False),
    Column("runs", Integer, nullable=False),  # "Run checks" that ran the code
    Column("failed_runs", Integer, nullable=False),
    Column("passed", Boolean, nullable=False),  # some run passed every required check
    Column("answer_seen", Boolean, nullable=False),  # they asked for the answer key before passing
    Column("result", JSON, nullable=True),  # the last run's results (see result_of in ui/exercise_runs.py)
    Column("updated_at", UTCDateTime, nullable=False),
)
exercise_check_failures = Table(
    "exercise_check_failures", room_metadata,
    Column("learner_id", String(36), primary_key=True),
    Column("exercise_id", String(60), primary_key=True),
    Column("check_name", String(120), primary_key=True),
    Column("failures", Integer, nullable=False),  # runs of this learner that failed this check
    ForeignKeyConstraint(["learner_id", "exercise_id"], ["exercise_attempts.learner_id", "exercise_attempts.exercise_id"],
                         ondelete="CASCADE"),
)
room_switches = Table(
    "room_switches", room_metadata,
    Column("name", String(40), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)

EXERCISES_SWITCH = "exercises"  # on a shared server: learners may run their code


def starter_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Attempt:
    exercise_id: str
    code: str
    starter_hash: str
    runs: int
    failed_runs: int
    passed: bool
    answer_seen: bool
    result: dict[str, Any] | None
    updated_at: datetime


def _insert(db: Database, table: Table):
    """INSERT ... ON CONFLICT, in the dialect of this database (both have it)."""
    return (postgresql_insert if db.backend == "postgresql" else sqlite_insert)(table)


async def _keep_starter(session, db: Database, exercise_id: str, starter: str) -> str:
    digest = starter_hash(starter)
    await session.execute(_insert(db, exercise_starters).values(
        starter_hash=digest, exercise_id=exercise_id, text=starter, first_seen_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["starter_hash"]))
    return digest


async def load(db: Database, learner_id: str, exercise_id: str) -> Attempt | None:
    async with db.sessions() as session:
        row = (await session.execute(select(exercise_attempts).where(
            exercise_attempts.c.learner_id == learner_id, exercise_attempts.c.exercise_id == exercise_id))).first()
    if row is None:
        return None
    return Attempt(row.exercise_id, row.code, row.starter_hash, row.runs, row.failed_runs, row.passed,
                   row.answer_seen, row.result, row.updated_at)


async def starter_text(db: Database, digest: str) -> str | None:
    async with db.sessions() as session:
        return await session.scalar(select(exercise_starters.c.text).where(exercise_starters.c.starter_hash == digest))


async def save_code(db: Database, learner_id: str, exercise_id: str, code: str, *, starter: str) -> None:
    """Keep the learner's code (a draft, not run), begun from `starter`."""
    async with db.sessions.begin() as session:
        digest = await _keep_starter(session, db, exercise_id, starter)
        now = utcnow()
        await session.execute(_insert(db, exercise_attempts).values(
            learner_id=learner_id, exercise_id=exercise_id, code=code, starter_hash=digest, runs=0, failed_runs=0,
            passed=False, answer_seen=False, result=None, updated_at=now,
        ).on_conflict_do_update(index_elements=["learner_id", "exercise_id"],
                                set_={"code": code, "starter_hash": digest, "updated_at": now}))


async def record_run(db: Database, learner_id: str, exercise_id: str, code: str, *, starter: str,
                     result: dict[str, Any], passed: bool, failed_checks: list[str]) -> None:
    """A run's code and results, in one transaction: the run counted (failed or not), `passed`
    kept once earned, and each check it failed counted."""
    async with db.sessions.begin() as session:
        digest = await _keep_starter(session, db, exercise_id, starter)
        now, table = utcnow(), exercise_attempts
        await session.execute(_insert(db, table).values(
            learner_id=learner_id, exercise_id=exercise_id, code=code, starter_hash=digest, runs=1,
            failed_runs=0 if passed else 1, passed=passed, answer_seen=False, result=result, updated_at=now,
        ).on_conflict_do_update(index_elements=["learner_id", "exercise_id"], set_={
            "code": code, "starter_hash": digest, "runs": table.c.runs + 1,
            "failed_runs": table.c.failed_runs + (0 if passed else 1),
            "passed": True if passed else table.c.passed, "result": result, "updated_at": now}))
        for name in dict.fromkeys(failed_checks):
            counts = exercise_check_failures
            await session.execute(_insert(db, counts).values(
                learner_id=learner_id, exercise_id=exercise_id, check_name=name[:120], failures=1,
            ).on_conflict_do_update(index_elements=["learner_id", "exercise_id", "check_name"],
                                    set_={"failures": counts.c.failures + 1}))


async def mark_answer_seen(db: Database, learner_id: str, exercise_id: str) -> None:
    async with db.sessions.begin() as session:
        await session.execute(exercise_attempts.update().where(
            exercise_attempts.c.learner_id == learner_id, exercise_attempts.c.exercise_id == exercise_id,
        ).values(answer_seen=True))


# --- the room's switches -------------------------------------------------------------------


async def switch(db: Database, name: str) -> bool:
    """Off until someone turns it on."""
    async with db.sessions() as session:
        return bool(await session.scalar(select(room_switches.c.enabled).where(room_switches.c.name == name)))


async def set_switch(db: Database, name: str, enabled: bool) -> None:
    async with db.sessions.begin() as session:
        now = utcnow()
        await session.execute(_insert(db, room_switches).values(name=name, enabled=enabled, changed_at=now)
                              .on_conflict_do_update(index_elements=["name"],
                                                     set_={"enabled": enabled, "changed_at": now}))


# --- the room, for the instructor page -----------------------------------------------------


@dataclass(frozen=True)
class ExerciseFigures:
    exercise_id: str
    attempted: int  # learners who ran their code at least once
    passed: int  # of whom passed every required check in some run
    most_failed: str | None  # the check failed in the most runs, over every learner
    most_failed_runs: int


async def exercise_figures(db: Database) -> dict[str, ExerciseFigures]:
    """Per exercise anyone ran: attempted, passed, and the check most often failed."""
    attempts = exercise_attempts
    counted = (select(attempts.c.exercise_id, func.count(), func.sum(cast(attempts.c.passed, Integer)))
               .where(attempts.c.runs > 0).group_by(attempts.c.exercise_id))
    failures = exercise_check_failures
    per_check = (select(failures.c.exercise_id, failures.c.check_name, func.sum(failures.c.failures).label("runs"))
                 .group_by(failures.c.exercise_id, failures.c.check_name))
    async with db.sessions() as session:
        rows = (await session.execute(counted)).all()
        checks = (await session.execute(per_check)).all()
    worst: dict[str, tuple[int, str]] = {}
    for exercise_id, name, runs in checks:
        # the most runs first; a tie goes to the name first in alphabetical order, so the figure is stable
        if exercise_id not in worst or (-runs, name) < (-worst[exercise_id][0], worst[exercise_id][1]):
            worst[exercise_id] = (int(runs), name)
    return {exercise_id: ExerciseFigures(exercise_id, attempted, int(passed or 0), worst.get(exercise_id, (0, None))[1],
                                         worst.get(exercise_id, (0, None))[0])
            for exercise_id, attempted, passed in rows}
