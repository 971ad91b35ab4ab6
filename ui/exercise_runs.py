"""A learner's "Run checks": graded on the shared loop, kept in their row when it ends, and followed
by whichever run of the page is drawing.

The grading outlives the page run that started it. Streamlit stops a page run when the same
browser tab asks for another (the learner clicks anything, or leaves the editor, while their code
waits for a free runner), and the queue may make that wait long in a full room; a result computed
then must not be lost. So `start` hands the grading to the shared loop, which also stores the
result; a page run only follows it (`follow`, through ui.run_showing), and the next page run follows
it again until it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import exercises
from labbench.progress import Latest, Report
from runtime import exercise_store
from source.models import utcnow
from ui import event_loop

log = logging.getLogger("lab2")
NOT_RUN = "Not run:"  # how the grader words a check that never ran (an earlier step failed)
NOT_KEPT = "Your results could not be saved (the database did not answer): they are kept in this browser tab."


@dataclass
class Running:
    exercise_id: str
    code: str
    progress: Latest = field(default_factory=Latest)
    future: concurrent.futures.Future | None = None


def result_of(grade: exercises.Grade, code: str) -> dict[str, Any]:
    """The grade as the page draws it and the row keeps it (JSON)."""
    result = {
        "passed": grade.passed, "ran": grade.ran, "message": grade.message, "code_hash": exercise_store.starter_hash(code),
        "at": utcnow().isoformat(timespec="seconds"), "seconds": grade.seconds, "waited_seconds": grade.waited_seconds,
        "redis": grade.redis, "sandbox_missing": list(grade.sandbox_missing), "output": grade.output,
        "checks": [{"name": c.name, "passed": c.passed, "message": c.message, "figures": c.figures,
                    "evidence": list(c.evidence), "required": c.required} for c in grade.checks],
    }
    return json.loads(json.dumps(result, default=str))  # figures may hold values JSON has no type for


def failed_checks(result: dict[str, Any]) -> list[str]:
    """The required checks the run failed, not counting those it never reached."""
    return [c["name"] for c in result["checks"]
            if c["required"] and c["passed"] is False and not c["message"].startswith(NOT_RUN)]


def start(exercise_id: str, code: str, keep: Callable[[dict[str, Any]], Awaitable[None]] | None) -> Running:
    """Grade `code` on the shared loop; `keep(result)` stores a result that ran (None: nothing is stored)."""
    running = Running(exercise_id, code)

    async def grade_and_keep() -> dict[str, Any]:
        result = result_of(await exercises.grade(exercise_id, code, report=running.progress), code)
        if keep is not None and result["ran"]:
            try:
                await keep(result)
            except Exception:
                log.warning("could not store a learner's exercise results", exc_info=True)
                result["not_kept"] = NOT_KEPT
        return result

    running.future = asyncio.run_coroutine_threadsafe(grade_and_keep(), event_loop())
    return running


async def follow(running: Running, report: Report) -> dict[str, Any]:
    """Pass on the grading's reports (its place in the queue, then each check) until it ends.
    Cancelling this (ui.run_showing's time limit) leaves the grading running."""
    shown = None
    while not running.future.done():
        now = running.progress.read()
        if now is not None and now != shown:
            shown = now
            report(*now)
        await asyncio.sleep(0.1)
    return running.future.result()


def about_seconds() -> float:
    """The expected time to results: the runs ahead of this one, in waves of the queue's slots."""
    status = exercises.queue_status()
    return status.average_seconds * (1 + (status.running + status.waiting) / status.slots)
