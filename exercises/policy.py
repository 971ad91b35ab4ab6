"""Whether learner code may run here, and if not, why: the page then shows the exercise read-only.

On a learner's own machine (no LAB_INSTRUCTOR_KEY) exercises run with the protections the
platform has, and the page says which are missing. On a shared server (LAB_INSTRUCTOR_KEY set)
they run only when the instructor turned them on and the OS sandbox (bubblewrap) is present.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import sandbox


@dataclass(frozen=True)
class Policy:
    allowed: bool
    reason: str  # why read-only; or, when allowed, how the code runs here
    shared: bool  # LAB_INSTRUCTOR_KEY is set
    missing: tuple[str, ...]  # protections this machine does not give


def policy(*, instructor_enabled: bool = False) -> Policy:
    caps = sandbox.capabilities()
    shared = bool(os.environ.get("LAB_INSTRUCTOR_KEY", ""))
    missing = tuple(caps.missing())

    def read_only(reason: str) -> Policy:
        return Policy(False, reason, shared, missing)

    if os.name != "posix":
        return read_only("Exercises need the lab's embedded PostgreSQL, which runs on Linux and macOS only.")
    if shared and not instructor_enabled:
        return read_only("This server is shared (LAB_INSTRUCTOR_KEY is set): exercises run here only once the "
                         "instructor turns them on.")
    if shared and not caps.os_sandbox:
        return read_only("This server is shared, and there exercises run only inside the OS sandbox "
                         "(bubblewrap, Linux), which this server does not have.")
    if caps.os_sandbox:
        how = "Your code runs in a sandbox (bubblewrap): no network, none of the app's files, its own database."
    else:
        how = "Your code runs in a separate process with its own database, without an OS sandbox."
    if missing:
        how += " Not available here: " + ", ".join(missing) + "."
    return Policy(True, how, shared, missing)
