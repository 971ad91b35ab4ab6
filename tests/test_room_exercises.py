"""A room pressing "Run checks" at once on one served app (harness/exercise_room.py, no browsers), on
both backend pairs: no learner errs, the sandboxes run within the queue's bound (counted from
outside the app, among its child processes) and below the app's priority, every learner who waited
saw its place in line and the expected wait, every learner's code and results are stored, and a
learner on a page that runs no code kept getting answers during the rush. Four learners here;
`bench.py --only exercise_room` runs thirty and prints the figures."""

from __future__ import annotations

import asyncio
import os
import statistics

import pytest

import exercises
from exercises.runqueue import default_slots
from harness import exercise_room
from harness.served import app_subprocess_env, served_app

LEARNERS = 4


@pytest.fixture
def served_env(initialised) -> dict[str, str]:
    return app_subprocess_env({"REDIS_URL": "fakeredis://"} if initialised == "embedded" else {})


def test_learners_pressing_run_checks_at_once_take_turns_within_the_bound_and_other_clicks_are_answered(
        served_env, tmp_path):
    code = exercises.get(exercise_room.EXERCISE).answer_key
    with served_app(served_env, tmp_path) as app:
        run = asyncio.run(exercise_room.rush(app.url, app.process.pid, learners=LEARNERS, code=code, bystanders=1,
                                             before=5))
    run.check()
    slots = default_slots()  # the served app's environment is this process's
    assert all(me.passed for me in run.walked)
    assert 1 <= run.sandboxes_at_once <= slots
    assert run.sandbox_nice and min(run.sandbox_nice) > run.server_nice  # below the app's priority
    waited = [me for me in run.walked if me.places]
    assert len(waited) >= LEARNERS - slots  # all but those who found a free runner saw their place
    for me in waited:
        assert 1 <= me.places[0] <= LEARNERS - 1 and me.places == sorted(me.places, reverse=True)
    assert sorted(me.places[0] for me in waited)[-1] >= LEARNERS - slots  # the last in line was told so
    stored = asyncio.run(exercise_room.stored_attempts(os.environ["DATABASE_URL"], run.walked))
    assert all(attempt is not None and (attempt.runs, attempt.passed, attempt.code) == (1, True, code)
               for attempt in stored.values())
    [bystander] = run.bystanders
    assert bystander.before and bystander.during  # answered before and during the rush
    print(f"\n{LEARNERS} learners at once, {slots} slot(s): results after "
          f"{', '.join(f'{me.results_seconds:.1f}' for me in run.walked)} s; most sandboxes at once "
          f"{run.sandboxes_at_once}; plain page rerun median {statistics.median(bystander.before) * 1000:.0f} ms "
          f"before, {statistics.median(bystander.during) * 1000:.0f} ms during ({len(bystander.during)} reruns)")
