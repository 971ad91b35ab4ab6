"""Two tasks on one AsyncSession fail with SQLAlchemy's real error; a session per task does not
(labbench/shared_session.py), on SQLite and PostgreSQL. The demo leaves no user behind."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import func, select

from labbench.shared_session import one_session_per_task, two_tasks_one_session
from source import User, run_db_setup_and_create_user

MESSAGES = {
    False: "This session is provisioning a new connection; concurrent operations are not permitted",
    True: "Session is already flushing",
}


async def users(db) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(User))


@pytest.mark.parametrize("warm", [False, True], ids=["cold session", "warm session"])
async def test_two_tasks_sharing_one_session_get_the_real_error(db, warm):
    await run_db_setup_and_create_user(db)
    before = await users(db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warm case also warns: Session.add() inside a flush
        result = await two_tasks_one_session(db, warm=warm)
    first, second = result.outcomes
    assert first.succeeded and first.row_written and first.error_class is None
    assert not second.succeeded
    assert second.error_class == "sqlalchemy.exc.InvalidRequestError"
    assert second.error_message.startswith(MESSAGES[warm]), second.error_message
    assert "sqlalche.me" not in second.error_message
    if not warm:
        assert second.error_code == "isce"
    # Cold: the second task failed before adding its user. Warm: it had added it during the
    # first flush, so the first task's commit wrote it although the second task got an error.
    assert second.row_written is warm
    assert result.users_written == (2 if warm else 1)
    assert await users(db) == before  # the demo removed what it made


async def test_a_session_per_task_commits_both(db):
    await run_db_setup_and_create_user(db)
    before = await users(db)
    result = await one_session_per_task(db)
    assert [(o.succeeded, o.row_written) for o in result.outcomes] == [(True, True), (True, True)]
    assert all(o.error_class is None for o in result.outcomes)
    assert result.users_written == 2
    assert await users(db) == before
