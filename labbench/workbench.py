"""3. The query workbench: a query over users composed from fixed choices (a filter, an order, a
limit, and a loader per relationship), never from typed code. Field names and operators come
from allow-lists, the value is bound as a parameter, and everything is validated before anything
is sent. It shows the SQL compiled for the database's dialect, then runs it read-only and
returns the rows, the statements sent and the time."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload, selectinload

from source.database import Database
from source.errors import InvalidInput, check_visible
from source.models import User

from .recorder import StatementLog, record

# The columns a learner may filter or order by, and the kind of value each holds.
TEXT_FIELDS = ("email", "name", "occupation_code", "education_level")
NUMBER_FIELDS = ("years_experience",)
FILTER_FIELDS = TEXT_FIELDS + NUMBER_FIELDS
ORDER_FIELDS = ("email", "name", "years_experience", "created_at")
TEXT_OPERATORS = ("equals", "not equal", "contains", "starts with")
NUMBER_OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
DIRECTIONS = ("ascending", "descending")
MAX_LIMIT = 100
MAX_VALUE_LENGTH = 255

# Each relationship of User and how to load it. "not loaded": the query leaves it alone and the
# rows do not show it; "lazy": no loader option, then each row's attribute is awaited
# (awaitable_attrs), one SELECT per row; "select-in": one more SELECT ... IN for all the rows;
# "joined": a LEFT OUTER JOIN inside the same statement.
RELATIONSHIPS = ("profile", "skills", "scores", "assessments")
LOADERS = ("not loaded", "lazy", "select-in", "joined")


@dataclass(frozen=True)
class Composition:
    filter_field: str | None = None  # None: no filter
    operator: str | None = None
    value: str | float | None = None
    order_field: str = "email"
    direction: str = "ascending"
    limit: int = 10
    loaders: Mapping[str, str] = field(default_factory=dict)  # relationship -> one of LOADERS


@dataclass(frozen=True)
class Built:
    statement: Select
    lazy: tuple[str, ...]  # relationships to await per row after the query
    shown: tuple[str, ...]  # relationships whose contents the rows show


@dataclass(frozen=True)
class WorkbenchResult:
    sql: str  # the first statement, compiled for the dialect, with placeholders
    parameters: dict[str, Any]  # the values bound to the placeholders
    rows: list[dict[str, Any]]
    statements: list[str]  # every data statement sent, in order (BEGIN is not one)
    seconds: float  # from sending the first statement to the last row's last relationship
    log: StatementLog  # everything the session sent: pre-ping, BEGIN, the data statements, ROLLBACK


def _choice(value: Any, allowed: tuple[str, ...], *, field: str, label: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"Choose a {label} from: {', '.join(allowed)}.", field=field)
    return value


def build(composition: Composition) -> Built:
    """The select for a composition, or InvalidInput naming the first bad field."""
    conditions = []
    if composition.filter_field is not None:
        name = _choice(composition.filter_field, FILTER_FIELDS, field="filter_field", label="filter field")
        column = getattr(User, name)
        if name in NUMBER_FIELDS:
            operator = _choice(composition.operator, NUMBER_OPERATORS, field="operator", label="operator")
            number = _number(composition.value, label=name.replace("_", " "))
            conditions.append({
                "=": column == number, "!=": column != number, "<": column < number,
                "<=": column <= number, ">": column > number, ">=": column >= number,
            }[operator])
        else:
            operator = _choice(composition.operator, TEXT_OPERATORS, field="operator", label="operator")
            text = _text(composition.value)
            conditions.append({
                "equals": lambda: column == text,
                "not equal": lambda: column != text,
                # Case-insensitive on both backends (lower() LIKE lower()); autoescape makes % and _
                # in the value match themselves instead of acting as wildcards.
                "contains": lambda: column.icontains(text, autoescape=True),
                "starts with": lambda: column.istartswith(text, autoescape=True),
            }[operator]())
    order_name = _choice(composition.order_field, ORDER_FIELDS, field="order_field", label="field to order by")
    direction = _choice(composition.direction, DIRECTIONS, field="direction", label="direction")
    limit = composition.limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"The limit is a whole number from 1 to {MAX_LIMIT}.", field="limit")
    unknown = sorted(set(composition.loaders) - set(RELATIONSHIPS))
    if unknown:
        raise InvalidInput(f"User has no relationship {unknown[0]!r}; it has: {', '.join(RELATIONSHIPS)}.",
                           field="loaders")
    options, lazy, shown = [], [], []
    for relationship in RELATIONSHIPS:
        loader = _choice(composition.loaders.get(relationship, "not loaded"), LOADERS,
                         field=f"loader_{relationship}", label=f"loader for {relationship}")
        attribute = getattr(User, relationship)
        if loader == "select-in":
            options.append(selectinload(attribute))
        elif loader == "joined":
            options.append(joinedload(attribute))
        elif loader == "lazy":
            lazy.append(relationship)
        if loader != "not loaded":
            shown.append(relationship)
    order_column = getattr(User, order_name)
    ordering = order_column.asc() if direction == "ascending" else order_column.desc()
    # User.id breaks ties, so that the same composition returns the same rows every time.
    statement = select(User).where(*conditions).order_by(ordering, User.id).limit(limit).options(*options)
    return Built(statement, tuple(lazy), tuple(shown))


def _text(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise InvalidInput("Enter a value to filter by.", field="value")
    if len(text) > MAX_VALUE_LENGTH:
        raise InvalidInput(f"The value is {len(text)} characters long; at most {MAX_VALUE_LENGTH} fit.",
                           field="value")
    return check_visible(text, field="value", label="value")


def _number(value: Any, *, label: str) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{str(value)[:40]!r} is not a number; {label} is compared with numbers.",
                           field="value") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise InvalidInput(f"{str(value)[:40]!r} is not a finite number.", field="value")
    return number


def compiled_sql(db: Database, statement: Select) -> tuple[str, dict[str, Any]]:
    """The statement as this database's dialect writes it, and the values bound to it."""
    compiled = statement.compile(dialect=db.engine.dialect)
    return str(compiled), dict(compiled.params)


