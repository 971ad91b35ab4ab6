"""Resetting the lab from section 2, and section 5's scores keeping section 4's cache true."""

from __future__ import annotations

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import source
import ui
from labbench import cache_traffic, lab_data

POOLING_PAGE = "../pages/2_DB_Connectivity_and_Pooling.py"
OUTBOX_PAGE = "../pages/5_Eventing_Outbox_Pattern.py"


async def _add_learner_user_and_count(db) -> int:
    async with db.sessions.begin() as session:
        await source.UserRepository(session).create(email="learner@example.com", name="Learner")
        return await session.scalar(select(func.count()).select_from(source.User))


async def _user_count(db) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(source.User))


def _buttons(at: AppTest, key: str):
    return [b for b in at.button if b.key == key]


def test_reset_needs_confirmation_then_restores_the_initial_state(app_env):
    db = ui.database()
    alex, _ = ui.run(source.run_db_setup_and_create_user(db))
    assert ui.run(_add_learner_user_and_count(db)) == 3
    ui.run(ui.redis_client().set(f"{source.redis_prefix()}cache:v1:probe", "1"))

    at = AppTest.from_file(POOLING_PAGE, default_timeout=60).run()
    assert not at.exception
    assert _buttons(at, "reset_lab")[0].disabled  # nothing happens without the confirmation
    at.checkbox(key="reset_confirm").check().run()
    at.button(key="reset_lab").click().run()
    assert not at.exception
    assert "Lab data reset" in " ".join(s.value for s in at.success)
    assert ui.run(_user_count(db)) == 2
    assert ui.run(ui.redis_client().get(f"{source.redis_prefix()}cache:v1:probe")) is None
    assert ui.run(lab_data.find_sample_users(db))[0].id == alex.id


def test_reset_needs_the_instructor_key_when_one_is_set(app_env, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "letmein")
    ui.run(source.run_db_setup_and_create_user(ui.database()))
    at = AppTest.from_file(POOLING_PAGE, default_timeout=60).run()
    assert not _buttons(at, "reset_lab")
    at.text_input(key="reset_key").set_value("letmein").run()
    assert _buttons(at, "reset_lab")


def test_a_score_stored_in_section_5_is_not_hidden_by_section_4s_cache(app_env):
    db = ui.database()
    alex, _ = ui.run(source.run_db_setup_and_create_user(db))
    users = source.CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache())
    ui.run(cache_traffic.ensure_latest_score(users, user_id=alex.id))
    before = ui.run(users.get_latest_score_cached(alex.id))
    assert ui.run(users.get_latest_score_cached(alex.id)).outcome == "hit"

    at = AppTest.from_file(OUTBOX_PAGE, default_timeout=60).run()
    at.selectbox(key="outbox_user").set_value("Alex Smith")
    at.button(key="outbox_create").click().run()
    assert not at.exception

    after = ui.run(users.get_latest_score_cached(alex.id))
    assert after.outcome == "miss" and after.value.id != before.value.id
