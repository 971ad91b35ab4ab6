"""3. Repositories: data access behind a small interface. They take a session and never
commit: the caller owns the transaction, so several writes can share one commit.
MinimalUserRepository is the pattern at its smallest; UserRepository is the lab's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from .errors import DuplicateEmail, NotFound, clean_email, clean_id, clean_text, clean_years
from .models import AIRScore, User


def new_user_fields(
    *, email: str, name: str, occupation_code: str | None = None, education_level: str | None = None,
    years_experience: float | None = None,
) -> dict[str, object]:
    """A new user's fields, each validated. Raises InvalidInput."""
    return {
        "email": clean_email(email),
        "name": clean_text(name, field="name", label="name", max_length=255, required=True),
        "occupation_code": clean_text(
            occupation_code, field="occupation_code", label="occupation code", max_length=20, required=False
        ),
        "education_level": clean_text(
            education_level, field="education_level", label="education level", max_length=50, required=False
        ),
        "years_experience": clean_years(years_experience),
    }


def user_changes(
    *, name: str | None = None, occupation_code: str | None = None, years_experience: float | None = None
) -> dict[str, object]:
    """The fields an update sets, each validated (None: leave it as it is). Raises InvalidInput."""
    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = clean_text(name, field="name", label="name", max_length=255, required=True)
    if occupation_code is not None:
        changes["occupation_code"] = clean_text(
            occupation_code, field="occupation_code", label="occupation code", max_length=20, required=True
        )
    if years_experience is not None:
        changes["years_experience"] = clean_years(years_experience)
    return changes


class MinimalUserRepository:
    """The pattern at its smallest. It takes the caller's session and
    never commits: the caller decides what one transaction covers. Its
    list reads each user's scores lazily, one SELECT per user: the N+1
    that UserRepository.list_with_scores_selectin answers."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, user: User) -> None:
        self.session.add(user)

    async def get(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def list_with_scores(self, user_ids: Sequence[str]) -> list[User]:
        query = select(User).where(User.id.in_(user_ids)).order_by(User.email)
        users = list((await self.session.execute(query)).scalars())
        for user in users:
            await user.awaitable_attrs.scores  # one SELECT each
        return users


class UserRepositoryProtocol(Protocol):
    """What a caller of a user repository may rely on, and nothing about how it is stored.
    UserRepository below keeps users in the database; tests/fakes.py keeps them in a dict; one
    contract suite (tests/test_repository_contract.py) runs against both."""

    async def create(
        self, *, email: str, name: str, occupation_code: str | None = None,
        education_level: str | None = None, years_experience: float | None = None,
    ) -> User: ...

    async def get_by_id(self, user_id: str) -> User | None: ...

    async def get_existing(self, user_id: str) -> User: ...

    async def get_by_email(self, email: str) -> User | None: ...

    async def update(
        self, user_id: str, *, name: str | None = None, occupation_code: str | None = None,
        years_experience: float | None = None,
    ) -> User: ...


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        email: str,
        name: str,
        occupation_code: str | None = None,
        education_level: str | None = None,
        years_experience: float | None = None,
    ) -> User:
        """Validate, then add the user and flush. Raises InvalidInput or DuplicateEmail."""
        user = User(**new_user_fields(
            email=email, name=name, occupation_code=occupation_code, education_level=education_level,
            years_experience=years_experience,
        ))
        if await self.get_by_email(user.email) is not None:
            raise DuplicateEmail(user.email)
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError:  # another session inserted the same email meanwhile
            raise DuplicateEmail(user.email) from None
        return user

    async def get_by_id(self, user_id: str) -> User | None:
        return await self.session.get(User, clean_id(user_id, label="user ID"))

    async def get_existing(self, user_id: str) -> User:
        """The user, or NotFound with a message naming the ID."""
        user = await self.get_by_id(user_id)
        if user is None:
            raise NotFound(f"No user has the ID {clean_id(user_id)}.", field="id")
        return user

    async def update(
        self,
        user_id: str,
        *,
        name: str | None = None,
        occupation_code: str | None = None,
        years_experience: float | None = None,
    ) -> User:
        """Change the given fields (None leaves a field as it is) and flush. Raises InvalidInput
        or NotFound; validates everything before changing anything."""
        changes = user_changes(name=name, occupation_code=occupation_code, years_experience=years_experience)
        user = await self.get_existing(user_id)
        for field, value in changes.items():
            setattr(user, field, value)
        await self.session.flush()
        return user

    async def get_by_email(self, email: str) -> User | None:
        result = await self.session.execute(select(User).where(User.email == email.strip().lower()))
        return result.scalar_one_or_none()

    async def get_latest_score(self, user_id: str) -> AIRScore | None:
        result = await self.session.execute(
            select(AIRScore)
            .where(AIRScore.user_id == clean_id(user_id, label="user ID"))
            .order_by(AIRScore.created_at.desc(), AIRScore.id.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def get_user_with_scores_eager(self, user_id: str) -> User | None:
        """The user and all their scores in two statements (selectinload)."""
        result = await self.session.execute(
            select(User)
            .where(User.id == clean_id(user_id, label="user ID"))
            .options(selectinload(User.scores))
        )
        return result.scalar_one_or_none()

    # Many users with their scores, the same data in fewer statements than the minimal
    # repository's lazy list (N+1 for N users): select-in sends 2 (up to 500 users), joined 1.
    # _users_query is the minimal list's SELECT with each ID validated.

    async def list_with_scores_selectin(self, user_ids: Sequence[str]) -> list[User]:
        query = self._users_query(user_ids).options(selectinload(User.scores))  # + 1 SELECT ... IN per 500
        users = list((await self.session.execute(query)).scalars())
        return users

    async def list_with_scores_joined(self, user_ids: Sequence[str]) -> list[User]:
        """One statement: users LEFT OUTER JOIN scores, one row per score."""
        result = await self.session.execute(self._users_query(user_ids).options(joinedload(User.scores)))
        return list(result.unique().scalars())  # unique(): fold the user's repeated rows into one User

    def _users_query(self, user_ids: Sequence[str]):
        ids = [clean_id(user_id, label="user ID") for user_id in user_ids]
        return select(User).where(User.id.in_(ids)).order_by(User.email)
