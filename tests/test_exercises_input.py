"""Code that cannot run gets a message and runs nothing: no queue turn, no database, no child."""

from __future__ import annotations

import pytest

import exercises
from exercises.catalogue import MAX_CODE_BYTES

STUB = exercises.get("latest-scores").stub


class Untouchable:
    """A cluster and a queue that fail the test if grading gets as far as using them."""

    def __getattr__(self, name):
        raise AssertionError(f"grading used {name!r} for code that cannot run")


@pytest.mark.parametrize(("code", "message"), [
    ("", "The editor is empty"),
    ("   \n\t\n", "The editor is empty"),
    ("def broken(:\n    pass\n", "Syntax error on line 1"),
    ("x = 1\n" * 200_000, "the limit is 64 KB"),
    ("x = 1\ny = '\x00'\n", "Line 2 holds a NUL character"),
    ("x = " + "(" * 300 + ")" * 300, "Syntax error on line 1: too many nested parentheses"),
    ("async def something_else():\n    pass\n", "must define `ScoreboardRepository.users_with_latest_score`"),
    (b"raw bytes", "The code must be text"),
])
async def test_code_that_cannot_run_gets_a_message_and_nothing_runs(code, message):
    assert message in (exercises.validate("latest-scores", code) or "")
    grade = await exercises.grade("latest-scores", code, cluster=Untouchable(), queue=Untouchable())
    assert (grade.ran, grade.passed, grade.checks) == (False, False, ())
    assert message in grade.message


def test_a_1_mb_paste_is_refused_by_its_size_before_it_is_parsed():
    paste = "#" * 2**20
    assert len(paste.encode()) > MAX_CODE_BYTES
    assert exercises.validate("latest-scores", paste) == (
        "The code is 1024 KB; the limit is 64 KB (an answer is 10 to 40 lines). Nothing was run.")


def test_a_syntax_error_names_its_line_and_text():
    message = exercises.validate("session-per-task", "async def lookup_all(sessions, user_ids):\n    return [\n")
    assert message == "Syntax error on line 2: '[' was never closed (return [). Nothing was run."


def test_the_starters_and_answer_keys_are_valid_code():
    for exercise in exercises.catalogue():
        assert exercises.validate(exercise.id, exercise.stub) is None
        assert exercises.validate(exercise.id, exercise.answer_key) is None


def test_an_unknown_exercise_is_named_in_the_error():
    with pytest.raises(ValueError, match="No exercise is called 'nope'; there are: session-per-task, latest-scores"):
        exercises.get("nope")
