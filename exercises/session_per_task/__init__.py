"""Section 2 (Understand): a session per task under asyncio.gather.

The starter shares one AsyncSession between 20 concurrent lookups, which fails on asyncpg (the
session is still provisioning its connection when the second task asks for it) or, on a session
that already holds a connection, makes the lookups wait for each other. Measured from the
exercise database's log: the transactions the lookups ran in, how many were open at once, and
the time against the same lookups one after another (run before the learner's code is loaded)."""

from __future__ import annotations

from pathlib import Path

from ..catalogue import CheckResult, Exercise
from ..checking import fresh_names, pick_users, statements_evidence, unknown_id

TASKS = 20
CHECKS = (
    f"{TASKS} lookups at once, without an error",
    "Each name is the one in the database",
    "One session per task",
    "The lookups ran at the same time",
)


async def before_load(run) -> dict:
    user_ids = await pick_users(run, TASKS - 1) + [unknown_id()]
    reference = await run.step("sequential", user_ids=user_ids)
    return {"user_ids": user_ids, "sequential_seconds": reference.seconds}


async def checks(run, state: dict):
    user_ids = state["user_ids"]
    expected = await fresh_names(run, user_ids[:-1])
    step = await run.step("lookup_all", user_ids=user_ids)
    answer, seen = step.answer, step.seen

    if answer.ok:
        yield CheckResult(CHECKS[0], True, f"lookup_all returned {TASKS} results without an error.")
    else:
        yield CheckResult(CHECKS[0], False, f"lookup_all raised {answer.error_text}",
                          evidence=statements_evidence(seen.statements))

    names = answer.value if answer.ok and isinstance(answer.value, list) else None
    wanted = [expected.get(user_id) for user_id in user_ids]
    if names == wanted:
        yield CheckResult(CHECKS[1], True, f"All {TASKS} names match the database (the last ID is no user's: None).")
    elif names is None:
        yield CheckResult(CHECKS[1], False, "No names came back: the call failed.")
    else:
        wrong = [(i, got, want) for i, (got, want) in enumerate(zip(names, wanted, strict=False)) if got != want]
        detail = f"{len(wrong)} of {TASKS} differ" if len(names) == TASKS else f"{len(names)} results for {TASKS} IDs"
        first = f"; e.g. at position {wrong[0][0]}: {wrong[0][1]!r}, the database has {wrong[0][2]!r}" if wrong else ""
        yield CheckResult(CHECKS[1], False, f"The names do not match the database: {detail}{first}.")

    transactions = seen.transactions()
    figures = {"transactions": len(transactions), "connections": seen.connections, "statements": seen.count}
    if not transactions:
        yield CheckResult(CHECKS[2], False, "No lookup reached the database (0 transactions).", figures)
    elif len(transactions) == TASKS:
        yield CheckResult(CHECKS[2], True, f"{TASKS} transactions for {TASKS} lookups, on {seen.connections} "
                          "connections: each task had a session of its own.", figures)
    else:
        yield CheckResult(CHECKS[2], False, f"{len(transactions)} transaction(s) for {TASKS} lookups, on "
                          f"{seen.connections} connection(s): the tasks shared a session, and a session is one "
                          "unit of work on one connection.", figures, statements_evidence(seen.statements))

    at_once = seen.most_at_once()
    sequential = state["sequential_seconds"]
    figures = {"most_transactions_at_once": at_once, "seconds": round(answer.seconds, 4),
               "sequential_seconds": round(sequential, 4),
               "speed_up": round(sequential / answer.seconds, 2) if answer.seconds else None}
    timing = (f"the {TASKS} lookups took {answer.seconds * 1000:.0f} ms, against {sequential * 1000:.0f} ms "
              "one after another")
    if not answer.ok:
        yield CheckResult(CHECKS[3], False, "Not measured: the call failed.", figures)
    elif at_once > 1:
        yield CheckResult(CHECKS[3], True, f"Up to {at_once} transactions were open at once: {timing}.", figures)
    else:
        yield CheckResult(CHECKS[3], False, f"At most {at_once} transaction was open at a time, so the lookups "
                          f"waited for each other: {timing}.", figures)


EXERCISE = Exercise(
    id="session-per-task",
    section="2",
    title="Twenty lookups at once: a session per task",
    folder=Path(__file__).resolve().parent,
    required_names=("lookup_all",),
    check_names=CHECKS,
    hints=(
        "An AsyncSession is one unit of work on one connection. Two tasks that run at the same time "
        "must not share it, even when they only read.",
        "Write a small `async def lookup(user_id)` inside lookup_all that opens `async with sessions() as "
        "session:` and returns `await find_name(session, user_id)`; then gather one lookup per ID.",
        "The pool hands each session a connection of its own, so the 20 lookups wait for the database side "
        "by side instead of one after another.",
    ),
    before_load=before_load,
    checks=checks,
)
