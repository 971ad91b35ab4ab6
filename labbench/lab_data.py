"""The lab's shared data: finding the sample users, and the reset back to the initial state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, update

from labbench.progress import Report, silent
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


async def initialise(db: Database, *, report: Report = silent) -> tuple[User, User]:
    """The answer key's set-up (schema to head, then Alex and Jane), saying which step it is on."""
    report("Migrating the schema to the newest revision (Alembic)", 0.0)
    await db.upgrade_to_head()
    report("Creating Alex and Jane with their profiles and skills", 0.8)
    return await run_db_setup_and_create_user(db)  # the schema is at head now: only the users are left


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
