"""The learner's own code, graded by measuring it.

Each exercise gives a starter (a stub whose docstring states the contract), hints and an answer
key; the learner's code runs in a sandboxed child process, never in the app, against a database
and a Redis of the run's own, and each check reports what it measured there (the statements
PostgreSQL received, Redis's counters, times on the grader's clock) next to its verdict.

The API the pages use:

    catalogue() -> list[Exercise]          in the lab's order; each has .id, .section, .title, .stub,
                                           .hints, .answer_key, .check_names, .answer_diff(code)
    get(exercise_id) -> Exercise           ValueError for an unknown id
    validate(exercise_id, code) -> str | None
                                           the message to show beside the editor (empty code, over
                                           64 KB, a NUL character, a syntax error, a missing
                                           function), or None if the code can run; nothing runs
    await grade(exercise_id, code, *, report=None) -> Grade
                                           report: labbench.progress.Report, called with each step
                                           (the place in the queue and the wait while queued, then
                                           each check); Grade.checks: CheckResult(name, passed,
                                           message, figures, evidence, required) in order;
                                           Grade.passed, .ran, .message, .output (what the code
                                           printed), .seconds, .waited_seconds, .sandbox_missing
    policy(*, instructor_enabled) -> Policy
                                           allowed, or read-only with the reason: on a shared server
                                           (LAB_INSTRUCTOR_KEY set) only when the instructor turned
                                           exercises on and bubblewrap is present
    queue_status() -> runqueue.Status      slots, running, waiting, average run (seconds)
    capabilities() -> sandbox.Capabilities which protections this machine gives (.protections())

From a shell (the same sandbox and checks; exit status 0 only when every check passes):

    python -m exercises list
    python -m exercises grade EXERCISE FILE

Layout: one folder per exercise (stub.py, key.py, child.py: its side of a run inside the
sandbox, and __init__.py: its checks), the runner (runner.py: a run from the grader's side;
driver.py: the child's side, and child_backends.py: how each child.py opens the run's database
and Redis; sandbox.py and launch.py: bubblewrap, cgroups, rlimits), the
exercise database (cluster.py, seed.py, serverlog.py), a Redis per run (private_redis.py), the
run queue (runqueue.py) and the policy (policy.py).
"""

from __future__ import annotations

from .catalogue import MAX_CODE_BYTES, CheckResult, Exercise, InvalidCode
from .catalogue import validate as _validate
from .grading import Grade, grade
from .policy import Policy, policy
from .registry import EXERCISES, get
from .runqueue import QUEUE, Status
from .sandbox import capabilities

__all__ = ["MAX_CODE_BYTES", "CheckResult", "Exercise", "Grade", "Policy", "capabilities", "catalogue", "get",
           "grade", "policy", "queue_status", "validate"]


def catalogue() -> list[Exercise]:
    return list(EXERCISES.values())


def validate(exercise_id: str, code: object) -> str | None:
    """The message for code that cannot run, or None. Nothing is run."""
    try:
        _validate(get(exercise_id), code)
    except InvalidCode as error:
        return str(error)
    return None


def queue_status() -> Status:
    return QUEUE.status()
