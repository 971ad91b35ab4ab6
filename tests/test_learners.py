"""The learners' rows (runtime.learners) on SQLite and PostgreSQL: a token finds only its own
learner, saving writes what changed, 'start over' deletes only that learner's rows, and the
instructor's figures count what is stored."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import func, select, text, update

from runtime import learners
from runtime.learners import Saved


async def _count(db, table, *where) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(table).where(*where))


def test_tokens_carry_at_least_128_bits_and_only_well_formed_ones_are_looked_up():
    tokens = {learners.new_token() for _ in range(1000)}
    assert len(tokens) == 1000 and all(len(t) == 32 for t in tokens)  # 24 random bytes = 192 bits
    token = tokens.pop()
    assert learners.token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    for malformed in (None, "", "short", token + "x", token[:-1] + "!", "' OR 1=1 --" + "a" * 21, ["a"], 42):
        assert learners.token_hash(malformed) is None


async def test_a_saved_learner_loads_back_with_everything_and_the_token_is_stored_hashed(db):
    token, learner_id = learners.new_token(), "11111111-1111-4111-8111-111111111111"
    saved = Saved(display_name="Ada", done={"models", "outbox"}, passed={"outbox"},
                  answers={"outbox": {0: (1, True), 1: (2, False)}}, made={"created_user_id": "u-1"})
    await learners.save(db, learner_id, token, saved, None)
    found = await learners.load(db, token)
    assert found == (learner_id, saved)
    async with db.sessions() as session:
        stored = (await session.execute(text("SELECT token_hash FROM learners"))).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()] and token not in stored[0]


async def test_an_unknown_or_malformed_token_finds_no_one(db):
    await learners.save(db, "11111111-1111-4111-8111-111111111111", learners.new_token(), Saved(done={"models"}), None)
    assert await learners.load(db, learners.new_token()) is None
    assert await learners.load(db, "not a token") is None


async def test_saving_writes_only_the_sections_that_changed(db):
    token, me = learners.new_token(), "11111111-1111-4111-8111-111111111111"
    first = Saved(answers={"models": {0: (1, True)}, "cache": {0: (0, False)}})
    await learners.save(db, me, token, first, None)
    # Rows of a section that did not change are not rewritten: a marker put there survives.
    async with db.sessions.begin() as session:
        await session.execute(update(learners.learner_answers).where(
            learners.learner_answers.c.section == "models").values(choice=9))
    second = Saved(answers={"models": {0: (1, True)}, "cache": {0: (1, True)}}, done={"cache"})
    await learners.save(db, me, token, second, first)
    _, loaded = await learners.load(db, token)
    assert loaded.answers == {"models": {0: (9, True)}, "cache": {0: (1, True)}} and loaded.done == {"cache"}


async def test_start_over_deletes_that_learners_rows_and_no_one_elses(db):
    mine, theirs = learners.new_token(), learners.new_token()
    everything = Saved(done={"models"}, passed={"models"}, answers={"models": {0: (1, True)}})
    await learners.save(db, "11111111-1111-4111-8111-111111111111", mine, everything, None)
    await learners.save(db, "22222222-2222-4222-8222-222222222222", theirs, everything, None)
    await learners.forget(db, "11111111-1111-4111-8111-111111111111")
    assert await learners.load(db, mine) is None
    assert await learners.load(db, theirs) == ("22222222-2222-4222-8222-222222222222", everything)
    for table in (learners.learners, learners.learner_progress, learners.learner_answers):
        assert await _count(db, table) == 1


async def test_a_row_that_is_gone_is_written_again_under_the_same_token(db):
    token, me = learners.new_token(), "11111111-1111-4111-8111-111111111111"
    await learners.save(db, me, token, Saved(done={"models"}), None)
    await learners.forget(db, me)  # as a downgrade below 0004 and an upgrade leave it
    await learners.save(db, me, token, Saved(done={"models", "cache"}), Saved(done={"models"}))
    assert await learners.load(db, token) == (me, Saved(done={"models", "cache"}))


async def test_the_room_figures_count_active_learners_and_right_answers(db):
    a, b, old = (f"{n}{n}{n}{n}{n}{n}{n}{n}-1111-4111-8111-111111111111" for n in (1, 2, 3))
    await learners.save(db, a, learners.new_token(), Saved(display_name="A", done={"models"}, passed={"models"},
                                                           answers={"models": {0: (1, True), 1: (1, True)}}), None)
    await learners.save(db, b, learners.new_token(), Saved(answers={"models": {0: (0, False)}}), None)
    await learners.save(db, old, learners.new_token(), Saved(done={"cache"}, answers={"models": {0: (1, True)}}), None)
    async with db.sessions.begin() as session:
        await session.execute(update(learners.learners).where(learners.learners.c.id == old).values(
            last_seen_at=learners.utcnow() - timedelta(minutes=31)))
    active = await learners.active_learners(db)
    assert {(x.id, x.display_name, x.done, x.passed) for x in active} == {
        (a, "A", frozenset({"models"}), frozenset({"models"})), (b, None, frozenset(), frozenset())}
    shares = {(s.section, s.question): (s.answered, s.right) for s in await learners.question_shares(db)}
    assert shares == {("models", 0): (3, 2), ("models", 1): (1, 1)}


async def test_key_figures_are_kept_with_the_learners_row_and_come_back(db):
    learner_id = await learners.create(db, token := learners.new_token())
    figures = {"pooling": {"median wait": "12.3 ms"}, "cache": {"hit rate": "91%"}}
    await learners.save(db, learner_id, token, Saved(made={"key_figures": figures}), None)
    _, saved = await learners.load(db, token)
    assert saved.made["key_figures"] == figures
