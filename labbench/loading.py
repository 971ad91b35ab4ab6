"""3. The N+1 problem, measured: load users with their scores by each strategy and keep what
the database was sent. Every count here comes from `recorder.record(db)` around the real
session; nothing is computed from N."""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.exc import InvalidRequestError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload
from sqlalchemy.orm.strategies import _SelectInLoader

from source.database import WRITE_TRANSACTION, Database
from source.errors import InvalidInput, clean_id
from source.models import AIRScore, User, new_id, utcnow
from source.repositories import MinimalUserRepository, UserRepository
from source.services import _new_score, create_sample_airscore

from .progress import Report, silent
from .recorder import StatementLog, record

Strategy = Literal["lazy", "selectin", "joined"]
STRATEGIES: dict[Strategy, Callable[[AsyncSession, list[str]], Awaitable[list[User]]]] = {
    "lazy": lambda session, ids: MinimalUserRepository(session).list_with_scores(ids),
    "selectin": lambda session, ids: UserRepository(session).list_with_scores_selectin(ids),
    "joined": lambda session, ids: UserRepository(session).list_with_scores_joined(ids),
}
# selectinload puts at most this many keys in one IN (...) and sends a statement per chunk: read
# from SQLAlchemy 2.1, where it is the loader class's default (500; selectinload(..., chunksize=n) sets another).
SELECTIN_CHUNK: int = _SelectInLoader._chunksize
MAX_COHORT_USERS = 1000  # past SELECTIN_CHUNK, so select-in's chunks can be seen
MAX_SCORES_PER_USER = 10
COHORT_DOMAIN = "cohort.example"
_NO_SYNC = {"execution_options": {"synchronize_session": False}}  # a fresh session: nothing to sync


@dataclass(frozen=True)
class LoadedScore:
    id: str
    occupation_code: str
    air_score: float


@dataclass(frozen=True)
class LoadedUser:
    id: str
    email: str
    name: str
    scores: tuple[LoadedScore, ...]

    @classmethod
    def of(cls, user: User) -> LoadedUser:
        # Reads only attributes already loaded: touching an unloaded one here would raise.
        scores = tuple(LoadedScore(s.id, s.occupation_code, s.air_score) for s in user.scores)
        return cls(user.id, user.email, user.name, scores)


@dataclass(frozen=True)
class LoadRun:
    """One strategy's result: the data, the statements it sent, how long it took."""

    strategy: str
    users: tuple[LoadedUser, ...]
    log: StatementLog
    seconds: float  # median wall time over the runs, session open to data in hand
    runs: int

    @property
    def score_count(self) -> int:
        return sum(len(user.scores) for user in self.users)


@dataclass(frozen=True)
class CaughtError:
    """An exception SQLAlchemy raised, reduced to what a learner should read."""

    exception: str  # qualified class name
    message: str
    cause: str | None  # qualified class of .orig, when the error wraps another
    sql: str | None  # the statement it could not run, when SQLAlchemy attaches it
    statements_recorded: int  # handed to the driver (not necessarily run) while the access failed

    @classmethod
    def of(cls, exc: Exception, log: StatementLog) -> CaughtError:
        orig = getattr(exc, "orig", None)
        message = str(orig) if orig is not None else str(exc)
        return cls(
            exception=_qualified(exc),
            message=message.split("\n")[0],
            cause=_qualified(orig) if orig is not None else None,
            sql=getattr(exc, "statement", None),
            statements_recorded=log.count,
        )


def _qualified(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


# --- the learner's cohort: many users, a few scores each -----------------------------------


def new_cohort_tag() -> str:
    """A tag for one learner's cohort: a room shares one database, so emails carry it."""
    return uuid.uuid4().hex[:10]


def _cohort_prefix(tag: str) -> str:
    if not tag.isalnum():
        raise InvalidInput("The cohort tag must be letters and digits.", field="tag")
    return f"n1-{tag}-"


def _check_size(value: int, *, label: str, maximum: int) -> int:
    if not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"The number of {label} must be between 1 and {maximum}.", field=label)
    return value


