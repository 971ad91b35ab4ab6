"""Each learner's exercise code and results (runtime.exercise_store) on SQLite and PostgreSQL: a
draft and a run come back as written, runs and failed checks are counted, a pass is kept, the
starter each piece of code began from is kept by hash with its text, "start over" takes a learner's
exercises with it, the room's switch is off until turned on, and the instructor's figures count
what is stored."""

from __future__ import annotations

from sqlalchemy import func, select

from runtime import exercise_store as store
from runtime import learners

STARTER, NEW_STARTER = "def f():\n    ...\n", "def f() -> int:\n    ...\n"
RESULT = {"passed": False, "message": "1 of 2 checks passed.", "checks": [{"name": "A", "passed": True},
                                                                         {"name": "B", "passed": False}]}


async def _count(db, table) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(table))


async def test_a_draft_and_then_a_run_come_back_with_the_starter_they_began_from(db):
    me = await learners.create(db, learners.new_token())
    assert await store.load(db, me, "ex") is None
    await store.save_code(db, me, "ex", "def f():\n    return 1\n", starter=STARTER)
    draft = await store.load(db, me, "ex")
    assert (draft.code, draft.runs, draft.passed, draft.result) == ("def f():\n    return 1\n", 0, False, None)
    assert draft.starter_hash == store.starter_hash(STARTER)
    assert await store.starter_text(db, draft.starter_hash) == STARTER

    await store.record_run(db, me, "ex", "def f():\n    return 2\n", starter=STARTER, result=RESULT, passed=False,
                           failed_checks=["B"])
    ran = await store.load(db, me, "ex")
    assert (ran.code, ran.runs, ran.failed_runs, ran.passed, ran.result) == (
        "def f():\n    return 2\n", 1, 1, False, RESULT)


async def test_a_pass_is_kept_after_a_later_failing_run_and_every_run_is_counted(db):
    me = await learners.create(db, learners.new_token())
    for passed in (False, True, False):
        await store.record_run(db, me, "ex", "code", starter=STARTER, result={"passed": passed}, passed=passed,
                               failed_checks=[] if passed else ["B", "B", "C"])  # a repeated name counts once
    attempt = await store.load(db, me, "ex")
    assert (attempt.runs, attempt.failed_runs, attempt.passed, attempt.result) == (3, 2, True, {"passed": False})
    async with db.sessions() as session:
        counts = dict((await session.execute(select(store.exercise_check_failures.c.check_name,
                                                    store.exercise_check_failures.c.failures))).all())
    assert counts == {"B": 2, "C": 2}


async def test_a_changed_starter_keeps_the_learners_code_and_both_starters_texts(db):
    me = await learners.create(db, learners.new_token())
    await store.save_code(db, me, "ex", "mine", starter=STARTER)
    await store.save_code(db, me, "ex", "mine", starter=NEW_STARTER)  # they chose to keep their code
    attempt = await store.load(db, me, "ex")
    assert (attempt.code, attempt.starter_hash) == ("mine", store.starter_hash(NEW_STARTER))
    assert await store.starter_text(db, store.starter_hash(STARTER)) == STARTER
    assert await _count(db, store.exercise_starters) == 2


async def test_start_over_deletes_that_learners_exercises_and_no_one_elses(db):
    mine, theirs = await learners.create(db, learners.new_token()), await learners.create(db, learners.new_token())
    for learner_id in (mine, theirs):
        await store.record_run(db, learner_id, "ex", "code", starter=STARTER, result=RESULT, passed=False,
                               failed_checks=["B"])
    await learners.forget(db, mine)
    assert await store.load(db, mine, "ex") is None
    assert (await store.load(db, theirs, "ex")).runs == 1
    assert await _count(db, store.exercise_attempts) == 1 and await _count(db, store.exercise_check_failures) == 1


async def test_the_room_switch_is_off_until_turned_on_and_can_be_turned_off_again(db):
    assert await store.switch(db, store.EXERCISES_SWITCH) is False
    await store.set_switch(db, store.EXERCISES_SWITCH, True)
    assert await store.switch(db, store.EXERCISES_SWITCH) is True
    await store.set_switch(db, store.EXERCISES_SWITCH, False)
    assert await store.switch(db, store.EXERCISES_SWITCH) is False


async def test_the_instructor_figures_count_attempted_passed_and_the_check_most_often_failed(db):
    a, b, c = [await learners.create(db, learners.new_token()) for _ in range(3)]
    await store.record_run(db, a, "ex", "x", starter=STARTER, result={}, passed=False, failed_checks=["Order"])
    await store.record_run(db, a, "ex", "x", starter=STARTER, result={}, passed=True, failed_checks=[])
    await store.record_run(db, b, "ex", "x", starter=STARTER, result={}, passed=False, failed_checks=["Speed"])
    await store.record_run(db, b, "ex", "x", starter=STARTER, result={}, passed=False, failed_checks=["Order"])
    await store.save_code(db, c, "ex", "a draft, never run", starter=STARTER)
    await store.save_code(db, c, "other", "a draft, never run", starter=STARTER)
    figures = await store.exercise_figures(db)
    assert figures == {"ex": store.ExerciseFigures("ex", attempted=2, passed=1, most_failed="Order",
                                                   most_failed_runs=2)}
