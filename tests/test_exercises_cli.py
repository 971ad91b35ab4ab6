"""`python -m exercises list` and `python -m exercises grade EXERCISE FILE`, run as an instructor
would, in a data folder of their own (the exercise cluster is started in it and stopped at exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import exercises
from source.config import PROJECT_DIR


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-data")


def run(*args: str, data_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "exercises", *args], capture_output=True, text=True, cwd=PROJECT_DIR,
                          env=env, timeout=180)


def test_list_prints_one_exercise_a_line_its_id_first(data_dir):
    listed = run("list", data_dir=data_dir)
    assert listed.returncode == 0
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == [e.id for e in exercises.catalogue()]
    assert listed.stdout.splitlines()[1] == "latest-scores\tsection 3\tUsers with their latest score, without the N+1"


@pytest.fixture
def sandbox_present():
    if not exercises.capabilities().os_sandbox:
        pytest.skip("bubblewrap (bwrap) is not installed: .ci/run installs it")


def test_grade_exits_0_when_every_check_passes_and_prints_each_check(tmp_path, data_dir, sandbox_present):
    submission = tmp_path / "key.py"
    submission.write_text(exercises.get("latest-scores").answer_key)
    graded = run("grade", "latest-scores", str(submission), data_dir=data_dir)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    result = json.loads(graded.stdout)
    assert result["passed"] and [check["passed"] for check in result["checks"]] == [True] * 4
    assert result["checks"][2]["figures"] == {"users": 50, "statements": 2, "at_most": 2}


def test_grade_exits_1_when_a_check_fails(tmp_path, data_dir, sandbox_present):
    submission = tmp_path / "stub.py"
    submission.write_text(exercises.get("latest-scores").stub)
    graded = run("grade", "latest-scores", str(submission), data_dir=data_dir)
    assert graded.returncode == 1
    assert json.loads(graded.stdout)["checks"][0]["message"].startswith("The first call: it raised NotImplementedError")


def test_grade_exits_2_when_the_code_cannot_run_or_the_exercise_or_file_does_not_exist(tmp_path, data_dir):
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    graded = run("grade", "latest-scores", str(broken), data_dir=data_dir)
    assert graded.returncode == 2 and json.loads(graded.stdout)["message"].startswith("Syntax error on line 1")
    assert run("grade", "no-such-exercise", str(broken), data_dir=data_dir).returncode == 2
    assert run("grade", "latest-scores", str(tmp_path / "missing.py"), data_dir=data_dir).returncode == 2
