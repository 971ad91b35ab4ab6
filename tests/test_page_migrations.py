"""Section 6 and the knowledge checks, driven through AppTest on both backend pairs."""

from __future__ import annotations

import time

from sqlalchemy import inspect
from streamlit.testing.v1 import AppTest

import ui
from labbench import migrations
from labbench.migrations import revision_history
from tests.pagekit import open_page, texts
from ui import checks

PAGE = "../pages/6_Schema_Migrations.py"


def table_names() -> list[str]:
    async def read() -> list[str]:
        async with ui.database().engine.connect() as conn:
            return await conn.run_sync(lambda sync: inspect(sync).get_table_names())

    return ui.run(read())


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


def test_steps_down_and_up_with_what_each_does_and_an_account_of_what_changed(initialised):
    at = open_page(PAGE)
    head = revision_history()[-1].revision
    at.button(key="downgrade_step").click().run()
    assert not at.exception
    assert [(box.label.split(":")[0], box.state) for box in at.status] == [(f"One downgrade step from {head}", "complete")]
    assert f"Migrated from {head}" in texts(at.success)
    assert "dropped" in texts(at.markdown)
    assert f"The database is at **{revision_history()[-2].revision}**" in texts(at.markdown)  # drawn after the step
    at.button(key="upgrade_step").click().run()
    assert [box.label.split(":")[0] for box in at.status] == [f"One upgrade step from {revision_history()[-2].revision}"]
    assert f"to {head}." in texts(at.success) and "added" in texts(at.markdown)
    assert ui.run(ui.database().current_revision()) == head
    at.run()  # the account stays until the next step
    assert f"to {head}." in texts(at.success)


def test_drift_check_reports_no_drift_at_head_and_says_what_it_compares(initialised):
    at = open_page(PAGE)
    said = texts(at.markdown)
    assert "not primary keys, CHECK constraints, server defaults or triggers" in said and " keys match" not in said
    at.button(key="drift_check").click().run()
    assert "No drift" in texts(at.success)
    assert at.session_state["done_migrations"] is True
    assert at.session_state["key_figures"]["migrations"]["drift"].startswith("no drift")


def test_predict_then_run_the_minimal_revision_fails_on_rows_and_the_hardened_one_backfills(initialised):
    at = open_page(PAGE)
    assert at.button(key="required_minimal").disabled
    at.radio(key="required_column_guess").set_value(0).run()
    at.button(key="required_minimal").click().run()
    outcomes = migrations.REQUIRED_COLUMN_OUTCOMES
    assert f"What happened: {outcomes[2]}. You predicted: {outcomes[0]}." in texts(at.error)
    assert "ADD COLUMN" in texts(at.code) and "NOT NULL" in texts(at.code)
    at.button(key="required_hardened").click().run()
    assert "It works: 3 rows, each with plan = 'free', 'free', 'free'" in texts(at.success)
    assert f"What happened: {outcomes[2]}" in texts(at.error)  # the first result stays
    [diff] = [c.value for c in at.code if c.value.startswith("--- add_plan_minimal")]
    assert "+    # 2. backfill: a value for every row that has none" in diff
    assert not [name for name in table_names() if name.startswith("mig_")]  # the runs' tables went with them
    assert "a required column added to a table with 3 rows" in texts(at.markdown)  # the payoff quotes it


def test_the_payoff_quotes_the_learners_figures_and_names_the_sections_skipped(initialised):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["key_figures"] = {"pooling": {"pool": "900 requests/s through the pool"},
                                       "cache": {"hits": "**19** hits"}}
    at.run()
    payoff = texts(at.markdown)
    assert "- **2. DB Connectivity & Pooling**: 900 requests/s through the pool." in payoff
    assert r"\*\*19\*\* hits" in payoff  # quoted inert
    skipped = texts(at.info)
    assert "1. Data Models" in skipped and "3. Repository Pattern & N+1" in skipped
    assert "2. DB Connectivity" not in skipped and "4. Caching" not in skipped


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


def test_a_downgrade_is_refused_while_the_outbox_publisher_runs_and_says_why(initialised):
    """From 0006 a downgrade drops each event's number and stream entry ID, which a running relay
    and consumer use: the step refuses while this process's publisher runs, and runs once it stops."""
    head = revision_history()[-1].revision
    assert ui.publisher().start()
    try:
        at = open_page(PAGE)
        at.button(key="downgrade_step").click().run()
        assert not at.exception and not at.status
        assert "Stop the outbox publisher first" in texts(at.warning)
        assert ui.run(ui.database().current_revision()) == head
    finally:
        assert ui.publisher().stop()
    at.button(key="downgrade_step").click().run()
    assert f"Migrated from {head}" in texts(at.success)
    at.button(key="upgrade_step").click().run()
    assert ui.run(ui.database().current_revision()) == head
