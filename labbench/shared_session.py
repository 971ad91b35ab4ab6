"""2. Why each task needs its own AsyncSession: two tasks register a user at the same time, once
sharing one session and once with a session each, and the demo reports what each task got.

An AsyncSession is one unit of work on (at most) one connection, and it is not safe to use from
concurrent tasks. What goes wrong is SQLAlchemy's own guard, on both backends:
- a fresh session ("cold"): the first task is still checking a connection out of the pool when
  the second asks the session for it: InvalidRequestError "This session is provisioning a new
  connection; concurrent operations are not permitted" (error code isce);
- a session that already holds its connection ("warm"): the first task's flush is still sending
  its INSERT when the second task's flush starts: InvalidRequestError "Session is already flushing".
  Worse, the second task's user was already in the session (added during the first flush, which
  SQLAlchemy warns about), so the first task's commit writes it: the task that failed finds its
  row in the database, committed by someone else's commit.
asyncpg's own "another operation is in progress" is never reached: SQLAlchemy's async adapters
(for asyncpg and for aiosqlite) hold an asyncio.Lock per connection around each statement, so
two statements on one connection wait for each other. With a session per task, each task has
its own connection and both commit.

The demo's users get emails under example.invalid and are deleted again at the end."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, text
from sqlalchemy.exc import SQLAlchemyError

from source.database import Database
from source.errors import LabError
from source.models import User
from source.repositories import UserRepository
from source.services import create_user


@dataclass(frozen=True)
class TaskOutcome:
    task: str
    succeeded: bool  # the task returned without an error
    row_written: bool  # its user is in the database afterwards (whoever committed it)
    error_class: str | None  # e.g. "sqlalchemy.exc.InvalidRequestError"
    error_message: str | None  # the error's own message, without SQLAlchemy's link
    error_code: str | None  # SQLAlchemy's error code (the page at sqlalche.me/e/21/<code>)


@dataclass(frozen=True)
class DemoResult:
    mode: str  # "one shared session (cold)", "one shared session (warm)", "a session per task"
    outcomes: tuple[TaskOutcome, ...]

    @property
    def users_written(self) -> int:
        return sum(o.row_written for o in self.outcomes)


def _outcome(task: str, result: object, written: bool) -> TaskOutcome:
    if not isinstance(result, BaseException):
        return TaskOutcome(task, True, written, None, None, None)
    if not isinstance(result, SQLAlchemyError | LabError):
        raise result  # not what the demo is about: let it surface as it is
    message = str(result.args[0]) if result.args else str(result)
    return TaskOutcome(task, False, written, f"{type(result).__module__}.{type(result).__qualname__}",
                       message, getattr(result, "code", None))


def _emails() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"task-a-{tag}@example.invalid", f"task-b-{tag}@example.invalid"


async def _settle(db: Database, mode: str, emails: tuple[str, str], results: list) -> DemoResult:
    """Find which of the demo's users were written, delete them, and describe each task's outcome."""
    async with db.sessions.begin() as session:
        written = set((await session.scalars(select(User.email).where(User.email.in_(emails)))).all())
        await session.execute(delete(User).where(User.email.in_(emails)))
    return DemoResult(mode, tuple(
        _outcome(f"task {name}", result, email in written)
        for name, email, result in zip("AB", emails, results, strict=True)
    ))


async def two_tasks_one_session(db: Database, *, warm: bool = False) -> DemoResult:
    """Both tasks create a user and commit on the same session (the bug)."""
    emails = _emails()
    async with db.sessions() as session:
        if warm:
            await session.execute(text("SELECT 1"))  # the session now holds its connection

        async def register(email: str) -> None:
            await UserRepository(session).create(email=email, name="Demo task")
            await session.commit()

        results = await asyncio.gather(*(register(e) for e in emails), return_exceptions=True)
    mode = f"one shared session ({'warm' if warm else 'cold'})"
    return await _settle(db, mode, emails, results)


async def one_session_per_task(db: Database) -> DemoResult:
    """Each task runs the app's create_user use case, which opens a session of its own."""
    emails = _emails()
    results = await asyncio.gather(
        *(create_user(sessions=db.sessions, email=e, name="Demo task") for e in emails), return_exceptions=True
    )
    return await _settle(db, "a session per task", emails, results)
