"""Section 3 driven through AppTest on both backend pairs: the arc (the minimal repository and
the learner's cohort set up through it, a prediction, the N+1 at scale, selectinload as its
hardening), every button's measured result and status, results that stay, and bad or unknown
user IDs answered with a message and no write."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

import ui
from source import AIRScore, User, run_db_setup_and_create_user
from tests.pagekit import count, open_page, texts

PAGE = "../pages/3_Repository_Pattern_and_N+1.py"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def alex_id(app_env) -> str:
    alex, _ = ui.run(run_db_setup_and_create_user(ui.database()))
    return alex.id


def status(at: AppTest, label: str):
    [box] = [box for box in at.status if box.label.startswith(label)]
    assert box.state == "complete" and ": done in " in box.label, box.label
    return box


def set_up_cohort(at: AppTest, users: int, scores: int = 3) -> AppTest:
    at.number_input(key="n1_users").set_value(users)
    at.number_input(key="n1_scores").set_value(scores)
    at.button(key="n1_setup").click().run()
    assert not at.exception
    status(at, f"Adding {users} users")
    return at


def statement_counts(at: AppTest) -> list[int]:
    """The counts the page shows, left to right."""
    return [int(n) for n in re.findall(r"\*\*Statements sent: (\d+)\*\*", texts(at.markdown))]


def test_adds_three_sample_scores_to_alex_by_default(alex_id):
    at = open_page(PAGE)
    assert at.text_input(key="n1_user_id_input").value == alex_id
    at.button(key="add_scores").click().run()
    assert not at.exception
    assert "Added 3 scores" in texts(at.success)
    assert count(AIRScore) == 3


@pytest.mark.parametrize(
    ("typed", "message"), [("", "Enter a user ID"), ("42", "not a valid user ID"), (UNKNOWN_ID, "No user has the ID")]
)
def test_a_bad_or_unknown_user_id_gets_a_message_and_writes_nothing(alex_id, typed, message):
    at = open_page(PAGE)
    at.text_input(key="n1_user_id_input").set_value(typed)
    at.button(key="add_scores").click().run()
    assert not at.exception
    assert message in texts(at.error)
    assert count(AIRScore) == 0


def test_one_user_takes_two_statements_lazily_and_eagerly_side_by_side(alex_id):
    at = open_page(PAGE)
    at.button(key="add_scores").click().run()
    at.button(key="fetch_lazy").click().run()
    at.button(key="fetch_eager").click().run()
    assert not at.exception
    assert statement_counts(at) == [2, 2]
    assert "Alex Smith" in texts(at.markdown)
    assert [len(frame.value) for frame in at.dataframe] == [3, 3]


def test_fetching_an_unknown_user_says_so(alex_id):
    at = open_page(PAGE)
    at.text_input(key="fetch_user_id_n1").set_value(UNKNOWN_ID)
    at.button(key="fetch_eager").click().run()
    assert f"No user has the ID {UNKNOWN_ID}" in texts(at.error)
    assert not statement_counts(at)


def test_the_minimal_repository_and_its_hardening_are_shown_from_the_source(alex_id):
    at = open_page(PAGE)
    shown = texts(at.code)
    assert "class MinimalUserRepository:" in shown and "await user.awaitable_attrs.scores" in shown
    [diff] = [block.value for block in at.code if block.language == "diff"]
    assert "-        await user.awaitable_attrs.scores" in diff  # the loop that sent one SELECT per user
    assert "+    query = self._users_query(user_ids).options(selectinload(User.scores))" in diff


def test_the_team_page_needs_a_prediction_then_keeps_each_run_beside_it(alex_id):
    at = set_up_cohort(open_page(PAGE), 6)
    at.button(key="n1_list").click().run()
    assert "Enter your prediction first." in texts(at.error) and not at.status
    at.number_input(key="n1_guess").set_value(1)
    at.button(key="n1_list").click().run()
    status(at, "The team page")
    assert "You predicted **1**; the team page sent **7 statements** for 6 users (under by 6)" in texts(at.markdown)
    at = set_up_cohort(at, 9)
    at.number_input(key="n1_guess").set_value(10)
    at.button(key="n1_list").click().run()
    assert "You predicted **10**; the team page sent **10 statements** for 9 users (right)" in texts(at.markdown)
    runs = at.dataframe[0].value
    assert list(runs["users"]) == [6, 9] and list(runs["statements sent"]) == [7, 10]
    assert list(runs["you predicted"]) == [1, 10]


def test_compares_the_strategies_on_the_learners_cohort_with_measured_counts(alex_id):
    at = set_up_cohort(open_page(PAGE), 6, 2)
    assert "Your cohort: 6 users" in texts(at.caption)
    at.button(key="n1_compare").click().run()
    assert not at.exception
    status(at, "Comparing lazy, select-in and joined, 5 runs each")
    assert at.session_state["key_figures"]["repository"]["statements"] == (
        "6 users: statements sent lazy 7, selectin 2, joined 1")
    assert statement_counts(at) == [6 + 1, 2, 1]
    assert "All three returned the same 6 users and 12 scores" in texts(at.success)
    assert len(at.get("vega_lite_chart")) == 2
    # Each strategy's expander holds everything its session sent: the pre-ping, BEGIN, the data
    # statements, ROLLBACK (the session only read).
    sent = [expander for expander in at.expander if expander.label.startswith("Show all")]
    assert [len(expander.code) for expander in sent] == [3 + 6 + 1, 3 + 2, 3 + 1]
    assert [expander.code[-1].value.splitlines()[-1] for expander in sent] == ["ROLLBACK"] * 3
    assert "Lazy took" in texts(at.caption) and "select-in's time here" in texts(at.caption)
    assert all("FROM air_scores" in block.value for block in sent[0].code[3:-1])  # after the users
    at.button(key="fetch_eager").click().run()  # results stay until replaced
    assert statement_counts(at) == [6 + 1, 2, 1, 2] and len(at.get("vega_lite_chart")) == 2


def test_setting_up_the_cohort_twice_does_not_pile_up_users(alex_id):
    at = open_page(PAGE)
    at.number_input(key="n1_users").set_value(4)
    at.button(key="n1_setup").click().run()
    at.button(key="n1_setup").click().run()
    assert not at.exception
    assert count(User) == 2 + 4 and count(AIRScore) == 4 * 3


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_shows_the_real_error_of_a_plain_lazy_load(alex_id):
    at = open_page(PAGE)
    at.button(key="n1_plain_lazy_load").click().run()
    assert not at.exception
    shown = texts(at.code)
    assert "MissingGreenlet" in shown and "greenlet_spawn has not been called" in shown


def test_shows_raiseload_turning_the_lazy_load_into_an_invalid_request_error(alex_id):
    at = open_page(PAGE)
    at.button(key="n1_raiseload_access").click().run()
    assert not at.exception
    shown = texts(at.code)
    assert "sqlalchemy.exc.InvalidRequestError" in shown
    assert "'User.scores' is not available due to lazy='raise'" in shown
