"""What both walks check in the database afterwards: counts taken in one session, and every
mismatch between what the learners made and what is there."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from source import AIRScore, DomainEvent, User
from source.models import InboxEntry, ScoreSummary
from source.services import SAMPLE_USERS


class RowCheck:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.problems: list[str] = []

    def same(self, what: str, found: object, expected: object) -> None:
        if found != expected:
            self.problems.append(f"{what}: found {found}, expected {expected}")

    async def count(self, model, *where) -> int:
        return await self.session.scalar(select(func.count()).select_from(model).where(*where))

    async def sample_user_ids(self) -> list[str | None]:
        return [await self.session.scalar(select(User.id).where(User.email == row["email"])) for row in SAMPLE_USERS]

    async def learners(self, walked) -> None:
        """Per learner, as far as it got: one user with its email, with 3 scores per "add" click."""
        for me in walked:
            self.same(f"users with {me.email}", await self.count(User, User.email == me.email), 1 if me.user_id else 0)
            if me.user_id:
                self.same(f"scores of {me.email}", await self.count(AIRScore, AIRScore.user_id == me.user_id),
                          3 * me.scores_added)

    async def cohorts(self, tags: set[str], cohort, *, users: int, scores: int) -> None:
        """Each cohort once, with its users and their scores; `cohort` selects cohort users."""
        self.same("cohort users", await self.count(User, cohort), len(tags) * users)
        found = set((await self.session.scalars(select(func.substr(User.email, 4, 10)).where(cohort))).all())
        self.same("cohorts", found, tags)
        self.same("cohort scores", await self.count(AIRScore, AIRScore.user_id.in_(select(User.id).where(cohort))),
                  len(tags) * users * scores)

    async def events(self, *, alex: str, jane: str, alex_scores: int, jane_scores: int) -> None:
        """One event per score of Alex's and Jane's, each published once and applied once."""
        events = alex_scores + jane_scores
        self.same("Alex's events", await self.count(DomainEvent, DomainEvent.aggregate_id == alex), alex_scores)
        self.same("Jane's events", await self.count(DomainEvent, DomainEvent.aggregate_id == jane), jane_scores)
        self.same("all events", await self.count(DomainEvent), events)
        self.same("published events", await self.count(DomainEvent, DomainEvent.status == "published"), events)
        self.same("inbox rows (applied events)", await self.count(InboxEntry), events)
        applied = dict((await self.session.execute(select(ScoreSummary.user_id, ScoreSummary.scores_applied))).all())
        self.same("read model", applied, {user: k for user, k in ((alex, alex_scores), (jane, jane_scores)) if k})
