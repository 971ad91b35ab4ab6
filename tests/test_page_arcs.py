"""Sections 1 and 2 as arcs, driven through AppTest on both backend pairs: the problem measured, the
minimal pattern run after the learner's prediction, the failure that breaks it, the hardening run;
forms that report every bad field at once; long actions that show what they do; results that stay;
and the key figures kept for the end of Alex's story."""

from __future__ import annotations

import ui
from labbench.cascade_demo import MINIMAL_OUTCOMES
from source import User
from tests.pagekit import click, count, open_page, texts
from ui.widgets import escape_markdown

MODELS = "../pages/1_Data_Models.py"
POOLING = "../pages/2_DB_Connectivity_and_Pooling.py"


# --- 1. Data Models --------------------------------------------------------------------------


def test_section_1_works_on_a_first_visit_to_a_fresh_database_without_section_2(app_env, monkeypatch):
    monkeypatch.delenv("LAB_INSTRUCTOR_KEY", raising=False)
    at = open_page(MODELS)
    assert [box.state for box in at.status] == ["complete"]
    assert "`User.profile` (one-to-one): Alex Smith" in texts(at.markdown)
    at.text_input(key="new_user_email").set_value("first.visit@example.com")
    at.text_input(key="new_user_name").set_value("First Visit")
    at.button(key="FormSubmitter:create_user_form-Create User").click().run()
    assert not at.exception and not at.error
    assert "Created **First Visit**" in texts(at.success) and count(User) == 3


def test_predict_then_run_the_minimal_models_refuse_to_delete_a_user_with_scores(app_env):
    at = open_page(MODELS)
    assert at.button(key="minimal_delete").disabled  # no prediction yet
    at.radio(key="minimal_delete_guess").set_value(0).run()
    click(at, "minimal_delete")
    [verdict] = [e.value for e in at.error if e.value.startswith("What happened")]
    assert verdict == f"What happened: {MINIMAL_OUTCOMES[3]}. You predicted: {MINIMAL_OUTCOMES[0]}."
    sent = [c.value for c in at.code if "minimal_scores" in c.value and "UPDATE" in c.value]
    assert sent and "SET user_id" in sent[0]  # the session nulls the scores' user_id, which NOT NULL refuses
    assert "Afterwards: 1 user, 2 scores" in texts(at.caption)
    click(at, "cascade_demo")  # the hardening, on the lab's models; the prediction's result stays
    assert "session.delete(user), a user with an assessment**: deleted" in texts(at.markdown)
    assert verdict in texts(at.error)
    assert "6 statements, 0 rows left behind" in at.session_state["key_figures"]["models"]["cascade"]


def test_the_hardening_is_shown_as_a_diff_from_the_minimal_model(app_env):
    at = open_page(MODELS)
    [diff] = [c.value for c in at.code if c.value.startswith("--- source/models_minimal.py")]
    assert '-scores: Mapped[list[AIRScore]] = relationship(back_populates="user")' in diff
    assert '+    back_populates="user", cascade="all, delete-orphan"' in diff


def test_a_form_with_three_bad_fields_shows_three_messages_by_them_and_none_once_fixed(initialised):
    at = open_page(MODELS)
    for key, value in (("new_user_email", "not-an-email"), ("new_user_name", "   "),
                       ("new_user_occupation", "X" * 21)):
        at.text_input(key=key).set_value(value)
    at.button(key="FormSubmitter:create_user_form-Create User").click().run()
    assert [e.value for e in at.error] == ["'not-an-email' is not a valid email address.", "Enter a name.",
                                           "The occupation code is 21 characters long; at most 20 fit."]
    at.run()  # another run: the messages stay until the form is sent again
    assert len(at.error) == 3
    at.text_input(key="new_user_email").set_value("fixed@example.com")
    at.button(key="FormSubmitter:create_user_form-Create User").click().run()
    assert len(at.error) == 2 and count(User) == 2  # the fixed field's message is gone; nothing written
    at.text_input(key="new_user_name").set_value("Fixed")
    at.text_input(key="new_user_occupation").set_value("15-1252")
    at.button(key="FormSubmitter:create_user_form-Create User").click().run()
    assert not at.error and count(User) == 3


def test_a_value_out_of_range_gets_a_message_and_writes_nothing(initialised):
    at = open_page(MODELS)
    at.text_input(key="new_user_email").set_value("years@example.com")
    at.text_input(key="new_user_name").set_value("Years")
    at.number_input(key="new_user_years").set_value(81)
    at.button(key="FormSubmitter:create_user_form-Create User").click().run()
    assert texts(at.error) == "Years of experience must be a number from 0 to 80; you entered 81."
    assert count(User) == 2 and not at.success


# --- 2. DB Connectivity & Pooling ------------------------------------------------------------


def test_the_problem_measured_a_new_connection_against_a_query_on_an_open_one(initialised):
    at = click(open_page(POOLING), "conn_cost")
    figures = {m.label: m.value for m in at.metric}
    cost = at.session_state["conn_cost_result"]
    assert len(cost.connect_ms) == len(cost.reuse_ms) == 10 and min(cost.connect_ms + cost.reuse_ms) > 0
    assert figures["A new connection + SELECT 1 (median)"] == f"{cost.connect_p50:.2f} ms"
    assert figures["Ratio"] == f"{cost.connect_p50 / cost.reuse_p50:,.0f}×"


