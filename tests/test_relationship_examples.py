"""Page 1's live example of each relationship kind (labbench/relationship_examples.py), on SQLite
and PostgreSQL: each example's SQL is the one statement its lazy loader sent, and what it says it
loaded is what the sample data holds."""

from __future__ import annotations

from labbench.relationship_examples import relationship_examples
from source import UserRepository, calculate_and_store_airscore, run_db_setup_and_create_user


async def test_each_kind_has_its_sql_and_a_live_example(db):
    alex, _ = await run_db_setup_and_create_user(db)
    before = {e.attribute: e for e in await relationship_examples(db)}
    assert before["AIRScore.user"].sql == "" and "no score of Alex's or Jane's" in before["AIRScore.user"].loaded
    async with db.sessions.begin() as session:  # a learner's own user and score are never shown
        learner = await UserRepository(session).create(email="learner@example.com", name="Learner Private")
    await calculate_and_store_airscore(sessions=db.sessions, user_id=learner.id, occupation_code="X")
    assert "no score of Alex's or Jane's" in {e.attribute: e for e in await relationship_examples(db)}["AIRScore.user"].loaded
    score, _ = await calculate_and_store_airscore(sessions=db.sessions, user_id=alex.id, occupation_code="X")
    examples = {e.attribute: e for e in await relationship_examples(db)}
    assert {e.kind for e in examples.values()} == {"one-to-many", "one-to-one", "many-to-many", "many-to-one"}
    assert "FROM air_scores" in examples["User.scores"].sql and "= air_scores.user_id" in examples["User.scores"].sql
    assert examples["User.scores"].loaded == "Alex Smith: 1 score"
    assert "FROM user_profiles" in examples["User.profile"].sql
    assert examples["User.profile"].loaded == "Alex Smith: 'Software developer moving into ML engineering'"
    assert "user_skills" in examples["User.skills"].sql
    assert examples["User.skills"].loaded == "Alex Smith: Machine learning, Python, SQL"
    assert "FROM users" in examples["AIRScore.user"].sql and "users.id =" in examples["AIRScore.user"].sql
    assert examples["AIRScore.user"].loaded == f"score {score.air_score:g}: Alex Smith"


async def test_before_the_sample_users_exist_there_is_nothing_to_show(db):
    assert await relationship_examples(db) == []
