"""The Introduction, 1. Data Models and 2. DB Connectivity & Pooling, driven through AppTest on
both backend pairs: every button's result, every bad input's message with nothing written,
buttons clicked twice, and two sessions initialising at once."""

from __future__ import annotations

import inspect
import os
import sqlite3
import threading
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from streamlit.testing.v1 import AppTest

import ui
from labbench.pool_figures import pool_figures
from labbench.pooling import pool_status
from labbench.recorder import record
from source import AIRScore, Database, User, run_db_setup_and_create_user
from source.services import create_user
from tests.pagekit import click, count, create_user_button, texts
from ui import widgets

MODELS = "pages/1_Data_Models.py"
POOLING = "pages/2_DB_Connectivity_and_Pooling.py"


def open_page(path: str | None = None) -> AppTest:
    """The app opened on a page, with app.py as the entry point (as `streamlit run app.py`
    does), so that links between pages resolve."""
    at = AppTest.from_file("../app.py", default_timeout=60)
    if path:
        at.switch_page(path)
    at.run()
    assert not at.exception
    return at


# --- Introduction ----------------------------------------------------------------------


def test_introduction_states_the_objectives_and_links_every_section(app_env):
    at = open_page()
    body = texts(at.markdown)
    for objective in ("Remember", "Understand", "Apply", "Analyze", "Create"):
        assert f"**{objective}**" in body
    assert "Alex" in body and "InnovateAI" in body


# --- 1. Data Models ----------------------------------------------------------------------


def test_models_page_shows_the_live_source_and_a_diagram_of_the_tables(app_env):
    at = open_page(MODELS)
    code = texts(at.code)
    assert inspect.getsource(User).strip() in code and inspect.getsource(AIRScore).strip() in code
    assert "JOIN users ON users.id = assessments.user_id" in code
    diagram = at.get("graphviz_chart")[0].proto.spec
    assert "users:id -> air_scores:user_id" in diagram and "User.scores (1:N)" in diagram


def test_models_page_on_a_fresh_database_sets_up_the_schema_and_sample_users_itself(app_env):
    at = open_page(MODELS)
    [box] = at.status
    assert box.label.startswith("Setting up the database on first use") and box.state == "complete"
    assert at.session_state.user_alex_id and count(User) == 2
    assert "Initialise" not in texts(at.info) and "section 2" not in texts(at.markdown)
    assert any(form.proto.form.form_id == "create_user_form" for form in at.get("form"))


def test_with_an_instructor_key_set_section_1_leaves_the_set_up_to_the_instructor(app_env, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "letmein")
    at = open_page(MODELS)
    assert "the instructor's to do" in texts(at.info) and not at.status
    assert not any(form.proto.form.form_id == "create_user_form" for form in at.get("form"))
    assert at.button(key="cascade_demo").disabled and at.button(key="minimal_delete").disabled
    assert inspect.getsource(User).strip() in texts(at.code)  # the explanations still work


def test_creating_a_user_stores_it_keeps_its_id_and_shows_the_name_as_plain_text(initialised):
    at = open_page(MODELS)
    name = "**Ada** <b>Lovelace</b> [x](javascript:alert(1))"
    at.text_input(key="new_user_email").set_value(f"ada.{uuid.uuid4().hex[:6]}@example.com")
    at.text_input(key="new_user_name").set_value(name)
    at.text_input(key="new_user_occupation").set_value("15-1252")
    at.selectbox(key="new_user_education").set_value("PhD")
    at.number_input(key="new_user_years").set_value(7.5)
    create_user_button(at).click().run()
    assert not at.exception and not at.error
    message = texts(at.success)
    assert widgets.escape_markdown(name) in message and "<b>" not in message
    created = at.session_state.created_user_id
    assert created and created in message
    assert count(User) == 3
    assert "SQL statements sent: 2" in texts(at.markdown)  # the email check, then the INSERT

    at.text_input(key="new_user_email").set_value(f"ada.{uuid.uuid4().hex[:6]}@example.com")
    create_user_button(at).click().run()  # a second click works on the same loop
    assert not at.exception and at.session_state.created_user_id != created
    assert count(User) == 4


