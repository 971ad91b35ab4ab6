"""A learner is a row, not a tab, driven through AppTest on both backend pairs: the token the
page puts in the URL brings back progress marks, quiz answers with their feedback and the IDs
the learner made in a new session; a forged, unknown or malformed token gets a fresh learner; two
learners stay apart; a rerun that changes nothing writes nothing; below revision 0004 the pages
keep working on session state and say so."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event
from streamlit.testing.v1 import AppTest

import ui
from labbench import migrations
from runtime import learners
from tests.pagekit import texts
from ui import checks

MODELS = "../pages/1_Data_Models.py"
RIGHT = [q.answer for q in checks.MODELS]


def open_as(token: str | None = None, page: str = MODELS) -> AppTest:
    """A new browser session on the page, with `?learner=token` in its URL (none when None)."""
    at = AppTest.from_file(page, default_timeout=60)
    if token is not None:
        at.query_params["learner"] = token
    at.run()
    assert not at.exception
    return at


def answer(at: AppTest, choices: list[int]) -> AppTest:
    for number, choice in enumerate(choices):
        at.radio(key=f"check_models_{number}").set_value(choice)
    at.button(key="FormSubmitter:check_form_models-Check answers").click().run()
    assert not at.exception
    return at


def create_user(at: AppTest) -> str:
    at.text_input(key="new_user_email").set_value(f"ada.{uuid.uuid4().hex[:6]}@example.com")
    at.text_input(key="new_user_name").set_value("Ada")
    at.button(key="FormSubmitter:create_user_form-Create User").click().run()
    assert not at.exception and not at.error
    return at.session_state.created_user_id


def sidebar_text(at: AppTest) -> str:
    return texts(at.sidebar.caption)


def test_marks_answers_feedback_and_made_ids_come_back_under_the_urls_token(initialised):
    at = open_as()
    token = at.query_params["learner"]
    assert learners.token_hash(token) is not None
    created = create_user(at)
    answer(at, RIGHT[:-1] + [(RIGHT[-1] + 1) % 4])  # the last one wrong
    assert at.query_params["learner"] == token

    again = open_as(token)  # a reload, a bookmark: a new session with the same URL
    assert again.query_params["learner"] == token
    assert again.session_state.created_user_id == created
    assert f"Last created user ID:** `{created}`" in texts(again.markdown)
    assert again.session_state["done_models"] is True and not again.session_state["passed_models"]
    assert [again.radio(key=f"check_models_{n}").value for n in range(len(RIGHT))] == [
        RIGHT[0], RIGHT[1], (RIGHT[2] + 1) % 4]
    assert "Question 1: right" in texts(again.success) and "Question 3: not quite" in texts(again.error)
    assert "◐ 1. Data Models" in sidebar_text(again)

    answer(again, RIGHT)
    third = open_as(token)
    assert third.session_state["passed_models"] is True and "✓ 1. Data Models" in sidebar_text(third)


@pytest.mark.parametrize("forged", ["unknown", "malformed", "sql"])
def test_a_forged_unknown_or_malformed_token_gets_a_fresh_learner_never_anothers_data(initialised, forged):
    owner = open_as()
    create_user(owner)
    answer(owner, RIGHT)
    real = owner.query_params["learner"]
    token = {"unknown": learners.new_token(), "malformed": real[:-1],
             "sql": "' OR '1'='1' --" + "x" * 17}[forged]
    stranger = open_as(token)
    new = stranger.query_params["learner"]
    assert new not in (token, real) and learners.token_hash(new) is not None
    assert stranger.session_state.created_user_id is None
    assert "done_models" not in stranger.session_state and not stranger.session_state["answers_models"]
    assert "Question 1" not in texts(stranger.success) + texts(stranger.error)
    assert open_as(real).session_state["passed_models"] is True  # the owner's rows are untouched


def test_two_learners_never_see_each_others_progress(initialised):
    first, second = open_as(), open_as()
    assert first.query_params["learner"] != second.query_params["learner"]
    answer(first, RIGHT)
    wrong = [(a + 1) % 4 for a in RIGHT]
    answer(second, wrong)
    back_first, back_second = open_as(first.query_params["learner"]), open_as(second.query_params["learner"])
    assert [back_first.radio(key=f"check_models_{n}").value for n in range(3)] == RIGHT
    assert [back_second.radio(key=f"check_models_{n}").value for n in range(3)] == wrong
    assert back_first.session_state["passed_models"] and not back_second.session_state["passed_models"]


def test_a_rerun_that_changes_nothing_writes_nothing(initialised):
    at = open_as()
    answer(at, RIGHT)
    sent: list[str] = []
    engine = ui.database().engine.sync_engine

    def note(conn, cursor, statement, *args) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        at.run()
        assert not at.exception
    finally:
        event.remove(engine, "before_cursor_execute", note)
    writes = [s for s in sent if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes == []
    answer(at, [(RIGHT[0] + 1) % 4] + RIGHT[1:])  # a change is written at once
    assert open_as(at.query_params["learner"]).radio(key="check_models_0").value == (RIGHT[0] + 1) % 4


def test_a_display_name_is_validated_next_to_its_field_and_start_over_clears_only_mine(initialised):
    at = open_as()
    other = open_as()
    answer(other, RIGHT)
    at.text_input(key="display_name_input").set_value("Ada\u202eevil")
    at.button(key="FormSubmitter:display_name_form-Save name").click().run()
    assert "invisible or control character (U+202E" in texts(at.sidebar.error)
    assert ui.run(learners.load(ui.database(), at.query_params["learner"]))[1].display_name is None
    at.text_input(key="display_name_input").set_value("  Ada  ")
    at.button(key="FormSubmitter:display_name_form-Save name").click().run()
    assert not at.sidebar.error, texts(at.sidebar.error)
    token = at.query_params["learner"]
    assert ui.run(learners.load(ui.database(), token))[1].display_name == "Ada"

    answer(at, RIGHT)
    at.button(key="start_over").click().run()
    assert not at.exception
    assert at.query_params["learner"] != token
    assert ui.run(learners.load(ui.database(), token)) is None
    assert "done_models" not in at.session_state and not at.session_state.get("passed_models")
    assert "Question 1" not in texts(at.success)
    assert open_as(other.query_params["learner"]).session_state["passed_models"] is True


def test_below_revision_0004_progress_stays_in_the_tab_with_a_note_and_is_saved_after_the_upgrade(initialised):
    db = ui.database()
    revisions = [r.revision for r in migrations.revision_history()]
    steps = len(revisions) - revisions.index("0004")  # from the head down to 0003
    for _ in range(steps):
        ui.run(migrations.step(db, direction="down"))
    ui.backend_status.clear()
    at = open_as()
    assert "below 0004" in sidebar_text(at) and "kept in this browser tab only" in sidebar_text(at)
    token = at.query_params["learner"]
    answer(at, RIGHT)  # works on session state
    assert at.session_state["passed_models"] is True and "Question 1: right" in texts(at.success)
    at.text_input(key="display_name_input").set_value("Ada")
    at.button(key="FormSubmitter:display_name_form-Save name").click().run()
    assert not at.exception and "Kept in this tab." in texts(at.sidebar.success)

    for _ in range(steps):
        ui.run(migrations.step(db, direction="up"))
    ui.backend_status.clear()
    at.run()
    assert not at.exception and "below 0004" not in sidebar_text(at)
    resumed = open_as(at.query_params["learner"])
    assert at.query_params["learner"] == token and resumed.session_state["passed_models"] is True
    assert resumed.session_state.display_name == "Ada"


def test_every_link_between_pages_keeps_the_learners_token(initialised):
    at = AppTest.from_file("../app.py", default_timeout=60).run()  # the entry point: its links resolve
    token = at.query_params["learner"]
    links = at.get("page_link")
    assert len(links) == 2 * len(ui.SECTIONS) - 1  # the sidebar's, and the Introduction's list of sections
    assert {link.proto.query_string for link in links} == {f"learner={token}"}