def predicted_statements(composition: Composition, rows: int) -> int:
    """What the loaders imply for a result of `rows` rows: the query itself, one SELECT per row
    per lazy relationship, one SELECT ... IN per select-in relationship (when there is a row to
    load for; limit <= 100 keeps it inside one batch of 500), nothing for a joined one."""
    built = build(composition)
    selectin = sum(composition.loaders.get(r) == "select-in" for r in RELATIONSHIPS)
    return 1 + rows * len(built.lazy) + (selectin if rows else 0)


def _summary(user: User, relationship: str) -> str | int | None:
    value = getattr(user, relationship)
    if relationship == "profile":
        return value.headline if value is not None else None
    if relationship == "skills":
        return ", ".join(skill.name for skill in value)
    return len(value)  # scores, assessments: how many


async def run(db: Database, composition: Composition) -> WorkbenchResult:
    """Validate (nothing is sent if that fails), then run the query in a session of its own that is
    never committed, await the lazy relationships row by row, and report what was sent."""
    built = build(composition)
    sql, parameters = compiled_sql(db, built.statement)
    with record(db) as log:
        async with db.sessions() as session:  # never committed: closing it rolls back
            started = time.perf_counter()
            result = await session.execute(built.statement)
            users = list(result.unique().scalars())  # unique(): a joined collection repeats the user
            for user in users:
                for relationship in built.lazy:
                    await getattr(user.awaitable_attrs, relationship)
            seconds = time.perf_counter() - started
        rows = [
            {"email": u.email, "name": u.name, "occupation_code": u.occupation_code,
             "years_experience": u.years_experience,
             **{relationship: _summary(u, relationship) for relationship in built.shown}}
            for u in users
        ]
    return WorkbenchResult(sql=sql, parameters=parameters, rows=rows, statements=log.sql, seconds=seconds, log=log)
