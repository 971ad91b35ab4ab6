"""Section 3's query workbench and repository code through AppTest on both backend pairs: the count
of data statements the page shows equals what the app's engine handed its driver (seen by a
listener of this test's own), the quiz's Apply question has the count the page reports for the
composition it names, and a bad value is named next to its widget with nothing sent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import event

import ui
from source import run_db_setup_and_create_user
from tests.pagekit import click, open_page, texts
from ui import checks

PAGE = "../pages/3_Repository_Pattern_and_N+1.py"


class Sent:
    """Every statement the app's engine hands its driver while the block runs (BEGIN excluded:
    it is transaction control), independent of the recorder the page uses."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self._engine = ui.database().engine.sync_engine

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.strip().upper() not in ("BEGIN", "BEGIN IMMEDIATE"):
            self.sql.append(statement)

    def __enter__(self) -> Sent:
        event.listen(self._engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self._engine, "before_cursor_execute", self._on_execute)


@pytest.fixture
def ready(app_env):
    ui.run(run_db_setup_and_create_user(ui.database()))  # Alex and Jane, each with a profile and skills
    ui.backend_status.clear()
    at = open_page(PAGE)
    at.run()  # a rerun that sends nothing of its own (checked below), so a click's statements are its own
    return at


def shown_count(at) -> int:
    return int(re.search(r"\*\*Data statements the workbench sent: (\d+)\*\*", texts(at.markdown))[1])


def test_a_rerun_of_the_page_sends_nothing(ready):
    with Sent() as sent:
        ready.run()
    assert not ready.exception and sent.sql == []


def test_the_default_composition_reports_exactly_the_statements_sent(ready):
    with Sent() as sent:
        at = click(ready, "wb_run")
    assert not at.error
    rows = at.dataframe[-1].value
    assert sorted(rows["name"]) == ["Alex Smith", "Jane Doe"]
    # 1 query (scores joined in) + 1 lazy profile per user + 1 select-in for the skills
    assert shown_count(at) == len(sent.sql) == 1 + 2 + 1
    assert any("LEFT OUTER JOIN air_scores" in c.value for c in at.code)
    assert "the loaders predict for 2 rows" in texts(at.caption).lower() and "= 4." in texts(at.caption)
    commands = [e for e in at.expander if e.label.startswith("Show all")][-1]
    assert commands.code[-1].value == "ROLLBACK"  # the session, never committed, rolls back as it closes
    assert [c.value for c in commands.code if c.value in sent.sql] == sent.sql  # shown in the order sent


def test_all_joined_is_one_statement_and_a_filter_is_bound_not_written(ready):
    at = ready
    for relationship in ("profile", "skills", "scores", "assessments"):
        at.selectbox(key=f"wb_loader_{relationship}").set_value("joined")
    at.selectbox(key="wb_filter_field").set_value("name").run()
    at.selectbox(key="wb_operator_text").set_value("starts with")
    at.text_input(key="wb_value").set_value("jane' OR 1=1 --")
    with Sent() as sent:
        at = click(at, "wb_run")
    assert shown_count(at) == len(sent.sql) == 1
    assert "jane' OR 1=1" not in sent.sql[0]  # the value is a parameter, never SQL text
    assert "No user matches this filter." in texts(at.info)

    at.text_input(key="wb_value").set_value("JA")
    with Sent() as sent:
        at = click(at, "wb_run")
    assert shown_count(at) == len(sent.sql) == 1
    assert list(at.dataframe[-1].value["name"]) == ["Jane Doe"]


@pytest.mark.parametrize(("field", "operator", "value", "message"), [
    ("years_experience", "wb_operator_number", "abc", "'abc' is not a number"),
    ("years_experience", "wb_operator_number", "inf", "is not a finite number"),
    ("name", "wb_operator_text", "   ", "Enter a value to filter by."),
    ("email", "wb_operator_text", "x" * 256, "at most 255 fit"),
])
def test_a_bad_value_is_named_next_to_its_widget_and_sends_nothing(ready, field, operator, value, message):
    at = click(ready, "wb_run")  # a good result first: a refused run must not leave it shown
    at.selectbox(key="wb_filter_field").set_value(field).run()
    at.text_input(key="wb_value").set_value(value)
    with Sent() as sent:
        at = click(at, "wb_run")
    assert sent.sql == []
    assert message in texts(at.error)
    column = next(c for c in at.columns if any(t.key == "wb_value" for t in c.text_input))
    assert message in texts(column.error)  # in the value box's column, not at the top of the page
    assert len(at.error) == 1
    assert "Data statements the workbench sent" not in texts(at.markdown)


def test_the_apply_questions_answer_is_what_the_workbench_reports_for_its_composition(ready):
    question = next(q for q in checks.REPOSITORY if "query workbench" in q.prompt)
    assert question.objective == "Apply"
    assert "limit set to 5" in question.prompt and "returns 5 users" in question.prompt
    at = ready
    at.number_input(key="n1_users").set_value(5)
    at = click(at, "n1_setup")  # the cohort the question asks for: 2 sample users + 5
    at.number_input(key="wb_limit").set_value(5)
    with Sent() as sent:
        at = click(at, "wb_run")
    assert len(at.dataframe[-1].value) == 5
    assert shown_count(at) == len(sent.sql) == int(question.options[question.answer]) == 7


def test_the_repository_its_protocol_and_the_fake_are_shown(ready):
    shown = texts(ready.code)
    assert "class UserRepositoryProtocol(Protocol):" in shown
    assert "class UserRepository:" in shown or "class UserRepository(" in shown
    assert "class InMemoryUserRepository:" in shown
    held = re.search(r"(\d+) contract tests take a repository, and each runs against three: the fake", texts(ready.markdown))
    suite = (Path(__file__).parent / "test_repository_contract.py").read_text()
    with_repo = re.findall(r"^async def test_\w+\(repo", suite, flags=re.M)
    assert held and int(held[1]) == len(with_repo) >= 5
