"""7. Instructor, driven through AppTest on both backend pairs: without LAB_INSTRUCTOR_KEY (or
without the right key) it says how to enable it and shows nothing of other learners; with it,
the room's learners, their progress, each question's share of right answers, the backends and
the publisher, and the room-wide actions, which work."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import ui
from labbench.migrations import revision_history
from runtime import learners
from tests.pagekit import texts
from ui import checks

PAGE = "../pages/7_Instructor.py"
MODELS = "../pages/1_Data_Models.py"
KEY = "a-long-instructor-key"


def a_learner_named(name: str, choices: list[int]) -> str:
    """Another learner, in their own session: a name, the models quiz answered. Returns the token."""
    at = AppTest.from_file(MODELS, default_timeout=60).run()
    at.text_input(key="display_name_input").set_value(name)
    at.button(key="FormSubmitter:display_name_form-Save name").click().run()
    for number, choice in enumerate(choices):
        at.radio(key=f"check_models_{number}").set_value(choice)
    at.button(key="FormSubmitter:check_form_models-Check answers").click().run()
    assert not at.exception
    return at.query_params["learner"]


def everything_shown(at: AppTest) -> str:
    return " ".join([texts(at.markdown), texts(at.caption), texts(at.info), texts(at.error), texts(at.success),
                     " ".join(str(frame.value.to_dict()) for frame in at.dataframe)])


def room_buttons(at: AppTest) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith("room_") and b.key != "room_refresh"]


def test_without_the_key_set_it_says_how_to_enable_it_and_shows_no_learner(initialised, monkeypatch):
    monkeypatch.delenv("LAB_INSTRUCTOR_KEY", raising=False)
    a_learner_named("Zed Otherlearner", [q.answer for q in checks.MODELS])
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "LAB_INSTRUCTOR_KEY" in texts(at.info)
    assert "Otherlearner" not in everything_shown(at) and not at.dataframe and not room_buttons(at)


def test_with_the_key_set_a_missing_or_wrong_key_shows_nothing(initialised, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", KEY)
    a_learner_named("Zed Otherlearner", [q.answer for q in checks.MODELS])
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and "needs the instructor key" in texts(at.caption)
    assert "Otherlearner" not in everything_shown(at) and not at.dataframe and not room_buttons(at)
    at.text_input(key="instructor_page_key").set_value("wrong").run()
    assert "not the instructor key" in texts(at.error)
    assert "Otherlearner" not in everything_shown(at) and not at.dataframe and not room_buttons(at)


def open_with_key(monkeypatch) -> AppTest:
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", KEY)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="instructor_page_key").set_value(KEY).run()
    assert not at.exception
    return at


def test_with_the_key_it_shows_the_rooms_progress_answers_and_backends(initialised, monkeypatch):
    right = [q.answer for q in checks.MODELS]
    a_learner_named("Ada", right)
    a_learner_named("Bo", [(right[0] + 1) % 4] + right[1:])
    at = open_with_key(monkeypatch)
    people = at.dataframe[0].value
    ada = people[people["learner"] == "Ada"].iloc[0]
    bo = people[people["learner"] == "Bo"].iloc[0]
    assert ada["1."] == "◐ check" and bo["1."] == "" and ada["2."] == ""
    shares = at.dataframe[1].value
    first = shares[shares["question"] == 1].iloc[0]
    assert (first["answered"], first["right"], first["share right"]) == (2, 1, "50%")
    assert first["objective"] == checks.MODELS[0].objective  # the tags the quiz no longer shows learners
    assert shares[shares["question"] == 2].iloc[0]["share right"] == "100%"
    assert "learner(s) active in the last 30 minutes" in texts(at.markdown)
    assert [m.value for m in at.metric[:3]] == ["up", ui.backend_status().schema_revision, "up"]
    assert "Publisher stopped" in texts(at.markdown)
    assert set(room_buttons(at)) >= {"room_init", "room_start", "room_broker_down", "room_crash", "room_retry",
                                     "room_discard", "room_reset", "room_upgrade_step", "room_downgrade_step"}


def test_the_publisher_actions_work_from_here(initialised, monkeypatch):
    at = open_with_key(monkeypatch)
    at.button(key="room_start").click().run()
    try:
        assert not at.exception and ui.publisher().snapshot().running
        assert "Publisher running" in texts(at.markdown)
    finally:
        ui.publisher().stop()


def test_stepping_below_0004_keeps_the_page_working_and_reset_keeps_progress(initialised, monkeypatch):
    token = a_learner_named("Ada", [q.answer for q in checks.MODELS])
    at = open_with_key(monkeypatch)
    revisions = [r.revision for r in revision_history()]
    for _ in revisions[revisions.index("0004"):]:  # down to 0003, one step at a time
        at.button(key="room_downgrade_step").click().run()
    assert not at.exception and "Migrated from 0004 to 0003" in texts(at.success)
    at.run()
    assert not at.exception and "below 0004: learners' progress is not stored" in texts(at.info)
    for _ in revisions[revisions.index("0004"):]:
        at.button(key="room_upgrade_step").click().run()
        at.run()
    assert not at.exception and ui.backend_status().schema_revision == revisions[-1]
    assert ui.run(learners.load(ui.database(), token)) is None  # the downgrade dropped the saved progress
    again = a_learner_named("Cy", [0, 0, 0])
    at.checkbox(key="room_reset_confirm").check().run()
    at.button(key="room_reset").click().run()
    assert not at.exception and "Lab data reset" in texts(at.success)
    assert ui.run(learners.load(ui.database(), again)) is not None  # the reset keeps learners' rows


@pytest.mark.parametrize("page", ["../pages/5_Eventing_Outbox_Pattern.py"])
def test_the_sections_point_to_the_instructor_page(initialised, page):
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception and "7. Instructor" in texts(at.caption)


def test_section_2_points_to_the_instructor_page_only_where_an_instructor_serves_a_room(initialised, monkeypatch):
    page = "../pages/2_DB_Connectivity_and_Pooling.py"
    monkeypatch.delenv("LAB_INSTRUCTOR_KEY", raising=False)
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception and "7. Instructor" not in texts(at.main.caption)
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", KEY)
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception and texts(at.main.caption).count("7. Instructor") == 1
    at = AppTest.from_file("../pages/6_Schema_Migrations.py", default_timeout=60).run()
    assert not at.exception and "7. Instructor" not in texts(at.main.caption)  # said once, on section 2
