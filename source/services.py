"""Use cases that own their transaction: the score with its outbox event, and the sample data."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .database import WRITE_TRANSACTION, Database
from .errors import clean_id, clean_text
from .models import AIRScore, Base, DomainEvent, User, new_id, utcnow
from .repositories import DomainEventRepository, UserRepository

PARAMETER_VERSION = "v2.1"
SAMPLE_USERS = (
    {"email": "alex.smith@innovateai.com", "name": "Alex Smith", "occupation_code": "15-1252",
     "education_level": "Masters", "years_experience": 8.0},
    {"email": "jane.doe@innovateai.com", "name": "Jane Doe", "occupation_code": "15-2051",
     "education_level": "PhD", "years_experience": 5.0},
)


@dataclass(frozen=True)
class AIRScoreCalculated:
    """The event other services receive; its fields are the outbox payload."""

    score_id: str
    user_id: str
    occupation_code: str
    air_score: float
    ci_lower: float
    ci_upper: float
    parameter_version: str


def compute_airscore(vr_score: float, hr_score: float, synergy_score: float) -> dict[str, float]:
    """AI-R = 0.5 VR + 0.4 HR + 0.1 synergy (weights sum to 1, so AI-R stays on the 0-100
    scale of its parts), with a 95% interval of +/- 1.96 standard errors."""
    air = round(0.5 * vr_score + 0.4 * hr_score + 0.1 * synergy_score, 2)
    margin = round(1.96 * 2.5, 2)
    return {"air_score": air, "ci_lower": round(air - margin, 2), "ci_upper": round(air + margin, 2)}


def _new_score(user_id: str, occupation_code: str, rng: random.Random) -> AIRScore:
    vr, hr, synergy = (round(rng.uniform(40, 95), 2) for _ in range(3))
    return AIRScore(
        user_id=user_id,
        occupation_code=occupation_code,
        vr_score=vr,
        hr_score=hr,
        synergy_score=synergy,
        parameter_version=PARAMETER_VERSION,
        calculation_metadata={"method": "weighted-sum", "weights": [0.5, 0.4, 0.1]},
        **compute_airscore(vr, hr, synergy),
    )


async def create_sample_airscore(
    *, session: AsyncSession, user_id: str, occupation_code: str = "DEV_ENG", rng: random.Random | None = None
) -> AIRScore:
    """Add a sample score for an existing user; the caller commits."""
    user = await UserRepository(session).get_existing(user_id)
    code = clean_text(occupation_code, field="occupation_code", label="occupation code", max_length=20, required=True)
    score = _new_score(user.id, code, rng or random.Random())
    session.add(score)
    await session.flush()
    return score


async def calculate_and_store_airscore(
    *, sessions: async_sessionmaker[AsyncSession], user_id: str, occupation_code: str,
    rng: random.Random | None = None,
) -> tuple[AIRScore, DomainEvent]:
    """The outbox write: the score and its pending event commit together, or neither does."""
    user_id = clean_id(user_id, label="user ID")
    async with sessions.begin() as session:  # commits on success, rolls back on any error
        # Lock the aggregate first (PostgreSQL: the user's row; SQLite: its one write lock, at
        # BEGIN): writes for one user commit one after another, so their events' created_at
        # order is their commit order, the order in which the relay publishes them.
        await session.connection(execution_options=WRITE_TRANSACTION)
        await session.get(User, user_id, with_for_update=True)
        score = await create_sample_airscore(
            session=session, user_id=user_id, occupation_code=occupation_code, rng=rng
        )
        payload = AIRScoreCalculated(
            score_id=score.id, user_id=score.user_id, occupation_code=score.occupation_code,
            air_score=score.air_score, ci_lower=score.ci_lower, ci_upper=score.ci_upper,
            parameter_version=score.parameter_version,
        )
        event = DomainEventRepository(session).add(
            DomainEvent(
                event_type=type(payload).__name__,
                aggregate_type="User",
                aggregate_id=score.user_id,
                payload=asdict(payload),
            )
        )
        await session.flush()
    return score, event


async def create_user(
    *, sessions: async_sessionmaker[AsyncSession], email: str, name: str,
    occupation_code: str | None = None, education_level: str | None = None,
    years_experience: float | None = None,
) -> User:
    """Register one user in a transaction of its own. Bad input raises InvalidInput before
    anything is sent; a taken email raises DuplicateEmail and nothing is written."""
    async with sessions.begin() as session:
        # It reads (is the email taken?), then writes: WRITE_TRANSACTION, or on SQLite a learner
        # registering while another commits gets "database is locked".
        await session.connection(execution_options=WRITE_TRANSACTION)
        return await UserRepository(session).create(
            email=email, name=name, occupation_code=occupation_code,
            education_level=education_level, years_experience=years_experience,
        )


async def get_or_create_users(session: AsyncSession, rows: list[dict]) -> list[User]:
    """Insert each user unless the email exists; safe when two sessions race (ON CONFLICT)."""
    dialect_insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    values = [{"id": new_id(), "created_at": now, "updated_at": now, **row} for row in rows]
    await session.execute(dialect_insert(User).values(values).on_conflict_do_nothing(index_elements=["email"]))
    repo = UserRepository(session)
    return [await repo.get_by_email(row["email"]) for row in rows]


async def run_db_setup_and_create_user(db: Database) -> tuple[User, User]:
    """Schema to head, then Alex Smith and Jane Doe. Idempotent: a second call creates nothing."""
    await db.upgrade_to_head()
    async with db.sessions.begin() as session:
        alex, jane = await get_or_create_users(session, [dict(row) for row in SAMPLE_USERS])
    return alex, jane


async def find_sample_users(db: Database) -> tuple[User | None, User | None]:
    """Alex and Jane if the set-up has run (in any session), without creating them."""
    async with db.sessions() as session:
        repo = UserRepository(session)
        alex, jane = [await repo.get_by_email(row["email"]) for row in SAMPLE_USERS]
    return alex, jane


@dataclass(frozen=True)
class ResetReport:
    rows_deleted: dict[str, int]
    keys_deleted: int


class ResetIncomplete(Exception):
    """A reset that stopped part-way, with what it had done when `cause` stopped it: the Redis
    keys it deleted, and the rows it deleted (None: the database's transaction did not commit,
    so no row was deleted)."""

    def __init__(self, *, keys_deleted: int, rows_deleted: dict[str, int] | None, cause: BaseException) -> None:
        super().__init__(f"reset stopped after {keys_deleted} key(s): {type(cause).__name__}")
        self.keys_deleted, self.rows_deleted, self.cause = keys_deleted, rows_deleted, cause


async def reset_lab_data(db: Database, redis_client, *, prefix: str) -> ResetReport:
    """Back to the initial state: the rows of the lab's own tables (and nothing else in the
    database), the Redis keys under the lab's prefix (and no other key). Alex and Jane keep their
    rows, restored to their sample values, so every open session's IDs stay valid.

    Redis goes first: it holds only what can be rebuilt (cached copies, the event stream), so a
    database that fails next loses nothing. Either failing raises ResetIncomplete, saying what was
    done before it."""
    keys_deleted, rows = 0, None
    try:
        keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=500)]
        for start in range(0, len(keys), 500):
            keys_deleted += await redis_client.delete(*keys[start : start + 500])
        sample_emails = [row["email"] for row in SAMPLE_USERS]
        deleting: dict[str, int] = {}
        async with db.sessions.begin() as session:
            for table in reversed(Base.metadata.sorted_tables):  # children before parents
                statement = delete(table)
                if table is User.__table__:
                    statement = statement.where(User.email.not_in(sample_emails))
                deleting[table.name] = (await session.execute(statement)).rowcount
            for row in SAMPLE_USERS:
                await session.execute(update(User).where(User.email == row["email"]).values(**row))
        rows = deleting  # committed
        await run_db_setup_and_create_user(db)
    except Exception as exc:
        raise ResetIncomplete(keys_deleted=keys_deleted, rows_deleted=rows, cause=exc) from exc
    return ResetReport(rows_deleted=rows, keys_deleted=keys_deleted)