def test_predict_then_run_lookups_needs_every_field_right_and_then_compares_the_prediction(initialised):
    at = open_page(POOLING)
    at.number_input(key="lookups_n").set_value(0)
    at.number_input(key="lookups_wait").set_value(500)
    at.button(key="lookups_run").click().run()  # three bad fields: no prediction either
    assert [e.value for e in at.error] == [
        "Lookups must be a whole number from 1 to 100; you entered 0.",
        "The wait must be a number from 0 to 100; you entered 500.",
        "Your prediction (ms): enter a number from 0 to 1e+06."]
    assert "lookups" not in at.session_state or not at.session_state["lookups"]
    at.number_input(key="lookups_n").set_value(6)
    at.number_input(key="lookups_wait").set_value(10)
    at.number_input(key="lookups_guess").set_value(25)
    at.button(key="lookups_run").click().run()
    assert not at.exception and not at.error
    [box] = at.status
    assert box.label.startswith("Running 6 lookups twice: done in ") and box.state == "complete"
    figures = {m.label: m.value for m in at.metric}
    assert figures["Your prediction"] == "25 ms" and int(figures["Connections at once"]) == 6
    result, guess = at.session_state["lookups"]
    assert guess == 25 and result.sequential_s >= 6 * 0.010  # each of the six waited 10 ms, one after another
    assert "Your prediction was" in texts(at.markdown)
    assert at.session_state["key_figures"]["pooling"]["await"].startswith("6 lookups in ")


def test_the_pool_experiment_reports_a_value_out_of_range_by_its_field_and_runs_nothing(initialised):
    at = open_page(POOLING)
    at.number_input(key="exp_clients").set_value(500)
    at.number_input(key="exp_timeout").set_value(0.01)
    at.button(key="exp_run").click().run()
    assert [e.value for e in at.error] == [escape_markdown(message) for message in (
        "Concurrent clients must be a whole number from 1 to 100; you entered 500.",
        "pool_timeout (s) must be a number from 0.05 to 5; you entered 0.01.")]
    assert not at.status and at.session_state.get("pool_experiment") is None


def test_the_pool_experiment_shows_its_progress_explains_its_figures_and_keeps_them(initialised):
    at = open_page(POOLING)
    for key, value in {"exp_clients": 6, "exp_per_client": 2, "exp_pool_size": 1, "exp_max_overflow": 1}.items():
        at.number_input(key=key).set_value(value)
    at.button(key="exp_run").click().run()
    [box] = at.status
    assert box.label.startswith("12 requests through a pool, then through NullPool: done") and box.state == "complete"
    result = at.session_state.pool_experiment
    why = [m.value for m in at.markdown if m.value.startswith("**Why the pool")]
    assert len(why) == 1 and f"{result.pooled.queued} of 12 requests" in why[0]
    assert result.pooled.queued >= 6  # 6 clients on 2 connections: most requests found both busy
    assert at.session_state["key_figures"]["pooling"]["pool"].endswith("with a new connection per request")
    click(at, "pool_refresh")
    assert why[0] in texts(at.markdown)  # another click: the result stays


def test_the_server_ending_pooled_connections_breaks_the_minimal_engine_not_the_hardened_one(initialised):
    at = open_page(POOLING)
    if ui.database().backend != "postgresql":
        assert at.button(key="drop_minimal").disabled and at.button(key="drop_hardened").disabled
        assert "no server can end its connections" in texts(at.info)
        return
    click(at, "drop_minimal")
    click(at, "drop_hardened")
    minimal, hardened = at.session_state["drop_minimal_result"], at.session_state["drop_hardened_result"]
    assert minimal.ended == hardened.ended == 3
    assert minimal.outcomes[0] != "ok" and minimal.outcomes[1:] == ["ok", "ok"]
    assert hardened.outcomes == ["ok", "ok", "ok"]
    shown = [c.value for c in at.code if c.value.startswith("1. ")]
    assert shown[0].startswith("1. failed: ") and shown[1] == "1. ok\n2. ok\n3. ok"
    [diff] = [c.value for c in at.code if c.value.startswith("--- source/database_minimal.py")]
    assert '+options: dict = {"pool_pre_ping": pre_ping}' in diff and "+# pre-ping: test a pooled connection" in diff


def test_with_an_instructor_key_section_2_waits_for_the_instructor_then_initialises_with_the_key(app_env,
                                                                                                 monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "letmein")
    at = open_page(POOLING)
    assert "the instructor's to do" in texts(at.info) and not at.status
    assert at.button(key="lookups_run").disabled and at.button(key="atomicity").disabled
    assert texts(at.main.caption).count("7. Instructor") == 1
    assert not [b for b in at.button if b.key == "init_db"]  # migrating needs the key
    at.text_input(key="init_key").set_value("letmein").run()
    click(at, "init_db")
    assert [box.state for box in at.status] == ["complete"] and "sample users ready" in texts(at.success)
    assert count(User) == 2 and not at.button(key="lookups_run").disabled
