"""Use cases that own their transaction: the score with its outbox event, a new user, and the
sample data."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .database import WRITE_TRANSACTION, Database
from .errors import clean_id, clean_text
from .event_repository import DomainEventRepository
from .models import AIRScore, DomainEvent, Profile, Skill, User, new_id, user_skills, utcnow
from .repositories import UserRepository

PARAMETER_VERSION = "v2.1"
SAMPLE_USERS = (
    {"email": "alex.smith@innovateai.com", "name": "Alex Smith", "occupation_code": "15-1252",
     "education_level": "Masters", "years_experience": 8.0},
    {"email": "jane.doe@innovateai.com", "name": "Jane Doe", "occupation_code": "15-2051",
     "education_level": "PhD", "years_experience": 5.0},
)
# Each sample user's one profile (one-to-one) and skills (many-to-many: Python is shared).
SAMPLE_PROFILES = {
    "alex.smith@innovateai.com": {"headline": "Software developer moving into ML engineering", "location": "Austin"},
    "jane.doe@innovateai.com": {"headline": "Data scientist", "location": "Toronto"},
}
SAMPLE_SKILLS = {
    "alex.smith@innovateai.com": ("Python", "SQL", "Machine learning"),
    "jane.doe@innovateai.com": ("Python", "Statistics"),
}


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
        await session.connection(execution_options=WRITE_TRANSACTION)  # SQLite: its write lock, at BEGIN
        score = await create_sample_airscore(
            session=session, user_id=user_id, occupation_code=occupation_code, rng=rng
        )
        payload = AIRScoreCalculated(
            score_id=score.id, user_id=score.user_id, occupation_code=score.occupation_code,
            air_score=score.air_score, ci_lower=score.ci_lower, ci_upper=score.ci_upper,
            parameter_version=score.parameter_version,
        )
        # The event gets its user's next number, from a counter row this transaction keeps locked
        # until it commits: a second score for the same user waits, so numbers follow commit order.
        event = await DomainEventRepository(session).add(
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
    """Insert each user unless the email exists; safe when two sessions race (ON CONFLICT). Returns
    the users in the order of `rows`, read back with one SELECT (not one per user: an N+1)."""
    dialect_insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    values = [{"id": new_id(), "created_at": now, "updated_at": now, **row} for row in rows]
    await session.execute(dialect_insert(User).values(values).on_conflict_do_nothing(index_elements=["email"]))
    emails = [row["email"] for row in rows]
    by_email = await users_by_email(session, emails)
    return [by_email[email] for email in emails]


async def users_by_email(session: AsyncSession, emails: list[str]) -> dict[str, User]:
    """The users with these emails (as stored), by email, read with one SELECT."""
    return {user.email: user for user in await session.scalars(select(User).where(User.email.in_(emails)))}


async def add_sample_profiles_and_skills(session: AsyncSession, users: list[User]) -> None:
    """Give each sample user its profile and skills unless it has them; safe when two sessions
    race (ON CONFLICT DO NOTHING on each table's key)."""
    dialect_insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    by_email = {user.email: user for user in users}
    profiles = [{"user_id": by_email[email].id, "created_at": now, "updated_at": now, **profile}
                for email, profile in SAMPLE_PROFILES.items() if email in by_email]
    names = sorted({name for email, skills in SAMPLE_SKILLS.items() if email in by_email for name in skills})
    if profiles:
        await session.execute(dialect_insert(Profile).values(profiles).on_conflict_do_nothing(index_elements=["user_id"]))
    if not names:
        return
    await session.execute(
        dialect_insert(Skill).values([{"id": new_id(), "name": name} for name in names])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    skill_ids = dict((await session.execute(select(Skill.name, Skill.id).where(Skill.name.in_(names)))).all())
    pairs = [{"user_id": by_email[email].id, "skill_id": skill_ids[name]}
             for email, skills in SAMPLE_SKILLS.items() if email in by_email for name in skills]
    await session.execute(dialect_insert(user_skills).values(pairs).on_conflict_do_nothing())


async def run_db_setup_and_create_user(db: Database) -> tuple[User, User]:
    """Schema to head, then Alex Smith and Jane Doe with their profiles and skills. Idempotent:
    a second call creates nothing."""
    await db.upgrade_to_head()
    async with db.sessions.begin() as session:
        alex, jane = await get_or_create_users(session, [dict(row) for row in SAMPLE_USERS])
        await add_sample_profiles_and_skills(session, [alex, jane])
    return alex, jane
