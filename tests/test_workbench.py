"""The query workbench (labbench/workbench.py) on SQLite and PostgreSQL: the statements it
reports are the statements the engine sent, the loaders send what they declare, values are bound
as parameters, and a bad choice or value is refused before anything is sent."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from labbench.workbench import Composition, build, predicted_statements, run
from source import (
    InvalidInput,
    User,
    UserRepository,
    calculate_and_store_airscore,
    run_db_setup_and_create_user,
)


class Sent:
    """Every statement the engine hands its driver, counted by a listener of this test's own
    (independent of the recorder the workbench uses). BEGIN is transaction control, not counted."""

    def __init__(self, db) -> None:
        self.sql: list[str] = []
        self._engine = db.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.strip().upper() not in ("BEGIN", "BEGIN IMMEDIATE"):
            self.sql.append(statement)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._on_execute)


@pytest.fixture
async def users(db):
    """Alex and Jane (profiles, skills) plus three learners; Alex has two scores."""
    alex, _ = await run_db_setup_and_create_user(db)
    async with db.sessions.begin() as session:
        repo = UserRepository(session)
        await repo.create(email="ada@example.com", name="Ada Lovelace", years_experience=12)
        await repo.create(email="grace@example.com", name="Grace Hopper", years_experience=30)
        await repo.create(email="percent%@example.com", name="Per Cent", years_experience=1)
    for _ in range(2):
        await calculate_and_store_airscore(sessions=db.sessions, user_id=alex.id, occupation_code="X")
    return db


COMPOSITIONS = {
    "no loaders": Composition(limit=100),
    "lazy profile": Composition(limit=100, loaders={"profile": "lazy"}),
    "lazy scores and skills": Composition(limit=3, loaders={"scores": "lazy", "skills": "lazy"}),
    "select-in everything": Composition(
        limit=100, loaders={r: "select-in" for r in ("profile", "skills", "scores", "assessments")}),
    "joined everything": Composition(
        limit=100, loaders={r: "joined" for r in ("profile", "skills", "scores", "assessments")}),
    "mixed, filtered": Composition(
        "email", "contains", "INNOVATEAI", "years_experience", "descending", 5,
        {"profile": "joined", "skills": "select-in", "scores": "lazy", "assessments": "not loaded"}),
    "filter matching nothing, select-in": Composition(
        "name", "equals", "Nobody", loaders={"skills": "select-in", "profile": "lazy"}),
}


@pytest.mark.parametrize("name", COMPOSITIONS)
async def test_the_reported_statements_are_the_ones_sent_and_the_ones_predicted(users, name):
    composition = COMPOSITIONS[name]
    sent = Sent(users)
    try:
        result = await run(users, composition)
    finally:
        sent.close()
    assert result.statements == sent.sql
    assert len(sent.sql) == predicted_statements(composition, len(result.rows))
    assert result.seconds > 0


async def test_expected_counts_for_five_users(users):
    counts = {}
    for name, composition in COMPOSITIONS.items():
        result = await run(users, composition)
        counts[name] = (len(result.rows), len(result.statements))
    assert counts == {
        "no loaders": (5, 1),
        "lazy profile": (5, 6),  # 1 + 5 (N+1)
        "lazy scores and skills": (3, 7),  # 1 + 3 x 2
        "select-in everything": (5, 5),  # 1 + one per relationship
        "joined everything": (5, 1),
        "mixed, filtered": (2, 4),  # the join, the skills' IN, Alex's and Jane's scores
        "filter matching nothing, select-in": (0, 1),  # no parent row: no IN query, no lazy load
    }


async def test_rows_follow_the_filter_order_limit_and_loaders(users):
    result = await run(users, Composition(
        "years_experience", ">=", "5", "years_experience", "descending", 3,
        {"profile": "select-in", "scores": "joined", "skills": "lazy"}))
    assert [(r["name"], r["years_experience"]) for r in result.rows] == [
        ("Grace Hopper", 30.0), ("Ada Lovelace", 12.0), ("Alex Smith", 8.0)]
    alex = result.rows[2]
    assert alex["profile"] == "Software developer moving into ML engineering"
    assert (alex["scores"], alex["skills"]) == (2, "Machine learning, Python, SQL")
    assert "assessments" not in alex  # not loaded, not shown
    assert result.rows[0]["profile"] is None and result.rows[0]["skills"] == ""


async def test_text_filters_are_case_insensitive_and_wildcards_match_themselves(users):
    assert (await run(users, Composition("email", "contains", "HOPPER"))).rows == []  # only in a name
    grace = await run(users, Composition("name", "contains", "HOPPER"))
    assert [r["email"] for r in grace.rows] == ["grace@example.com"]
    percent = await run(users, Composition("email", "contains", "%"))
    assert [r["email"] for r in percent.rows] == ["percent%@example.com"]
    starts = await run(users, Composition("name", "starts with", "a", order_field="name"))
    assert [r["name"] for r in starts.rows] == ["Ada Lovelace", "Alex Smith"]


async def test_the_value_is_bound_as_a_parameter_never_written_into_the_sql(users):
    hostile = "x'); DROP TABLE users; --"
    result = await run(users, Composition("name", "equals", hostile))
    assert hostile not in result.sql and hostile in result.parameters.values()
    assert result.rows == []
    placeholder = "$1" if users.backend == "postgresql" else "?"
    assert placeholder in result.sql
    async with users.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 5


@pytest.mark.parametrize("composition, field", [
    (Composition("password", "equals", "x"), "filter_field"),
    (Composition("users.id; --", "equals", "x"), "filter_field"),
    (Composition("name", "LIKE", "x"), "operator"),
    (Composition("name", "<", "x"), "operator"),  # a number operator on a text field
    (Composition("years_experience", "contains", "1"), "operator"),
    (Composition("name", "equals", "   "), "value"),
    (Composition("name", "equals", "x" * 256), "value"),
    (Composition("name", "equals", "Ada\x00"), "value"),  # PostgreSQL would refuse it: refused before
    (Composition("name", "contains", "\u202eadA"), "value"),  # a right-to-left override
    (Composition("name", "equals", "\u200b"), "value"),  # nothing visible
    (Composition("years_experience", ">", "ten"), "value"),
    (Composition("years_experience", ">", "nan"), "value"),
    (Composition("years_experience", ">", None), "value"),
    (Composition(order_field="id; DROP TABLE users"), "order_field"),
    (Composition(direction="sideways"), "direction"),
    (Composition(limit=0), "limit"),
    (Composition(limit=101), "limit"),
    (Composition(limit=True), "limit"),
    (Composition(limit=2.5), "limit"),
    (Composition(loaders={"profile": "eager"}), "loader_profile"),
    (Composition(loaders={"password": "joined"}), "loaders"),
])
async def test_a_bad_choice_or_value_is_refused_naming_its_field_and_nothing_is_sent(users, composition, field):
    sent = Sent(users)
    try:
        with pytest.raises(InvalidInput) as caught:
            await run(users, composition)
    finally:
        sent.close()
    assert caught.value.field == field and caught.value.message
    assert sent.sql == []
    with pytest.raises(InvalidInput):
        build(composition)


async def test_the_quiz_prediction_question_has_the_measured_answer(users):
    from ui import checks

    question = next(q for q in checks.REPOSITORY if "returns 5 users" in q.prompt)
    assert question.objective == "Apply"
    composition = Composition(limit=100, loaders={
        "profile": "lazy", "skills": "select-in", "scores": "joined", "assessments": "not loaded"})
    result = await run(users, composition)
    assert len(result.rows) == 5
    assert int(question.options[question.answer]) == len(result.statements) == 7
    assert all(s.lstrip().upper().startswith("SELECT") for s in result.statements)
