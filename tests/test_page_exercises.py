"""The exercise panel, driven through AppTest on both backend pairs (the learner's rows on SQLite or
PostgreSQL; the code always graded for real, in the sandbox on the exercise cluster): the answer
key passes with its evidence, an N+1 solution is told the statements it sent, bad input gets a
message beside the editor and runs nothing, the code and results come back in a new session with
the same token after the app's resources were reset, a changed starter is shown and the code kept,
the answer key opens when it should, and a shared server shows the exercise read-only until the
instructor turns exercises on (and keeps it so without bubblewrap). AppTest cannot type into the
editor's iframe: the tests set the code where the editor's responses put it (ui/editor.py)."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
from streamlit.testing.v1 import AppTest

import exercises
import ui
from exercises import sandbox
from runtime import exercise_store as store
from runtime import learners
from tests.pagekit import texts
from tests.test_page_instructor import KEY as INSTRUCTOR_KEY
from tests.test_page_instructor import open_with_key as instructor_page
from ui import exercise_runs
from ui.widgets import escape_markdown

PAGES = {"session-per-task": "../pages/2_DB_Connectivity_and_Pooling.py",
         "latest-scores": "../pages/3_Repository_Pattern_and_N+1.py", "cache-aside": "../pages/4_Caching_with_Redis.py"}
EXERCISE = "latest-scores"
KEY = f"exercise:{EXERCISE}"
EAGER = """        result = await self.session.execute(
            select(User).where(User.id.in_(user_ids)).options(selectinload(User.scores))
        )"""
N_PLUS_ONE = (exercises.get(EXERCISE).answer_key
              .replace(EAGER, "        result = await self.session.execute(select(User).where(User.id.in_(user_ids)))")
              .replace("max(user.scores,", "max(await user.awaitable_attrs.scores,"))


@pytest.fixture(autouse=True)
def own_machine(monkeypatch):
    """A learner's own machine unless a test sets the key."""
    monkeypatch.delenv("LAB_INSTRUCTOR_KEY", raising=False)


def open_as(token: str | None = None, exercise_id: str = EXERCISE) -> AppTest:
    at = AppTest.from_file(PAGES[exercise_id], default_timeout=120)
    if token is not None:
        at.query_params["learner"] = token
    at.run()
    assert not at.exception
    return at


def run_checks(at: AppTest, code: str) -> AppTest:
    at.session_state[f"{KEY}:code"] = code  # what the editor's response puts there when the learner leaves it
    at.button(key=f"{KEY}:run_checks").click().run()
    assert not at.exception
    return at


def learner_id(at: AppTest) -> str:
    return ui.run(learners.load(ui.database(), at.query_params["learner"]))[0]


def stored(at: AppTest) -> store.Attempt | None:
    return ui.run(store.load(ui.database(), learner_id(at), EXERCISE))


def shown(at: AppTest) -> str:
    return " ".join(texts(elements) for elements in (at.markdown, at.caption, at.info, at.warning, at.error,
                                                       at.success, at.code))


@pytest.mark.parametrize("exercise_id", sorted(PAGES))
def test_each_section_draws_its_exercise_with_the_starter_and_how_code_runs_here(initialised, exercise_id):
    exercise = exercises.get(exercise_id)
    at = open_as(exercise_id=exercise_id)
    assert f"Your turn: {exercise.title}" in texts(at.subheader)
    assert escape_markdown(exercises.policy().reason) in texts(at.caption)
    assert at.session_state[f"exercise:{exercise_id}:code"] == exercise.stub
    assert at.button(key=f"exercise:{exercise_id}:run_checks").label == "Run checks"
    assert not at.status  # nothing ran


def test_the_answer_key_passes_every_check_with_the_statements_it_sent(initialised):
    at = run_checks(open_as(), exercises.get(EXERCISE).answer_key)
    [box] = at.status
    assert box.label.startswith("Running the checks: done in ")
    assert "All 4 checks passed." in texts(at.success) and not at.error
    assert ":green[✓] **Statements for 50 users: at most 2**: 2 statements for 50 users (at most 2)." in texts(at.markdown)
    assert "users: 600 · statements: 3 · at most: 3" in texts(at.caption)  # selectinload: 500 IDs per IN
    assert "SELECT users.id" in texts(at.code)
    assert "Your code against it:" in texts(at.markdown) and "(the same)" in texts(at.code)  # the key opened
    attempt = stored(at)
    assert (attempt.runs, attempt.failed_runs, attempt.passed, attempt.result["message"]) == (
        1, 0, True, "All 4 checks passed.")


