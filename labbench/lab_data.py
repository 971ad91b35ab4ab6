"""The lab's shared data: finding the sample users, and the reset back to the initial state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, update

from source.database import Database
from source.models import Base, User
from source.repositories import UserRepository
from source.services import SAMPLE_USERS, run_db_setup_and_create_user


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


async def reset_lab_data(db: Database, redis_client, *, prefix: str) -> ResetReport:
    """Back to the initial state: the rows of the lab's own tables (and nothing else in the
    database), the Redis keys under the lab's prefix (and no other key). Alex and Jane keep their
    rows, restored to their sample values, so every open session's IDs stay valid."""
    sample_emails = [row["email"] for row in SAMPLE_USERS]
    rows: dict[str, int] = {}
    async with db.sessions.begin() as session:
        for table in reversed(Base.metadata.sorted_tables):  # children before parents
            statement = delete(table)
            if table is User.__table__:
                statement = statement.where(User.email.not_in(sample_emails))
            rows[table.name] = (await session.execute(statement)).rowcount
        for row in SAMPLE_USERS:
            await session.execute(update(User).where(User.email == row["email"]).values(**row))
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=500)]
    for start in range(0, len(keys), 500):
        await redis_client.delete(*keys[start : start + 500])
    await run_db_setup_and_create_user(db)
    return ResetReport(rows_deleted=rows, keys_deleted=len(keys))
