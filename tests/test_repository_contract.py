"""One contract for every user repository: the SQLAlchemy one on SQLite and on PostgreSQL, and
the in-memory fake in tests/fakes.py. A test here that one of them fails is a difference a
caller would notice, so the fake can stand in for the database only while all pass."""

from __future__ import annotations

import uuid

import pytest

from source import DuplicateEmail, InvalidInput, NotFound, UserRepository
from source.repositories import UserRepositoryProtocol
from tests.fakes import InMemoryUserRepository


@pytest.fixture(params=["in-memory fake", "sqlite", "postgresql"])
def backend(request) -> str:
    """conftest's backend pair, plus the fake (which needs no database)."""
    return request.param


@pytest.fixture
def database(request, backend):
    """conftest's fresh database at head for a real backend; none for the fake."""
    return None if backend == "in-memory fake" else request.getfixturevalue("db")


@pytest.fixture
async def repo(database) -> UserRepositoryProtocol:
    if database is None:
        yield InMemoryUserRepository()
        return
    async with database.sessions() as session:
        yield UserRepository(session)


def test_both_implementations_have_every_method_of_the_protocol():
    wanted = {name for name in vars(UserRepositoryProtocol) if not name.startswith("_")}
    assert wanted == {"create", "get_by_id", "get_existing", "get_by_email", "update"}
    for implementation in (UserRepository, InMemoryUserRepository):
        assert wanted <= set(dir(implementation)), implementation


async def test_create_cleans_the_input_and_gives_an_id(repo):
    user = await repo.create(email="  Ada@Example.COM ", name=" Ada ", years_experience=3)
    assert str(uuid.UUID(user.id)) == user.id
    assert (user.email, user.name, user.years_experience, user.occupation_code) == ("ada@example.com", "Ada", 3.0, None)
    assert (await repo.get_by_id(user.id)).email == "ada@example.com"
    assert (await repo.get_by_email("ADA@example.com")).id == user.id


async def test_a_taken_email_raises_duplicate_and_adds_nothing(repo):
    first = await repo.create(email="ada@example.com", name="Ada")
    with pytest.raises(DuplicateEmail) as caught:
        await repo.create(email="ADA@example.com", name="Another Ada")
    assert caught.value.field == "email" and "ada@example.com" in caught.value.message
    assert (await repo.get_by_email("ada@example.com")).id == first.id
    assert (await repo.get_by_email("ada@example.com")).name == "Ada"


@pytest.mark.parametrize("fields, field", [
    ({"email": "not an email", "name": "Ada"}, "email"),
    ({"email": "ada@example.com", "name": "  "}, "name"),
    ({"email": "ada@example.com", "name": "Ada", "years_experience": 81}, "years_experience"),
    ({"email": "ada@example.com", "name": "Ada", "occupation_code": "x" * 21}, "occupation_code"),
])
async def test_bad_input_raises_invalid_naming_the_field_and_stores_nothing(repo, fields, field):
    with pytest.raises(InvalidInput) as caught:
        await repo.create(**fields)
    assert caught.value.field == field
    assert await repo.get_by_email("ada@example.com") is None


async def test_unknown_and_malformed_ids(repo):
    unknown = str(uuid.uuid4())
    assert await repo.get_by_id(unknown) is None
    with pytest.raises(NotFound) as caught:
        await repo.get_existing(unknown)
    assert unknown in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        await repo.get_by_id("42")
    assert caught.value.field == "id"


async def test_update_changes_only_the_given_fields(repo):
    user = await repo.create(email="ada@example.com", name="Ada", occupation_code="15-1252", years_experience=3)
    updated = await repo.update(user.id, name="Ada Lovelace")
    assert (updated.name, updated.occupation_code, updated.years_experience) == ("Ada Lovelace", "15-1252", 3.0)
    again = await repo.get_by_id(user.id)
    assert again.name == "Ada Lovelace"


async def test_a_bad_update_changes_nothing(repo):
    user = await repo.create(email="ada@example.com", name="Ada", years_experience=3)
    with pytest.raises(InvalidInput) as caught:
        await repo.update(user.id, name="Ada Lovelace", years_experience=-1)
    assert caught.value.field == "years_experience"
    again = await repo.get_by_id(user.id)
    assert (again.name, again.years_experience) == ("Ada", 3.0)
    with pytest.raises(NotFound):
        await repo.update(str(uuid.uuid4()), name="Nobody")
