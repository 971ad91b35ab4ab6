"""Section 6 and the knowledge checks, driven through AppTest on both backend pairs."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

import ui
from labbench.migrations import revision_history
from tests.pagekit import open_page, texts
from ui import checks

PAGE = "../pages/6_Schema_Migrations.py"


def test_shows_history_and_the_database_revision(initialised):
    at = open_page(PAGE)
    head = revision_history()[-1].revision
    assert f"The database is at **{head}**" in texts(at.markdown)
    assert list(at.dataframe[0].value["revision"]) == [r.revision for r in revision_history()]


def test_previews_the_sql_of_a_downgrade_without_running_it(initialised):
    at = open_page(PAGE)
    at.selectbox(key="sql_target").set_value("base").run()
    assert not at.exception
    assert "DROP TABLE users" in texts(at.code)
    assert ui.run(ui.database().current_revision()) == revision_history()[-1].revision


def test_steps_down_and_up_with_an_account_of_what_changed(initialised):
    at = open_page(PAGE)
    head = revision_history()[-1].revision
    at.button(key="downgrade_step").click().run()
    assert not at.exception
    assert f"Migrated from {head}" in texts(at.success)
    assert "dropped" in texts(at.markdown)
    at.button(key="upgrade_step").click().run()
    assert f"to {head}." in texts(at.success) and "added" in texts(at.markdown)
    assert ui.run(ui.database().current_revision()) == head


def test_drift_check_reports_no_drift_at_head(initialised):
    at = open_page(PAGE)
    at.button(key="drift_check").click().run()
    assert "No drift" in texts(at.success)
    assert at.session_state["done_migrations"] is True


def test_schema_steps_need_the_instructor_key_when_one_is_set(initialised, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "letmein")
    at = open_page(PAGE)
    assert not [b for b in at.button if b.key == "downgrade_step"]
    at.text_input(key="migrate_key").set_value("wrong").run()
    assert "not the instructor key" in texts(at.error)
    assert not [b for b in at.button if b.key == "downgrade_step"]
    time.sleep(1.05)  # a first wrong key: no key is checked for 1 s
    at.text_input(key="migrate_key").set_value("letmein").run()
    assert [b for b in at.button if b.key == "downgrade_step"]


def answer(at: AppTest, section: str, choices: list[int]) -> AppTest:
    for number, choice in enumerate(choices):
        at.radio(key=f"check_{section}_{number}").set_value(choice)
    return at.button(key=f"FormSubmitter:check_form_{section}-Check answers").click().run()


def test_right_answers_pass_the_check_and_explain_why(initialised):
    at = open_page(PAGE)
    at = answer(at, "migrations", [q.answer for q in checks.MIGRATIONS])
    assert not at.exception
    assert texts(at.success).count("right.") == len(checks.MIGRATIONS)
    assert at.session_state["passed_migrations"] is True


def test_a_wrong_answer_fails_the_check_with_the_reason_and_keeps_the_answers(initialised):
    at = open_page(PAGE)
    wrong = [(q.answer + 1) % len(q.options) for q in checks.MIGRATIONS]
    at = answer(at, "migrations", wrong)
    assert "not quite" in texts(at.error) and checks.MIGRATIONS[0].why in texts(at.error)
    assert at.session_state["passed_migrations"] is False
    at.run()  # a rerun (or coming back to the page) keeps the answers and the feedback
    assert at.radio(key="check_migrations_0").value == wrong[0]
    assert "not quite" in texts(at.error)