async def create_cohort(
    db: Database, *, tag: str, users: int, scores_per_user: int, rng: random.Random | None = None,
    report: Report = silent,
) -> list[str]:
    """Replace the cohort under `tag` with `users` new users of `scores_per_user` scores each,
    added through MinimalUserRepository in one transaction that this caller commits; returns their
    IDs ordered by email. Clicking again does not pile up rows."""
    prefix = _cohort_prefix(tag)
    users = _check_size(users, label="users", maximum=MAX_COHORT_USERS)
    scores_per_user = _check_size(scores_per_user, label="scores per user", maximum=MAX_SCORES_PER_USER)
    rng = rng or random.Random()
    report(f"adding {users} users and {users * scores_per_user} scores in one transaction", 0.1)
    async with db.sessions.begin() as session:  # the caller's transaction: committed when the block ends
        previous = select(User.id).where(User.email.startswith(prefix, autoescape=True))
        await session.execute(delete(AIRScore).where(AIRScore.user_id.in_(previous)), **_NO_SYNC)
        await session.execute(delete(User).where(User.id.in_(previous)), **_NO_SYNC)
        repo, start = MinimalUserRepository(session), utcnow()
        cohort = []
        for n in range(1, users + 1):
            user = User(id=new_id(), email=f"{prefix}{n:04d}@{COHORT_DOMAIN}", name=f"Cohort user {n}",
                        occupation_code="15-1252")
            user.scores = [_new_score(user.id, f"DEV_ENG_{k + 1}", rng) for k in range(scores_per_user)]
            for k, score in enumerate(user.scores):
                score.created_at = start + timedelta(milliseconds=k)  # a strict order within a user
            repo.add(user)
            cohort.append(user)
        await session.flush()
        return [user.id for user in cohort]


async def cohort_user_ids(db: Database, *, tag: str) -> list[str]:
    """The IDs of the cohort under `tag` as it is in the database now (empty if none)."""
    async with db.sessions() as session:
        result = await session.execute(
            select(User.id).where(User.email.startswith(_cohort_prefix(tag), autoescape=True)).order_by(User.email)
        )
        return list(result.scalars())


# --- running the strategies ------------------------------------------------------------------


Load = Callable[[AsyncSession], Awaitable[list[User]]]


async def _measure(db: Database, loads: dict[str, Load], runs: int, report: Report = silent) -> list[LoadRun]:
    """Run each load `runs` times, taking turns so that a noisy moment hits all of them alike,
    each run in a fresh session; keep the median time and the last run's statements and data."""
    _check_size(runs, label="runs", maximum=50)
    durations: dict[str, list[float]] = {name: [] for name in loads}
    last: dict[str, tuple[tuple[LoadedUser, ...], StatementLog]] = {}
    steps = runs * len(loads)
    for run in range(runs):
        for number, (name, load) in enumerate(loads.items()):
            done = run * len(loads) + number
            report(f"run {run + 1} of {runs}: {name} ({done + 1} of {steps})", done / steps)
            with record(db) as log:
                started = time.perf_counter()
                async with db.sessions() as session:
                    users = tuple(LoadedUser.of(user) for user in await load(session))
                durations[name].append(time.perf_counter() - started)
            last[name] = (users, log)
    return [LoadRun(name, *last[name], statistics.median(durations[name]), runs) for name in loads]


def _strategy(strategy: str, user_ids: list[str]) -> Load:
    if strategy not in STRATEGIES:
        raise InvalidInput(f"Unknown strategy {strategy!r}.", field="strategy")
    if not user_ids:
        raise InvalidInput("Set up the cohort first: there are no users to load.", field="users")
    ids = [clean_id(user_id, label="user ID") for user_id in user_ids]
    return lambda session: STRATEGIES[strategy](session, ids)


