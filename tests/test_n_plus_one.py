"""The N+1, counted from the statements really sent, on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select

from labbench.loading import (
    add_sample_scores,
    cohort_user_ids,
    compare_strategies,
    create_cohort,
    expected_statements,
    load_one_user,
    load_with_scores,
    new_cohort_tag,
    plain_lazy_load,
    raiseload_access,
)
from labbench.recorder import record
from source import AIRScore, InvalidInput, NotFound, User, UserRepository, run_db_setup_and_create_user
from source.repositories import MinimalUserRepository

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


async def count(db, model) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


@pytest.fixture
async def cohort(db) -> list[str]:
    """Seven users with three scores each."""
    return await create_cohort(db, tag=new_cohort_tag(), users=7, scores_per_user=3, rng=random.Random(1))


@pytest.mark.parametrize(
    ("repository", "method", "expected"),
    [(MinimalUserRepository, "list_with_scores", 7 + 1), (UserRepository, "list_with_scores_selectin", 2),
     (UserRepository, "list_with_scores_joined", 1)],
)
async def test_each_repository_strategy_sends_the_expected_number_of_statements(db, cohort, repository, method, expected):
    async with db.sessions() as session:
        repo = repository(session)
        with record(db) as log:
            users = await getattr(repo, method)(cohort)
            scores = [len(user.scores) for user in users]
    assert log.count == expected
    assert scores == [3] * 7


async def test_the_lazy_strategy_sends_one_select_per_user_after_the_first(db, cohort):
    run = await load_with_scores(db, strategy="lazy", user_ids=cohort)
    first, *per_user = run.log.sql
    assert "FROM users" in first
    assert len(per_user) == 7
    assert all("FROM air_scores" in sql and "IN" not in sql for sql in per_user)


async def test_selectin_fetches_every_users_scores_with_one_in_clause(db, cohort):
    run = await load_with_scores(db, strategy="selectin", user_ids=cohort)
    assert "FROM users" in run.log.sql[0]
    assert "FROM air_scores" in run.log.sql[1] and " IN " in run.log.sql[1]


async def test_joined_loads_users_and_scores_in_one_outer_join(db, cohort):
    run = await load_with_scores(db, strategy="joined", user_ids=cohort)
    assert run.log.count == 1
    assert "LEFT OUTER JOIN air_scores" in run.log.sql[0]


async def test_all_three_strategies_return_the_same_users_and_scores(db, cohort):
    lazy, selectin, joined = await compare_strategies(db, user_ids=cohort, runs=2)
    assert [run.log.count for run in (lazy, selectin, joined)] == [8, 2, 1]
    assert lazy.users == selectin.users == joined.users
    assert len(lazy.users) == 7 and lazy.score_count == 21
    assert all(run.seconds > 0 and run.runs == 2 for run in (lazy, selectin, joined))


async def test_the_counts_follow_n_because_they_are_measured(db):
    tag = new_cohort_tag()
    for users, lazy_count in ((1, 2), (12, 13)):
        ids = await create_cohort(db, tag=tag, users=users, scores_per_user=2)
        runs = await compare_strategies(db, user_ids=ids, runs=1)
        assert [run.log.count for run in runs] == [lazy_count, 2, 1]


async def test_selectin_sends_one_in_statement_per_chunk_of_500_users(db):
    ids = await create_cohort(db, tag=new_cohort_tag(), users=501, scores_per_user=1)
    run = await load_with_scores(db, strategy="selectin", user_ids=ids)
    assert run.log.count == 3 == expected_statements("selectin", 501)  # the users, then 500 + 1 IDs
    assert [sql.count("?") + sql.count("$") for sql in run.log.sql[1:]] == [500, 1]  # bound IDs per IN
    assert run.score_count == 501


async def test_the_cohort_is_added_through_the_minimal_repository_and_committed_once_by_its_caller(db):
    tag = new_cohort_tag()
    with record(db) as log:
        ids = await create_cohort(db, tag=tag, users=4, scores_per_user=2)
    assert [entry.sql for entry in log.of_kind("transaction") if entry.sql == "COMMIT"] == ["COMMIT"]
    assert await cohort_user_ids(db, tag=tag) == ids and await count(db, AIRScore) == 8


async def test_setting_up_the_cohort_again_replaces_it_instead_of_piling_up(db):
    tag, other = new_cohort_tag(), new_cohort_tag()
    await create_cohort(db, tag=other, users=2, scores_per_user=1)
    await create_cohort(db, tag=tag, users=5, scores_per_user=4)
    ids = await create_cohort(db, tag=tag, users=3, scores_per_user=2)
    assert await cohort_user_ids(db, tag=tag) == ids
    assert await count(db, User) == 3 + 2
    assert await count(db, AIRScore) == 3 * 2 + 2 * 1
    assert len(await cohort_user_ids(db, tag=other)) == 2


@pytest.mark.parametrize(
    ("users", "scores"), [(0, 3), (1001, 3), (5, 0), (5, 11)]
)
async def test_a_cohort_size_out_of_range_is_refused_before_writing(db, users, scores):
    with pytest.raises(InvalidInput, match="between 1 and"):
        await create_cohort(db, tag=new_cohort_tag(), users=users, scores_per_user=scores)
    assert await count(db, User) == 0


async def test_add_three_sample_scores_writes_three_scores_for_that_user(db):
    alex, jane = await run_db_setup_and_create_user(db)
    scores = await add_sample_scores(db, user_id=alex.id)
    assert [s.occupation_code for s in scores] == ["DEV_ENG_1", "DEV_ENG_2", "DEV_ENG_3"]
    assert all(s.user_id == alex.id for s in scores)
    assert await count(db, AIRScore) == 3


@pytest.mark.parametrize(
    ("user_id", "error", "message"),
    [("", InvalidInput, "Enter a user ID"), ("not-a-uuid", InvalidInput, "not a valid user ID"),
     (UNKNOWN_ID, NotFound, "No user has the ID")],
)
async def test_a_bad_or_unknown_user_id_writes_no_scores(db, user_id, error, message):
    await run_db_setup_and_create_user(db)
    with pytest.raises(error, match=message):
        await add_sample_scores(db, user_id=user_id)
    assert await count(db, AIRScore) == 0


async def test_one_user_takes_two_statements_lazily_and_two_with_selectinload(db):
    alex, _ = await run_db_setup_and_create_user(db)
    await add_sample_scores(db, user_id=alex.id)
    lazy = await load_one_user(db, user_id=alex.id, strategy="lazy")
    eager = await load_one_user(db, user_id=alex.id, strategy="eager")
    assert (lazy.log.count, eager.log.count) == (2, 2)
    assert lazy.users == eager.users and lazy.score_count == 3


async def test_loading_an_unknown_user_says_so(db):
    await run_db_setup_and_create_user(db)
    for strategy in ("lazy", "eager"):
        with pytest.raises(NotFound, match=UNKNOWN_ID):
            await load_one_user(db, user_id=UNKNOWN_ID, strategy=strategy)


# The driver's coroutine is created but never awaited: Python warns about exactly that.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
async def test_a_plain_lazy_load_in_async_code_raises_missing_greenlet(db):
    alex, _ = await run_db_setup_and_create_user(db)
    caught = await plain_lazy_load(db, user_id=alex.id)
    if db.backend == "sqlite":  # aiosqlite fails inside execute: SQLAlchemy wraps it with the SQL
        assert (caught.exception, caught.cause) == ("sqlalchemy.exc.StatementError", "sqlalchemy.exc.MissingGreenlet")
        assert "FROM air_scores" in caught.sql
    else:  # asyncpg fails while preparing the statement: the bare error
        assert (caught.exception, caught.cause) == ("sqlalchemy.exc.MissingGreenlet", None)
    assert "greenlet_spawn has not been called" in caught.message


async def test_raiseload_turns_the_hidden_lazy_load_into_an_invalid_request_error(db):
    alex, _ = await run_db_setup_and_create_user(db)
    caught = await raiseload_access(db, user_id=alex.id)
    assert caught.exception == "sqlalchemy.exc.InvalidRequestError"
    assert caught.message == "'User.scores' is not available due to lazy='raise'"
    assert caught.cause is None and caught.statements_recorded == 0