@pytest.mark.parametrize("app_env", ["embedded"], indirect=True)
def test_a_write_kept_waiting_by_sqlites_one_writer_says_the_database_is_busy(app_env, monkeypatch):
    monkeypatch.setattr("source.database.SQLITE_BUSY_TIMEOUT_MS", 300)  # 20 s when served
    ui.reset_resources()
    ui.run(run_db_setup_and_create_user(ui.database()))
    at = open_page(MODELS)
    at.text_input(key="new_user_email").set_value("ada@example.com")
    at.text_input(key="new_user_name").set_value("Ada")
    writer = sqlite3.connect(make_url(os.environ["DATABASE_URL"]).database, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another connection holds the one write lock throughout
    try:
        create_user_button(at).click().run()
    finally:
        writer.rollback()
        writer.close()
    assert not at.exception and not at.success
    assert "is busy: SQLite lets one connection write at a time" in texts(at.error)
    assert "over 0.3 s" in texts(at.error) and "not reachable" not in texts(at.error)
    assert count(User) == 2


BAD_INPUTS = [
    ({"new_user_email": ""}, "Enter an email address."),
    ({"new_user_email": "not-an-email"}, "is not a valid email address"),
    ({"new_user_email": "![x](http://e/i.png)"}, "`'![x](http://e/i.png)'` is not a valid"),  # inert: a code span
    ({"new_user_name": "   "}, "Enter a name."),
    ({"new_user_name": "x" * 256}, "at most 255 fit"),
    ({"new_user_occupation": "X" * 21}, "at most 20 fit"),
    ({"new_user_email": "Alex.Smith@InnovateAI.com"}, "already exists"),
]


def test_every_bad_input_gets_its_message_and_writes_nothing(initialised):
    at = open_page(MODELS)
    for changes, message in BAD_INPUTS:
        typed = {"new_user_email": "ok@example.com", "new_user_name": "Ok", "new_user_occupation": "", **changes}
        for key, value in typed.items():
            at.text_input(key=key).set_value(value)
        create_user_button(at).click().run()
        assert not at.exception
        assert message in texts(at.error), changes
        assert not at.success and at.session_state.created_user_id is None
        assert count(User) == 2


async def test_create_user_validates_before_sending_anything(db):
    with record(db) as log, pytest.raises(Exception, match="Enter an email"):
        await create_user(sessions=db.sessions, email=" ", name="Nobody")
    assert log.count == 0


# --- 2. DB Connectivity & Pooling --------------------------------------------------------


def test_initialise_button_names_the_real_backend_and_can_be_clicked_twice(app_env):
    at = open_page(POOLING)  # a first visit on a fresh database sets it up on its own
    assert at.status[0].label.startswith("Setting up the database on first use")
    alex, jane = at.session_state.user_alex_id, at.session_state.user_jane_id
    assert alex and jane and f"**Alex Smith's user ID:** `{alex}`" in texts(at.markdown)
    assert "revision" in texts(at.sidebar.caption) and "not initialised" not in texts(at.sidebar.caption)
    button = at.button(key="init_db")
    expected = "SQLite file" if app_env == "embedded" else "PostgreSQL"
    assert expected in button.label and "memory" not in button.label.lower()

    for _ in range(2):
        at.button(key="init_db").click().run()
        assert not at.exception
        assert "sample users ready" in texts(at.success)
        assert [box.label.split(":")[0] for box in at.status] == ["Migrating the schema to head, then the sample users"]
        assert at.status[0].state == "complete"
        assert (at.session_state.user_alex_id, at.session_state.user_jane_id) == (alex, jane)
        assert count(User) == 2


@pytest.mark.parametrize("engines", ["one app", "two app processes"])
def test_two_sessions_initialising_at_once_get_no_error_and_no_duplicate_users(app_env, engines):
    # Two learners' clicks at the same moment: the init action from two script threads onto the
    # shared loop (AppTest cannot run two sessions at once), through one engine or through two
    # as two app processes would.
    app_db = ui.database()
    other_db = app_db if engines == "one app" else Database(app_db.url)
    start, results, errors = threading.Barrier(2), [], []

    def click(db: Database) -> None:
        start.wait()
        try:
            results.append(ui.run(run_db_setup_and_create_user(db), timeout=60))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=click, args=(db,)) for db in (app_db, other_db)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    if other_db is not app_db:
        ui.run(other_db.dispose())
    assert not errors
    assert [alex.id for alex, _ in results] == [results[0][0].id] * 2
    assert count(User) == 2
    at = open_page(POOLING)
    at.button(key="init_db").click().run()
    assert not at.exception and not at.error
    assert at.session_state.user_alex_id == results[0][0].id


