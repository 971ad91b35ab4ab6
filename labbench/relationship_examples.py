"""1. One live example of each relationship kind, from the sample data: the attribute, the SQL its
default (lazy) loader sends when awaited, and what that loaded. Reads only."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from source.database import Database
from source.models import AIRScore, User
from source.services import SAMPLE_USERS

from .recorder import record


@dataclass(frozen=True)
class Example:
    attribute: str
    kind: str
    sql: str  # the one statement `await obj.awaitable_attrs.<attribute>` sent
    loaded: str  # what it loaded, in words


async def _load(db: Database, obj, attribute: str):
    with record(db) as log:
        value = await getattr(obj.awaitable_attrs, attribute)
    if log.count != 1:  # each lazy load here is one SELECT; anything else would misdescribe it
        raise RuntimeError(f"loading {attribute} sent {log.count} statements, expected 1")
    return value, log.sql[0].strip()


async def relationship_examples(db: Database) -> list[Example]:
    """Alex's scores, profile and skills, and the user of the newest score of a sample user (Alex
    or Jane: never a learner's own user), each loaded on its own; a relationship with nothing to
    show says so (the many-to-one needs a score to start from)."""
    alex_email = SAMPLE_USERS[0]["email"]
    sample_emails = [row["email"] for row in SAMPLE_USERS]
    examples = []
    async with db.sessions() as session:
        alex = await session.scalar(select(User).where(User.email == alex_email))
        if alex is None:
            return []
        scores, sql = await _load(db, alex, "scores")
        examples.append(Example("User.scores", "one-to-many", sql,
                                f"{alex.name}: {len(scores)} score{'s' if len(scores) != 1 else ''}"))
        profile, sql = await _load(db, alex, "profile")
        examples.append(Example("User.profile", "one-to-one", sql,
                                f"{alex.name}: {profile.headline!r}" if profile else f"{alex.name}: no profile"))
        skills, sql = await _load(db, alex, "skills")
        examples.append(Example("User.skills", "many-to-many", sql,
                                f"{alex.name}: {', '.join(s.name for s in skills) or 'no skills'}"))
        score = await session.scalar(
            select(AIRScore).join(AIRScore.user).where(User.email.in_(sample_emails))
            .order_by(AIRScore.created_at.desc(), AIRScore.id).limit(1)
        )
    if score is None:
        examples.append(Example("AIRScore.user", "many-to-one", "",
                                "no score of Alex's or Jane's stored yet: add some in section 3, then come back"))
        return examples
    async with db.sessions() as session:  # a session of its own: the user is not in its identity map yet
        score = await session.get(AIRScore, score.id)
        user, sql = await _load(db, score, "user")
    examples.append(Example("AIRScore.user", "many-to-one", sql, f"score {score.air_score:g}: {user.name}"))
    return examples
