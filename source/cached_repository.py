"""4. The cached repository: cache-aside over UserRepository, and the plain values it caches (JSON,
never ORM objects). One method, `after_write`, decides what a write made stale."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .cache import Invalidation, RedisCache, Write
from .cache_stats import CacheStats, Lookup
from .database import WRITE_TRANSACTION
from .errors import clean_id
from .models import AIRScore, User
from .repositories import UserRepository
from .services import calculate_and_store_airscore


@dataclass(frozen=True)
class UserData:
    """A user as the cache holds it: plain fields, no ORM state that could lazy-load or flush."""

    id: str
    email: str
    name: str
    occupation_code: str | None
    education_level: str | None
    years_experience: float | None
    updated_at: str  # ISO 8601

    @classmethod
    def from_model(cls, user: User) -> UserData:
        return cls(
            user.id, user.email, user.name, user.occupation_code, user.education_level,
            user.years_experience, user.updated_at.isoformat(),
        )


@dataclass(frozen=True)
class ScoreData:
    id: str
    user_id: str
    occupation_code: str
    air_score: float
    ci_lower: float
    ci_upper: float
    parameter_version: str
    created_at: str  # ISO 8601

    @classmethod
    def from_model(cls, score: AIRScore) -> ScoreData:
        return cls(
            score.id, score.user_id, score.occupation_code, score.air_score, score.ci_lower,
            score.ci_upper, score.parameter_version, score.created_at.isoformat(),
        )



class CachedUserRepository:
    """Cache-aside over UserRepository. It takes the session factory rather than a session: a
    hit needs no database connection at all, and a miss opens a session for its one read.
    `stats`, if given, counts this caller's reads (the cache's own stats count everyone's)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        cache: RedisCache,
        stats: CacheStats | None = None,
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.stats = stats

    def user_key(self, user_id: str) -> str:
        return self.cache.key("user", user_id)

    def latest_score_key(self, user_id: str) -> str:
        return self.cache.key("user", user_id, "latest_score")

    async def get_by_id_cached(self, user_id: str) -> Lookup[UserData]:
        user_id = clean_id(user_id, label="user ID")  # bad input never reaches Redis or the DB

        async def load() -> UserData | None:
            async with self.sessions() as session:
                user = await UserRepository(session).get_by_id(user_id)
                return UserData.from_model(user) if user else None

        return await self.cache.read_through(self.user_key(user_id), load=load, kind=UserData, stats=self.stats)

    async def get_latest_score_cached(self, user_id: str) -> Lookup[ScoreData]:
        user_id = clean_id(user_id, label="user ID")

        async def load() -> ScoreData | None:
            async with self.sessions() as session:
                score = await UserRepository(session).get_latest_score(user_id)
                return ScoreData.from_model(score) if score else None

        return await self.cache.read_through(
            self.latest_score_key(user_id), load=load, kind=ScoreData, stats=self.stats
        )

    async def invalidate_user_cache(self, user_id: str) -> Invalidation:
        user_id = clean_id(user_id, label="user ID")
        return await self.cache.invalidate(self.user_key(user_id), self.latest_score_key(user_id))

    # What a write makes stale is decided here and nowhere else: every write in the lab (this
    # repository's, section 3's sample scores, section 5's score with its event) calls after_write.
    # A user's row is cached under user_key; the latest score under latest_score_key, which a new
    # score replaces. Editing a user does not change their scores, and a score does not change
    # the user's row.

    def stale_after(self, write: Write, user_id: str) -> tuple[str, ...]:
        return (self.user_key(user_id),) if write == "user" else (self.latest_score_key(user_id),)

    async def after_write(self, write: Write, user_id: str) -> Invalidation:
        """Call after the write committed: invalidating before the commit would let a reader
        cache the old row again. Across processes the tombstone (see TOMBSTONE) keeps a reader
        that loaded the old row before the commit from storing it."""
        return await self.cache.invalidate(*self.stale_after(write, clean_id(user_id, label="user ID")))

    async def update_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        occupation_code: str | None = None,
        years_experience: float | None = None,
    ) -> tuple[UserData, Invalidation]:
        user_id = clean_id(user_id, label="user ID")
        async with self.cache.writing(*self.stale_after("user", user_id)):
            async with self.sessions.begin() as session:
                await session.connection(execution_options=WRITE_TRANSACTION)  # reads, then writes
                user = await UserRepository(session).update(
                    user_id, name=name, occupation_code=occupation_code, years_experience=years_experience
                )
            return UserData.from_model(user), await self.after_write("user", user.id)

    async def add_score(self, user_id: str, *, occupation_code: str) -> tuple[ScoreData, Invalidation]:
        """A new AI-R score (with its outbox event, as in section 5); the cached latest score is
        invalidated."""
        user_id = clean_id(user_id, label="user ID")
        async with self.cache.writing(*self.stale_after("score", user_id)):
            score, _event = await calculate_and_store_airscore(
                sessions=self.sessions, user_id=user_id, occupation_code=occupation_code
            )
            return ScoreData.from_model(score), await self.after_write("score", score.user_id)
