"""Page 1's relationship section on both backend pairs: the four kinds in the diagram and the
table, each loaded live from the sample data with the SQL it sent, and the algebra's selection."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.pagekit import texts

MODELS = "pages/1_Data_Models.py"


def open_models() -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.switch_page(MODELS)
    at.run()
    assert not at.exception
    return at


def test_the_four_kinds_are_drawn_tabled_and_loaded_live(initialised):
    at = open_models()
    diagram = at.get("graphviz_chart")[0].proto.spec
    assert "User.profile (1:1)" in diagram and "Skill.users (M:N)" in diagram and "User.scores (1:N)" in diagram
    table = at.dataframe[0].value
    assert set(table["kind"]) == {"one-to-many", "many-to-one", "one-to-one", "many-to-many"}
    body, code = texts(at.markdown), texts(at.code)
    assert "`User.profile` (one-to-one): Alex Smith: 'Software developer moving into ML engineering'" in body
    assert "`User.skills` (many-to-many): Alex Smith: Machine learning, Python, SQL" in body
    assert "no score of Alex's or Jane's stored yet" in body  # the sample data has no score until section 3 adds one
    assert "FROM user_profiles" in code and "user_skills" in code
    assert "WHERE users.id = :id_1" in code  # the selection sigma, as SQL
    assert not at.error


def test_before_the_set_up_the_diagram_is_drawn_and_the_live_examples_wait(app_env, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "letmein")  # a shared server: the set-up is the instructor's
    at = open_models()
    assert "the instructor's to do" in texts(at.info)
    assert "User.scores (1:N)" in at.get("graphviz_chart")[0].proto.spec
    assert not [m for m in at.markdown if "(one-to-one): Alex" in m.value]


def test_the_cascade_button_shows_each_ways_statements_and_rows_left(initialised):
    at = open_models()
    at.button(key="cascade_demo").click().run()
    assert not at.exception and not at.error
    body, code = texts(at.markdown), [c.value for c in at.code if "DELETE FROM users" in c.value]
    assert ("**session.delete(user), a user with an assessment**: deleted. That user's rows afterwards: "
            "`users` 0, `assessments` 0, `user_profiles` 0, `user_skills` 0.") in body
    assert "**Core DELETE FROM users, a user with an assessment**: refused by the database" in body
    assert "`users` 1, `assessments` 1, `user_profiles` 1, `user_skills` 2." in body
    assert len(code) == 3 and "DELETE FROM assessments" in code[0] and "user_profiles" not in code[0]
    assert code[2].count(";") == 1  # Core: one statement, the database did the rest
