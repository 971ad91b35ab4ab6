"""Where learner code may run: a learner's own machine runs it with what the platform has; a shared
server (LAB_INSTRUCTOR_KEY) only once the instructor turned exercises on, and only in bubblewrap."""

from __future__ import annotations

import pytest

import exercises
from exercises import sandbox


@pytest.fixture
def without_bwrap(monkeypatch):
    real = sandbox.capabilities()
    monkeypatch.setattr(sandbox, "capabilities", lambda: sandbox.Capabilities(
        real.platform, None, real.setpriv, real.cgroup, real.cgroup_missing, real.redis_server))


@pytest.fixture
def with_bwrap(monkeypatch):
    real = sandbox.capabilities()
    monkeypatch.setattr(sandbox, "capabilities", lambda: sandbox.Capabilities(
        real.platform, "/usr/bin/bwrap", "/usr/bin/setpriv", "v1", "", real.redis_server))


def test_on_a_learners_own_machine_exercises_run_and_say_what_is_missing(monkeypatch, without_bwrap):
    monkeypatch.delenv("LAB_INSTRUCTOR_KEY", raising=False)
    decided = exercises.policy()
    assert decided.allowed and not decided.shared
    assert "no network" in decided.missing and "the app's files out of reach" in decided.missing
    assert decided.reason.startswith("Your code runs in a separate process with its own database, without an OS "
                                     "sandbox. Not available here: ")


def test_on_a_shared_server_exercises_are_read_only_until_the_instructor_turns_them_on(monkeypatch, with_bwrap):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "key")
    decided = exercises.policy(instructor_enabled=False)
    assert not decided.allowed and decided.shared
    assert "only once the instructor turns them on" in decided.reason
    assert exercises.policy(instructor_enabled=True).allowed


def test_on_a_shared_server_without_bubblewrap_exercises_stay_read_only_even_when_turned_on(monkeypatch, without_bwrap):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "key")
    decided = exercises.policy(instructor_enabled=True)
    assert not decided.allowed
    assert decided.reason == ("This server is shared, and there exercises run only inside the OS sandbox "
                              "(bubblewrap, Linux), which this server does not have.")


def test_with_bubblewrap_cgroups_and_setpriv_as_root_every_protection_is_present(with_bwrap):
    caps = sandbox.capabilities()
    if not caps.root:
        pytest.skip("the user-namespace case (not root) is another row of the table")
    assert caps.missing() == []
    assert {p.name: p.how for p in caps.protections()}["an unprivileged user"] == ("user nobody (setpriv), no "
                                                                                   "capabilities")


def test_this_machine_reports_what_it_gives():
    caps = sandbox.capabilities()
    names = [p.name for p in caps.protections()]
    assert names[:4] == ["fresh interpreter in a child process", "environment without secrets",
                         "throwaway working folder", "wall time"]
    assert set(caps.missing()) <= set(names)