def test_an_n_plus_one_solution_is_told_the_statements_it_sent_and_the_key_stays_closed(initialised):
    at = run_checks(open_as(), N_PLUS_ONE)
    assert ("2 of 4 checks passed. First to fail: Statements for 50 users: at most 2: 51 statements for 50 "
            "users (at most 2)") in texts(at.error)
    assert ":red[✗] **Statements for 600 users: at most 3**" in texts(at.markdown)
    assert "50 x SELECT air_scores." in texts(at.code)
    assert "(1 so far)" in texts(at.caption) and "Your code against it:" not in texts(at.markdown)
    attempt = stored(at)
    assert (attempt.runs, attempt.failed_runs, attempt.passed) == (1, 1, False)


def test_a_second_click_while_the_first_run_is_going_queues_nothing_and_follows_the_first(initialised):
    at = open_as()
    first = exercise_runs.Running(EXERCISE, "code", future=concurrent.futures.Future())
    at.session_state[f"{KEY}:running"] = first  # as a click whose page run another click stopped leaves it
    result = exercise_runs.result_of(exercises.Grade(EXERCISE, True, True, "All 4 checks passed."), "code")
    threading.Timer(1.0, first.future.set_result, [result]).start()  # the first run ends a moment later
    run_checks(at, exercises.get(EXERCISE).answer_key)
    assert "Your last run is still going" in texts(at.info)
    assert "All 4 checks passed." in texts(at.success)  # the first run's results, followed to the end
    assert f"{KEY}:running" not in at.session_state and at.session_state[f"{KEY}:tally"]["runs"] == 1
    assert stored(at).runs == 0  # no second run was graded (a draft of the code was saved)


def test_bad_input_gets_its_message_beside_the_editor_runs_nothing_and_stores_nothing_beyond_limits(initialised):
    at = open_as()
    bad = {"": "The editor is empty", "def broken(:\n    pass\n": "Syntax error on line 1",
           "x = 1  # pasted\n" * 70_000: "the limit is 64 KB", exercises.get(EXERCISE).stub + "\x00": "NUL character"}
    for code, message in bad.items():
        run_checks(at, code)
        assert message in texts(at.error), code[:40]
        assert not at.status  # nothing ran
    assert "It is not saved until it fits." in texts(at.warning)  # the NUL paste, left in the editor
    attempt = stored(at)
    assert attempt.runs == 0 and attempt.result is None
    assert attempt.code == "def broken(:\n    pass\n"  # the last draft that fits; the paste and the NUL were not kept


def test_code_and_results_come_back_in_a_new_session_after_the_apps_resources_are_reset(initialised):
    mine = exercises.get(EXERCISE).answer_key + "\n# my version\n"
    at = run_checks(open_as(), mine)
    token = at.query_params["learner"]
    at.session_state[f"{KEY}:code"] = mine + "# edited after the run\n"
    at.run()  # leaving the editor with new code saves it, without running it
    ui.reset_resources()  # as a restart does: a new engine, nothing cached

    again = open_as(token)
    assert again.session_state[f"{KEY}:code"] == mine + "# edited after the run\n"
    assert "All 4 checks passed." in texts(again.success)
    assert ":green[✓] **Statements for 600 users: at most 3**" in texts(again.markdown)
    assert "These results are for your code as it was when you ran the checks" in texts(again.caption)
    assert "Your code against it:" in texts(again.markdown)  # passed: the key stays open


def test_start_over_takes_the_learners_exercises_with_their_progress(initialised):
    at = run_checks(open_as(), N_PLUS_ONE)
    before = learner_id(at)
    at.button(key="start_over").click().run()
    assert not at.exception and at.session_state[f"{KEY}:code"] == exercises.get(EXERCISE).stub
    assert "checks passed" not in texts(at.error) + texts(at.success)  # no results of the learner before
    assert ui.run(store.load(ui.database(), before, EXERCISE)) is None  # their rows went with their learner row


def test_the_panel_draws_every_exercise_in_the_catalogue(initialised):
    for exercise in exercises.catalogue():  # sections 5 and 5b's too, whose pages may call it next
        at = AppTest.from_string(f"""
import ui
from ui.views import exercise_views
ui.page("exercises")
exercise_views.panel({exercise.id!r})
""", default_timeout=60).run()
        assert not at.exception, exercise.id
        assert f"Your turn: {exercise.title}" in texts(at.subheader)
        assert at.session_state[f"exercise:{exercise.id}:code"] == exercise.stub


