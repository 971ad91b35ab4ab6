"""An in-memory UserRepository: the same contract as source.repositories.UserRepository (the
same validation and errors), kept in a dict. A service under test can take it instead of a
database; tests/test_repository_contract.py holds both to one suite."""

from __future__ import annotations

from source.errors import DuplicateEmail, NotFound, clean_id
from source.models import User, new_id, utcnow
from source.repositories import new_user_fields, user_changes


class InMemoryUserRepository:
    def __init__(self) -> None:
        self._users: dict[str, User] = {}

    async def create(
        self, *, email: str, name: str, occupation_code: str | None = None,
        education_level: str | None = None, years_experience: float | None = None,
    ) -> User:
        now = utcnow()
        user = User(
            id=new_id(),
            **new_user_fields(
                email=email, name=name, occupation_code=occupation_code, education_level=education_level,
                years_experience=years_experience,
            ),
            created_at=now,
            updated_at=now,
        )
        if await self.get_by_email(user.email) is not None:
            raise DuplicateEmail(user.email)
        self._users[user.id] = user
        return user

    async def get_by_id(self, user_id: str) -> User | None:
        return self._users.get(clean_id(user_id, label="user ID"))

    async def get_existing(self, user_id: str) -> User:
        user = await self.get_by_id(user_id)
        if user is None:
            raise NotFound(f"No user has the ID {clean_id(user_id)}.", field="id")
        return user

    async def get_by_email(self, email: str) -> User | None:
        wanted = email.strip().lower()
        return next((user for user in self._users.values() if user.email == wanted), None)

    async def update(
        self, user_id: str, *, name: str | None = None, occupation_code: str | None = None,
        years_experience: float | None = None,
    ) -> User:
        changes = user_changes(name=name, occupation_code=occupation_code, years_experience=years_experience)
        user = await self.get_existing(user_id)
        for field, value in changes.items():
            setattr(user, field, value)
        if changes:
            user.updated_at = utcnow()
        return user