async def load_with_scores(db: Database, *, strategy: Strategy, user_ids: list[str], runs: int = 1,
                           report: Report = silent) -> LoadRun:
    """Load the users and their scores by one strategy, recording what was sent."""
    [run] = await _measure(db, {strategy: _strategy(strategy, user_ids)}, runs, report)
    return run


async def compare_strategies(db: Database, *, user_ids: list[str], runs: int = 5, report: Report = silent) -> list[LoadRun]:
    """All three strategies on the same users, `runs` times each."""
    return await _measure(db, {name: _strategy(name, user_ids) for name in STRATEGIES}, runs, report)


def expected_statements(strategy: Strategy, users: int) -> int:
    """What each strategy sends for `users` users: lazy 1 + N, select-in 1 + one per chunk of
    SELECTIN_CHUNK, joined 1. The page shows it beside the measured count (tests compare the two)."""
    if strategy == "lazy":
        return 1 + users
    return 1 + -(-users // SELECTIN_CHUNK) if strategy == "selectin" else 1


async def load_one_user(
    db: Database, *, user_id: str, strategy: Literal["lazy", "eager"], runs: int = 1
) -> LoadRun:
    """One user and their scores: lazily (get, then await the scores) or with the spec's
    get_user_with_scores_eager (selectinload). Raises NotFound for an unknown ID."""
    user_id = clean_id(user_id, label="user ID")

    async def lazy(session: AsyncSession) -> list[User]:
        user = await UserRepository(session).get_existing(user_id)
        await user.awaitable_attrs.scores
        return [user]

    async def eager(session: AsyncSession) -> list[User]:
        user = await UserRepository(session).get_user_with_scores_eager(user_id)
        if user is None:
            await UserRepository(session).get_existing(user_id)  # raises NotFound
        return [user]

    if strategy not in ("lazy", "eager"):
        raise InvalidInput(f"Unknown strategy {strategy!r}.", field="strategy")
    [run] = await _measure(db, {strategy: lazy if strategy == "lazy" else eager}, runs)
    return run


async def add_sample_scores(db: Database, *, user_id: str, count: int = 3) -> list[AIRScore]:
    """The spec's 'Add 3 Sample Scores for User': all in one commit, or nothing for a bad ID."""
    user_id = clean_id(user_id, label="user ID")
    count = _check_size(count, label="scores", maximum=MAX_SCORES_PER_USER)
    async with db.sessions.begin() as session:
        await session.connection(execution_options=WRITE_TRANSACTION)  # reads the user, then writes
        return [
            await create_sample_airscore(session=session, user_id=user_id, occupation_code=f"DEV_ENG_{k + 1}")
            for k in range(count)
        ]


# --- what a lazy load does in async code -----------------------------------------------------


async def _touch_scores(db: Database, *, user_id: str, query) -> CaughtError:
    async with db.sessions() as session:
        user = (await session.execute(query)).scalar_one_or_none()
        if user is None:
            await UserRepository(session).get_existing(user_id)  # raises NotFound
        with record(db) as log:
            try:
                user.scores  # noqa: B018 - a plain attribute access is the whole point
            except (StatementError, InvalidRequestError) as exc:
                return CaughtError.of(exc, log)
    raise RuntimeError("user.scores loaded without an error")


async def plain_lazy_load(db: Database, *, user_id: str) -> CaughtError:
    """Read user.scores, not loaded, without await: SQLAlchemy would have to do IO inside a plain
    attribute access, which async code cannot, so it raises (StatementError from MissingGreenlet)
    before anything is sent."""
    user_id = clean_id(user_id, label="user ID")
    return await _touch_scores(db, user_id=user_id, query=select(User).where(User.id == user_id))


async def raiseload_access(db: Database, *, user_id: str) -> CaughtError:
    """The same access with raiseload(User.scores): an InvalidRequestError that names the
    relationship, raised whether or not IO were possible: a hidden N+1 becomes a loud error."""
    user_id = clean_id(user_id, label="user ID")
    query = select(User).where(User.id == user_id).options(raiseload(User.scores))
    return await _touch_scores(db, user_id=user_id, query=query)
