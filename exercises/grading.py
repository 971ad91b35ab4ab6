"""Grading a learner's code: check it without running it, wait for a turn in the queue, then run it
in a sandbox of its own and measure it (runner.Run), one check at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass

from labbench.progress import Report, silent
from runtime.embedded_postgres import Unavailable

from . import registry, sandbox
from .catalogue import CheckResult, InvalidCode, validate
from .cluster import ExerciseCluster, default_cluster
from .runner import Run, Stopped
from .runqueue import QUEUE, RunQueue
from .sandbox import Limits

LOADS = "Your code loads"


@dataclass(frozen=True)
class Grade:
    exercise_id: str
    passed: bool  # every required check passed
    ran: bool  # False: nothing was run (the message says why)
    message: str
    checks: tuple[CheckResult, ...] = ()
    output: str = ""  # what the code printed (the first 8 KB)
    redis: str | None = None  # "server": a private redis-server; "fakeredis": inside the child
    sandbox_missing: tuple[str, ...] = ()  # protections this machine does not give
    seconds: float = 0.0  # from the start of grading to the results
    waited_seconds: float = 0.0  # of which in the queue
    start_seconds: float = 0.0  # the sandboxed interpreter's start, up to its first answer


def not_run(names, why: str, *, done: int = 0) -> list[CheckResult]:
    return [CheckResult(name, False, f"Not run: {why}") for name in names[done:]]


def summary(checks: list[CheckResult]) -> tuple[bool, str]:
    required = [check for check in checks if check.required]
    failed = [check for check in required if check.passed is not True]
    if not failed:
        return True, f"All {len(required)} checks passed."
    first = failed[0]
    return False, f"{len(required) - len(failed)} of {len(required)} checks passed. First to fail: {first.name}: {first.message}"


async def grade(exercise_id: str, code: str, *, report: Report | None = None, cluster: ExerciseCluster | None = None,
                redis: str = "auto", limits: Limits | None = None, queue: RunQueue | None = None) -> Grade:
    """Check `code` for the exercise and return every check's result with what it measured."""
    exercise = registry.get(exercise_id)
    report = report or silent
    began = time.perf_counter()
    try:
        validate(exercise, code)
    except InvalidCode as error:
        return Grade(exercise.id, False, False, str(error))
    missing = tuple(sandbox.capabilities().missing())
    async with (queue or QUEUE).turn(report):
        waited = time.perf_counter() - began
        report("Starting a sandbox, with a database and a Redis of its own", 0.05)
        results: list[CheckResult] = []
        names = exercise.check_names
        run = Run(exercise, cluster or default_cluster(), redis=redis, limits=limits)
        try:
            async with run:
                loaded = False
                try:
                    state = await exercise.before_load(run)
                    report("Loading your code in the sandbox", 0.15)
                    answer = await run.load(code)
                    if not answer.ok:
                        results.append(CheckResult(LOADS, False, f"Loading your code raised {answer.error_text}"))
                        results += not_run(names, "your code did not load")
                    else:
                        loaded = True
                        async for result in exercise.checks(run, state):
                            results.append(result)
                            report(f"Checked: {result.name}", 0.2 + 0.8 * len(results) / len(names))
                except Stopped as stop:
                    if not loaded:
                        results.append(CheckResult(LOADS, False, f"Stopped while loading: {stop}"))
                    results += not_run(names, str(stop), done=len(results) if loaded else 0)
        except Stopped as stop:  # the sandbox itself did not start
            results = [CheckResult(LOADS, False, f"The sandbox did not start: {stop}"),
                       *not_run(names, "the sandbox did not start")]
        except Unavailable as error:
            return Grade(exercise.id, False, False, f"Exercises cannot run here: their database could not start "
                         f"({error}).", sandbox_missing=missing)
    passed, message = summary(results)
    return Grade(exercise.id, passed, True, message, tuple(results), run.output_text(), run.redis_mode, missing,
                 time.perf_counter() - began, waited, run.start_seconds)

