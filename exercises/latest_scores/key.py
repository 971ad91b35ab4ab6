"""Section 3: a repository method for a scoreboard, without the N+1."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from source.models import AIRScore, User


class ScoreboardRepository:
    """Reads for a scoreboard. Like the lab's repositories it takes a session and never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def users_with_latest_score(self, user_ids: Sequence[str]) -> list[tuple[User, AIRScore | None]]:
        """Each user whose ID is in `user_ids`, with their latest score (the one with the newest
        created_at), or None when they have no score; in the order of `user_ids`. An ID that no
        user has is left out; `user_ids` holds no ID twice.
        """
        # One SELECT for the users, then selectinload's SELECT ... WHERE user_id IN (...) for all of
        # their scores at once: 2 statements for any number of users up to 500 (it sends the IDs
        # 500 at a time), instead of one more per user.
        result = await self.session.execute(
            select(User).where(User.id.in_(user_ids)).options(selectinload(User.scores))
        )
        users = {user.id: user for user in result.scalars()}
        rows = []
        for user_id in user_ids:
            user = users.get(user_id)
            if user is not None:
                latest = max(user.scores, key=lambda score: score.created_at, default=None)
                rows.append((user, latest))
        return rows