def test_a_changed_starter_keeps_the_learners_code_and_shows_what_changed(initialised):
    at = open_as()
    old_starter = exercises.get(EXERCISE).stub.replace("latest score", "most recent score")
    ui.run(store.save_code(ui.database(), learner_id(at), EXERCISE, "# my code\n", starter=old_starter))
    again = open_as(at.query_params["learner"])
    assert "The starter code of this exercise changed since you began: your code is kept." in texts(again.info)
    assert again.session_state[f"{KEY}:code"] == "# my code\n"
    # the two starters, line by line (the page's own diffs are of other code)
    [diff] = [block.value for block in again.code if block.language == "diff" and "most recent score" in block.value]
    assert "--- the starter you began from" in diff and "+++ the starter now" in diff
    assert any(line.startswith("-") and "most recent score" in line for line in diff.splitlines())
    assert any(line.startswith("+") and "latest score" in line for line in diff.splitlines())
    again.button(key=f"{KEY}:keep_mine").click().run()
    again.run()
    assert not again.exception and "starter code of this exercise changed" not in texts(again.info)
    assert stored(again).starter_hash == store.starter_hash(exercises.get(EXERCISE).stub)
    assert stored(again).code == "# my code\n"


def test_the_answer_key_opens_on_request_after_two_failed_runs(initialised):
    at = open_as()
    me, db = learner_id(at), ui.database()
    failing = exercise_runs.result_of(exercises.Grade(EXERCISE, False, True, "0 of 4 checks passed."), N_PLUS_ONE)
    for _ in range(2):
        ui.run(store.record_run(db, me, EXERCISE, N_PLUS_ONE, starter=exercises.get(EXERCISE).stub, result=failing,
                                passed=False, failed_checks=[]))
    again = open_as(at.query_params["learner"])
    assert exercises.get(EXERCISE).answer_key.strip() not in texts(again.code)
    again.button(key=f"{KEY}:show_answer").click().run()
    again.run()
    assert not again.exception and exercises.get(EXERCISE).answer_key.strip() in texts(again.code)
    # their code against the key (the page's own diffs are of other code)
    [diff] = [block.value for block in again.code if block.language == "diff" and block.value.startswith("--- your code")]
    assert diff.startswith("--- your code\n+++ answer key") and stored(again).answer_seen


def test_on_a_shared_server_the_exercise_is_read_only_until_the_instructor_turns_exercises_on(initialised,
                                                                                               monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", INSTRUCTOR_KEY)
    at = open_as()
    assert "only once the instructor turns them on" in texts(at.info) and "read-only" in texts(at.info)
    assert exercises.get(EXERCISE).stub.strip() in texts(at.code)
    assert not [b for b in at.button if b.key == f"{KEY}:run_checks"]

    room = instructor_page(monkeypatch)
    assert "Learners may run their exercise code on this server: **off**." in texts(room.markdown)
    room.button(key="room_exercises_on").click().run()
    assert "**on**" in texts(room.markdown)
    at.run()
    assert not at.exception
    if sandbox.capabilities().os_sandbox:
        assert at.button(key=f"{KEY}:run_checks") and not at.info
    # Without bubblewrap a shared server keeps exercises read-only, switch or not.
    real = sandbox.capabilities()
    monkeypatch.setattr(sandbox, "capabilities", lambda: sandbox.Capabilities(
        real.platform, None, real.setpriv, real.cgroup, real.cgroup_missing, real.redis_server))
    at.run()
    assert "which this server does not have" in texts(at.info)
    assert not [b for b in at.button if b.key == f"{KEY}:run_checks"]


def test_the_instructor_sees_per_exercise_attempted_passed_and_the_check_most_often_failed(initialised,
                                                                                           monkeypatch):
    db, starter = ui.database(), exercises.get(EXERCISE).stub
    a, b = ui.run(learners.create(db, learners.new_token())), ui.run(learners.create(db, learners.new_token()))
    fifty = "Statements for 50 users: at most 2"
    for who, passed, failed in ((a, False, [fifty]), (a, True, []), (b, False, [fifty, "Statements for 600 users: at most 3"]),
                                (b, False, [fifty])):
        ui.run(store.record_run(db, who, EXERCISE, "code", starter=starter, result={}, passed=passed,
                                failed_checks=failed))
    room = instructor_page(monkeypatch)
    table = room.dataframe[-1].value
    row = table[table["exercise"] == exercises.get(EXERCISE).title].iloc[0]
    assert (row["attempted"], row["passed"], row["most often failed"]) == (2, 1, f"{fifty} (3 runs)")
    other = table[table["exercise"] == exercises.get("cache-aside").title].iloc[0]
    assert (other["attempted"], other["passed"], other["most often failed"]) == (0, 0, "")
