"""Section 3 (Apply): a repository method that returns N users with their latest score.

Graded on what it returns (against the run's database, with scores the grader adds just before
each call) and on the statements PostgreSQL received for 1, 50 and 600 users: at most
1 + ceil(N/500), since selectinload sends the parents' IDs 500 at a time (SelectInLoader._chunksize
in sqlalchemy/orm/strategies.py)."""

from __future__ import annotations

import math
import secrets
import uuid
from pathlib import Path

from sqlalchemy import text

from ..catalogue import CheckResult, Exercise
from ..checking import pick_users, statements_evidence, unknown_id

SIZES = (1, 50, 600)
CHUNK = 500  # selectinload's IN-list size


def bound(n: int) -> int:
    return 1 + math.ceil(n / CHUNK)


CHECKS = ("Returns each user with their latest score, in order",
          *(f"Statements for {n} user{'s' if n > 1 else ''}: at most {bound(n)}" for n in SIZES))


async def before_load(run) -> dict:
    several = await pick_users(run, 2, scores="several")
    none = await pick_users(run, 1, scores="none")
    calls = {"contract": [several[0], unknown_id(), none[0], *await pick_users(run, 1)]}
    calls |= {n: [several[1]] if n == 1 else await pick_users(run, n) for n in SIZES}
    return {"calls": calls}


async def add_fresh_scores(run, user_ids: list[str]) -> None:
    """A newest score for a few of the users, just before the call: a method that read the
    scores earlier (when its module was imported, say) returns an old one."""
    rows = [{"id": str(uuid.uuid4()), "user_id": user_id, "score": 50 + secrets.randbelow(4500) / 100}
            for user_id in user_ids]
    await run.sql(text(
        "INSERT INTO air_scores (id, user_id, occupation_code, air_score, vr_score, hr_score, synergy_score, "
        "ci_lower, ci_upper, parameter_version, calculation_metadata, created_at, updated_at) SELECT :id, "
        ":user_id, 'DEV_ENG', s, s, s, s, s - 3, s + 3, 'v1', '{}', clock_timestamp(), clock_timestamp() "
        "FROM CAST(:score AS double precision) AS s"), rows)


async def expected(run, user_ids: list[str]) -> list[list]:
    existing = {row.id for row in await run.sql(text("SELECT id FROM users WHERE id = ANY(:ids)"), {"ids": user_ids})}
    latest = {row.user_id: row.id for row in await run.sql(text(
        "SELECT DISTINCT ON (user_id) user_id, id FROM air_scores WHERE user_id = ANY(:ids) "
        "ORDER BY user_id, created_at DESC, id DESC"), {"ids": user_ids})}
    return [[user_id, latest.get(user_id)] for user_id in user_ids if user_id in existing]


def difference(got, want: list[list], label: str) -> str | None:
    if got == want:
        return None
    if not isinstance(got, list):
        return f"{label}: no result"
    if len(got) != len(want):
        return (f"{label}: {len(got)} rows, {len(want)} expected (one per existing user, in the order of the IDs; "
                "an ID that no user has is left out)")
    for (got_user, got_score), (user, score) in zip(got, want, strict=True):
        if got_user != user:
            return f"{label}: user {got_user} where {user} was expected (the order of the IDs)"
        if got_score != score:
            return (f"{label}: user {user} came with score {got_score}; their latest is {score}"
                    if score else f"{label}: user {user} has no score, and came with {got_score}")
    return f"{label}: a different result"


async def checks(run, state: dict):
    steps, wrong = {}, []
    for key, user_ids in state["calls"].items():
        # The contract's call keeps its user without scores, and its unknown ID, as they are.
        await add_fresh_scores(run, user_ids[:1] if key == "contract" else user_ids[:5])
        want = await expected(run, user_ids)
        steps[key] = step = await run.step("latest", user_ids=user_ids)
        label = "the first call" if key == "contract" else f"for {key} user{'s' if key > 1 else ''}"
        if not step.answer.ok:
            wrong.append(f"{label}: it raised {step.answer.error_text}")
        elif (problem := difference(step.answer.value, want, label)) is not None:
            wrong.append(problem)
    if wrong:
        yield CheckResult(CHECKS[0], False, wrong[0][0].upper() + wrong[0][1:] + ".",
                          {"calls_wrong": len(wrong)}, tuple(wrong[1:]))
    else:
        yield CheckResult(CHECKS[0], True, "Every call returned each user with their latest score, in the order "
                          "of the IDs, without the ID that no user has.")
    for n, name in zip(SIZES, CHECKS[1:], strict=True):
        step = steps[n]
        count, most = step.seen.count, bound(n)
        figures = {"users": n, "statements": count, "at_most": most}
        evidence = statements_evidence(step.seen.statements)
        said = f"{count} statement{'s' if count != 1 else ''} for {n} user{'s' if n > 1 else ''} (at most {most})"
        if not step.answer.ok:
            yield CheckResult(name, False, f"{said}, but the call raised {step.answer.error_text}", figures, evidence)
        elif count <= most:
            yield CheckResult(name, True, f"{said}.", figures, evidence)
        else:
            why = (": one SELECT more for each user, the N+1 problem. Load the scores of all the users in one go"
                   if count >= n + 1 else "")
            yield CheckResult(name, False, f"{said}{why}.", figures, evidence)


EXERCISE = Exercise(
    id="latest-scores",
    section="3",
    title="Users with their latest score, without the N+1",
    folder=Path(__file__).resolve().parent,
    required_names=("ScoreboardRepository.users_with_latest_score",),
    check_names=CHECKS,
    hints=(
        "Awaiting each user's scores (or calling a get_latest_score per user) sends one SELECT per user: "
        "1 + N statements for N users.",
        "Ask for every user at once (`select(User).where(User.id.in_(user_ids))`) and add "
        "`.options(selectinload(User.scores))`: SQLAlchemy then loads all their scores with one more SELECT.",
        "The latest score is the one with the newest created_at: "
        "`max(user.scores, key=lambda s: s.created_at, default=None)`. Return the rows in the order of user_ids.",
        "selectinload sends the users' IDs 500 at a time, so 600 users take 3 statements: that is why the "
        "limit is 1 + ceil(N / 500).",
    ),
    before_load=before_load,
    checks=checks,
)
