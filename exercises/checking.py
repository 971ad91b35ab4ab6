"""What the exercises' checks share: the run's data as the grader writes and reads it (on its own
connection, which the child cannot see), and the server's statements written out as evidence."""

from __future__ import annotations

import re
import secrets
import uuid

from sqlalchemy import text

from .serverlog import Sent

EVIDENCE_LINES = 12
SQL_SHOWN = 240


_PARAMETERS = re.compile(r"\$(\d+)(::\w+)?(?:, \$\d+(?:::\w+)?)*, \$(\d+)(?:::\w+)?")


def short(sql: str) -> str:
    """One line; a long list of parameters folded ($1, ..., $600); the middle of a long statement
    left out, so that its WHERE clause still shows."""
    one_line = re.sub(r"\s+", " ", sql).strip()
    one_line = _PARAMETERS.sub(lambda m: f"${m[1]}{m[2] or ''}, ..., ${m[3]}", one_line)
    if len(one_line) <= SQL_SHOWN:
        return one_line
    return one_line[: SQL_SHOWN - 100] + " … " + one_line[-97:]


def statements_evidence(statements: list[Sent]) -> tuple[str, ...]:
    """The statements in the order sent, repeats of the same text folded into one line."""
    lines: list[list] = []
    for sent in statements:
        sql = short(sent.sql)
        if lines and lines[-1][1] == sql:
            lines[-1][0] += 1
        else:
            lines.append([1, sql])
    shown = [f"{count} x {sql}" if count > 1 else sql for count, sql in lines[:EVIDENCE_LINES]]
    if len(lines) > EVIDENCE_LINES:
        shown.append(f"... and {sum(count for count, _ in lines[EVIDENCE_LINES:])} more")
    return tuple(shown)


def unknown_id() -> str:
    return str(uuid.uuid4())


async def pick_users(run, count: int, *, scores: str = "any") -> list[str]:
    """IDs of `count` users of the run's database, at random; scores: "any", "none" or "several"."""
    having = {"any": "", "none": "HAVING count(s.id) = 0", "several": "HAVING count(s.id) >= 2"}[scores]
    result = await run.sql(text(
        f"SELECT u.id FROM users u LEFT JOIN air_scores s ON s.user_id = u.id GROUP BY u.id {having} "
        "ORDER BY random() LIMIT :n"), {"n": count})
    return [row.id for row in result]


async def fresh_names(run, user_ids: list[str]) -> dict[str, str]:
    """Rename these users to names the child cannot know in advance; returns id -> name."""
    names = {user_id: f"Learner {secrets.token_hex(3)}" for user_id in user_ids}
    await run.sql(text("UPDATE users SET name = :name WHERE id = :id"),
                  [{"id": user_id, "name": name} for user_id, name in names.items()])
    return names


async def names_of(run, user_ids: list[str]) -> dict[str, str]:
    result = await run.sql(text("SELECT id, name FROM users WHERE id = ANY(:ids)"), {"ids": list(user_ids)})
    return {row.id: row.name for row in result}