def test_a_second_session_picks_up_the_sample_users_another_created(initialised):
    at = open_page(POOLING)
    assert at.session_state.user_alex_id and at.session_state.user_alex_id in texts(at.markdown)


def test_pool_figures_are_read_from_the_apps_pool(initialised):
    at = open_page(POOLING)
    figures = {m.label: m.value for m in at.metric}
    now = pool_figures(ui.database())
    assert figures["Open"] == str(now.open) and figures["Idle in the pool"] == str(now.idle)
    assert figures["Overflow in use"] == f"0 of {now.max_overflow}"

    async def check_out():
        conn = await ui.database().engine.connect()
        await conn.execute(text("SELECT 1"))
        return conn

    held = ui.run(check_out())  # a connection some other learner's request holds
    try:
        at = click(at, "pool_refresh")
        figures = {m.label: m.value for m in at.metric}
        assert figures["Checked out"] == "1"
        assert figures["Open"] == str(pool_figures(ui.database()).open)
        assert f"{now.limit} − 1 = {now.limit - 1}" in texts(at.caption)
    finally:
        ui.run(held.close())


def test_experiment_shows_measured_throughput_for_both_engines_and_runs_twice(app_env):
    at = open_page(POOLING)
    at.number_input(key="exp_clients").set_value(8)
    at.number_input(key="exp_per_client").set_value(2)
    at.number_input(key="exp_pool_size").set_value(2)
    at.number_input(key="exp_max_overflow").set_value(1)
    at.number_input(key="exp_hold").set_value(1)
    for _ in range(2):
        at.button(key="exp_run").click().run()
        assert not at.exception and not at.error
        [box] = [box for box in at.status if "through NullPool" in box.label]
        assert box.label == f"16 requests through a pool, then through NullPool: done in {box.label.rsplit(' ', 2)[-2]} s"
        formulas = [e.value for e in at.latex if "Theta =" in e.value and "requests/s" in e.value]
        assert len(formulas) == 2 and all(r"\frac{16}" in f for f in formulas)  # 8 clients x 2
        figures = [(m.label, m.value) for m in at.metric]
        opened = [int(v) for label, v in figures if label == "Connections opened"]
        peaks = [int(v) for label, v in figures if label == "Peak checked out"]
        assert opened[1] == 16  # NullPool: one connection per request
        assert opened[0] <= 3 * 2 and peaks[0] <= 3  # the pool: never more than 2 + 1 at once
        assert len(at.get("vega_lite_chart")) == 2
        assert pool_status(ui.database()).checked_out == 0


def test_atomicity_demo_leaves_nothing_behind_runs_twice_and_its_result_stays(initialised):
    at = open_page(POOLING)
    for _ in range(2):
        at.button(key="atomicity").click().run()
        assert not at.exception
        assert "refused the third write" in texts(at.error)
        assert "Rows left behind by the failed transaction: **0**" in texts(at.success)
        assert "Statements the failed transaction sent: 5" in texts(at.markdown)
        assert count(User) == 2 and count(AIRScore) == 0
    click(at, "pool_refresh")  # another click on the page: the result is still there
    assert "Rows left behind by the failed transaction: **0**" in texts(at.success)


def test_section_2_shows_the_engine_code_and_the_pool_settings_the_engine_has(initialised):
    at = open_page(POOLING)
    assert not at.exception
    settings = {row["setting"]: row["value"] for row in at.dataframe[0].value.to_dict("records")}
    pool = ui.database().engine.pool
    assert settings["pool_size"] == str(pool.size()) == "5"
    assert settings["max_overflow"] == str(pool._max_overflow) == "10"
    assert settings["pool_timeout"] == "30 s" and settings["pool_recycle"] == "1800 s"
    assert settings["pool_pre_ping"] == "True"
    assert any("create_async_engine(self.url" in code.value for code in at.code)
