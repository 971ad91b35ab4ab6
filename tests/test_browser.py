"""The app as learners use it: `streamlit run app.py` driven by chromium (Playwright), on the
embedded pair and on PostgreSQL + Redis. One learner walks every section in the spec's order and
sees each result; a few learners at once each see only their own session, and the database
holds exactly what they made. The walk itself is in harness/browser_walk.py (bench.py's load run uses it
with 30 learners and prints the times). On failure: screenshots and the server log under
test-artifacts/."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from harness.browser_walk import LoadRun, check_database, serve_and_walk
from harness.served import CHROMIUM, app_subprocess_env

pytestmark = pytest.mark.browser


@pytest.fixture
def served_env(app_env) -> dict[str, str]:
    """The environment of the served app: the app_env pair, as a subprocess sees it."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: install it (apt-get install chromium) to run the browser tests")
    return app_subprocess_env({"REDIS_URL": "fakeredis://"} if app_env == "embedded" else {})


def walked(served_env, tmp_path, *, sessions: int, name: str) -> LoadRun:
    run = asyncio.run(serve_and_walk(served_env, tmp_path, sessions=sessions, alone=sessions == 1, name=name))
    print(f"\n{name}: start-up {run.startup_seconds:.2f} s to the health check, "
          f"{run.first_page_seconds:.2f} s to the first page drawn")
    assert not run.errors, "\n".join(run.errors) + f"\nserver log: {run.server_log}"
    return run


def test_a_learner_walks_every_section_and_sees_each_result(served_env, app_env, tmp_path):
    run = walked(served_env, tmp_path, sessions=1, name=f"walk-{app_env}")
    [me] = run.walked
    assert me.outcomes == ["MISS", "HIT", "MISS"]
    assert me.statements == {"lazy": 21, "selectin": 2, "joined": 1}
    # Alex, Jane, my user and my cohort of 20: the workbench's limit of 10 applies
    assert me.workbench == {"rows": 10, "sent": 12, "predicted": 12}
    contents = asyncio.run(check_database(os.environ["DATABASE_URL"], run.walked))
    assert contents.mismatches == []
    assert contents.jane_demo_scores == 1


def test_learners_on_one_server_see_only_their_own_session(served_env, app_env, tmp_path):
    run = walked(served_env, tmp_path, sessions=5, name=f"together-{app_env}")
    assert run.isolation_violations() == []
    assert len({me.user_id for me in run.walked}) == 5
    contents = asyncio.run(check_database(os.environ["DATABASE_URL"], run.walked))
    assert contents.mismatches == []
