"""The exercises, in the order of the lab's sections."""

from __future__ import annotations

from .cache_aside import EXERCISE as CACHE_ASIDE
from .catalogue import Exercise
from .event_table import EXERCISE as EVENT_TABLE
from .latest_scores import EXERCISE as LATEST_SCORES
from .outbox_relay import EXERCISE as OUTBOX_RELAY
from .session_per_task import EXERCISE as SESSION_PER_TASK

EXERCISES: dict[str, Exercise] = {exercise.id: exercise for exercise in (SESSION_PER_TASK, LATEST_SCORES, CACHE_ASIDE)}
EXERCISES |= {exercise.id: exercise for exercise in (OUTBOX_RELAY, EVENT_TABLE)}  # sections 5 and 5b


def get(exercise_id: str) -> Exercise:
    try:
        return EXERCISES[exercise_id]
    except KeyError:
        raise ValueError(f"No exercise is called {exercise_id!r}; there are: {', '.join(EXERCISES)}") from None
