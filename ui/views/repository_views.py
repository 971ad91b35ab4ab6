"""Section 3's pieces, drawn: the minimal repository and the diff that hardens its list, the
statements a load sent and the comparison of the strategies, UserRepository's source with its
Protocol and the in-memory fake (the reason for the pattern), and the query workbench the learner
composes from fixed choices."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from labbench import loading, workbench
from labbench.recorder import StatementLog
from source.config import PROJECT_DIR
from source.repositories import MinimalUserRepository, UserRepository, UserRepositoryProtocol
from ui import widgets

FAKE = PROJECT_DIR / "tests" / "fakes.py"
CONTRACT = PROJECT_DIR / "tests" / "test_repository_contract.py"
NO_FILTER = "(no filter)"
# The workbench's starting composition: one relationship of each loading kind but assessments.
DEFAULT_LOADERS = {"profile": "lazy", "skills": "select-in", "scores": "joined", "assessments": "not loaded"}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


KINDS = {"data": "statement", "transaction": "transaction control", "ping": "pool pre-ping"}
CONNECTION_NOTE = (
    "Besides the data statements, each session's connection carries its BEGIN, its COMMIT or ROLLBACK, "
    "and the pool's pre-ping when it checks the connection out (on asyncpg, outside a transaction, that "
    "is BEGIN; `;`; ROLLBACK: three commands). Each command waits for the server's answer before the "
    "next. On PostgreSQL a command is not always one round trip: asyncpg runs each statement as a "
    "prepared one, and its first use on a connection takes one more, to prepare it; SQLAlchemy keeps a "
    "connection's last 100 prepared statements, so a repeat on that connection skips it."
)


def minimal_code() -> str:
    _line, code = widgets.class_source(MinimalUserRepository)
    return code


def selectin_diff() -> str:
    """The minimal repository's lazy list against UserRepository's select-in list, from the source."""
    return widgets.code_diff(inspect.getsource(MinimalUserRepository.list_with_scores),
                             inspect.getsource(UserRepository.list_with_scores_selectin),
                             before="MinimalUserRepository", after="UserRepository")


def sent(log: StatementLog) -> None:
    """Every command a load sent, in order, in an expander (never inside another one)."""
    with st.expander(f"Show all {log.commands} commands in the order sent"):
        for number, entry in enumerate(log.sent, start=1):
            many = f" ({entry.commands} commands)" if entry.commands > 1 else ""
            st.code(f"-- {number}. {KINDS[entry.kind]}{many} · {entry.seconds * 1000:.2f} ms\n{entry.sql.strip()}",
                    language="sql")


def run_figures(run: loading.LoadRun) -> None:
    """One strategy's measured result: data statements, the time, the data, everything sent."""
    st.markdown(f"**Statements sent: {run.log.count}**")
    runs = f"median of {run.runs} runs" if run.runs > 1 else "one run"
    st.caption(f"{run.seconds * 1000:.1f} ms, session open to data in hand ({runs}) · {len(run.users)} users, "
               f"{run.score_count} scores · {run.log.commands} commands in all")
    sent(run.log)


def list_runs(runs: list[tuple[int, loading.LoadRun]]) -> None:
    """Each run of the team page: the learner's prediction beside what was measured."""
    if not runs:
        return
    guess, last = runs[-1]
    n = len(last.users)
    verdict = "right" if guess == last.log.count else f"{'under' if guess < last.log.count else 'over'} by {abs(guess - last.log.count)}"
    st.markdown(f"You predicted **{guess}**; the team page sent **{last.log.count} statements** for {n} users "
                f"({verdict}): one SELECT for the users, then one per user as its scores were awaited.")
    sent(last.log)
    st.dataframe(pd.DataFrame({
        "users": [len(run.users) for _, run in runs], "you predicted": [g for g, _ in runs],
        "statements sent": [run.log.count for _, run in runs], "ms": [round(run.seconds * 1000, 1) for _, run in runs],
    }), hide_index=True)


def comparison(runs: list[loading.LoadRun]) -> None:
    for column, run in zip(st.columns(len(runs)), runs, strict=True):
        with column:
            st.markdown(f"**{run.strategy}**")
            run_figures(run)
    if all(run.users == runs[0].users for run in runs):
        st.success(f"All three returned the same {len(runs[0].users)} users and {runs[0].score_count} scores.")
    else:
        st.error("The strategies returned different data.")
    frame = pd.DataFrame(
        {"strategy": run.strategy, "data statements": run.log.count, "commands in all": run.log.commands,
         "median ms": run.seconds * 1000}
        for run in runs
    )
    left, right = st.columns(2)
    left.bar_chart(frame, x="strategy", y=["data statements", "commands in all"], sort=False, stack=False, height=220)
    right.bar_chart(frame, x="strategy", y="median ms", sort=False, height=220)
    by_name = {run.strategy: run for run in runs}
    lazy, joined, selectin = by_name.get("lazy"), by_name.get("joined"), by_name.get("selectin")
    if lazy and selectin and joined:
        extra = selectin.log.commands - selectin.log.count
        said = [f"Lazy took {lazy.seconds / selectin.seconds:.1f}× select-in's time here. Each session also sent "
                f"commands besides its data statements (select-in's: {extra}): transaction control and the pool's "
                "pre-ping (its check that a pooled connection is still alive)."]
        if joined.seconds > selectin.seconds:
            rows = sum(max(1, len(user.scores)) for user in joined.users)
            said.append(f"Joined sent fewer statements but took longer: its one result repeats each user's columns "
                        f"on every score row ({rows} rows for {len(joined.users)} users), folded back by `.unique()`.")
        st.caption(" ".join(said))


def figure(runs: list[loading.LoadRun]) -> str:
    """The key figure the learner's progress keeps: statements for N users, before and after."""
    counts = ", ".join(f"{run.strategy} {run.log.count}" for run in runs)
    return f"{len(runs[0].users)} users: statements sent {counts}"


def contract_tests(text: str) -> list[str]:
    """The contract suite's tests that take a repository: each runs on every implementation."""
    return re.findall(r"^async def (test_\w+)\(repo\b", text, flags=re.M)


def repository_code() -> None:
    st.markdown(
        "`UserRepositoryProtocol` states what a caller may rely on: it is a `typing.Protocol`, so any class "
        "with these methods fits it without inheriting from it. `UserRepository` implements it on an "
        "`AsyncSession`; the tests' `InMemoryUserRepository` implements it on a dict."
    )
    for cls, title in ((UserRepositoryProtocol, "The interface"), (UserRepository, "The SQLAlchemy repository")):
        line, code = widgets.class_source(cls)
        widgets.code_expander(f"{title}: `{cls.__name__}` (source/repositories.py, line {line})", code)
    fake, contract = _read(FAKE), _read(CONTRACT)
    if fake is None or contract is None:
        st.caption("This copy of the lab was installed without its tests/ folder, so the fake is not shown.")
        return
    widgets.code_expander("The fake: `InMemoryUserRepository` (tests/fakes.py)", fake)
    names = contract_tests(contract)
    st.markdown(
        f"**Why the pattern pays:** in tests/test_repository_contract.py, {len(names)} contract tests take a "
        "repository, and each runs against three: the fake, and `UserRepository` over SQLite and over PostgreSQL. Code "
        "written against the Protocol can take the fake in a test and run with no database, and while the "
        "suite passes, the fake does what the real one does in everything the suite checks. (The lab's own "
        "services build a `UserRepository` on the session they open.)"
    )
    st.caption("Contract tests: " + ", ".join(f"`{name}`" for name in names))


def workbench_form(db) -> None:
    """The composer's widgets, a run button, and the last result. Every choice comes from a fixed list;
    the one typed value is bound as a parameter. A bad one is named next to its widget and runs nothing."""
    state = st.session_state
    slots: dict[str, object] = {}
    left, middle, right = st.columns(3)
    with left:
        field = st.selectbox("Filter on", (NO_FILTER, *workbench.FILTER_FIELDS), key="wb_filter_field")
        slots["filter_field"] = st.empty()
        numeric = field in workbench.NUMBER_FIELDS
        operators = workbench.NUMBER_OPERATORS if numeric else workbench.TEXT_OPERATORS
        operator = st.selectbox("Operator", operators, key=f"wb_operator_{'number' if numeric else 'text'}",
                                disabled=field == NO_FILTER)
        slots["operator"] = st.empty()
        value = st.text_input("Value", key="wb_value", disabled=field == NO_FILTER,
                              help="Sent as a bound parameter, never as SQL text.")
        slots["value"] = st.empty()
    with middle:
        order = st.selectbox("Order by", workbench.ORDER_FIELDS, key="wb_order_field")
        slots["order_field"] = st.empty()
        direction = st.selectbox("Direction", workbench.DIRECTIONS, key="wb_direction")
        slots["direction"] = st.empty()
        limit = st.number_input("Limit", 1, workbench.MAX_LIMIT, 10, key="wb_limit")
        slots["limit"] = st.empty()
    with right:
        loaders = {}
        for relationship in workbench.RELATIONSHIPS:
            loaders[relationship] = st.selectbox(
                f"Load User.{relationship}", workbench.LOADERS,
                index=workbench.LOADERS.index(DEFAULT_LOADERS[relationship]), key=f"wb_loader_{relationship}")
            slots[f"loader_{relationship}"] = st.empty()
    slots["loaders"] = st.empty()
    if st.button("Run the query", key="wb_run"):
        state.pop("wb_result", None)
        composition = workbench.Composition(
            filter_field=None if field == NO_FILTER else field, operator=operator, value=value,
            order_field=order, direction=direction, limit=int(limit), loaders=loaders,
        )
        with ui.errors_shown(fields=slots):
            result = ui.run(workbench.run(db, composition))
            state.wb_result = (result, composition, workbench.predicted_statements(composition, len(result.rows)))
    if (shown := state.get("wb_result")) is not None:
        workbench_result(*shown)


def workbench_result(result: workbench.WorkbenchResult, composition: workbench.Composition, predicted: int) -> None:
    st.markdown("**The first statement, as this database's dialect writes it**")
    st.code(result.sql, language="sql", wrap_lines=True)
    if result.parameters:
        st.caption("Bound parameters: " + ", ".join(f"`{k}` = `{v!r}`" for k, v in result.parameters.items()))
    widgets.show_statements(result.log, label="Data statements the workbench sent")
    lazy = sum(loader == "lazy" for loader in composition.loaders.values())
    selectin = sum(loader == "select-in" for loader in composition.loaders.values()) if result.rows else 0
    n = len(result.rows)
    st.caption(
        f"What the loaders predict for {n} row{'s' * (n != 1)}: 1 query + {n} × {lazy} lazy relationship"
        f"{'s' * (lazy != 1)} + {selectin} select-in (joined ones add none) = {predicted}."
    )
    st.caption(f"Time: {result.seconds * 1000:.1f} ms from sending the first statement to the last row's last "
               "relationship loaded, the ORM's work included.")
    if result.rows:
        st.dataframe(pd.DataFrame(result.rows), hide_index=True, width="stretch")
    else:
        st.info("No user matches this filter.")


def lazy_load_errors(db) -> None:
    """What a plain lazy load does in async code, and what raiseload makes of it, as SQLAlchemy raises it."""
    state = st.session_state
    st.markdown(
        "In synchronous SQLAlchemy, reading an unloaded `user.scores` quietly sends a query: the "
        "hidden N+1. An async session cannot do I/O inside a plain attribute access, so the same line "
        "raises. `raiseload(User.scores)` (or `lazy=\"raise\"` on the relationship) makes the rule "
        "explicit: any access that was not loaded up front fails loudly, in tests, before production."
    )
    for column, action, label in zip(
        st.columns(2), (loading.plain_lazy_load, loading.raiseload_access),
        ("Read user.scores without await", "Read it under raiseload(User.scores)"), strict=True,
    ):
        with column:
            key = f"n1_{action.__name__}"
            if st.button(label, key=key):
                with ui.errors_shown():
                    state[f"{key}_caught"] = ui.run(action(db, user_id=state.user_alex_id or ""))
            if (caught := state.get(f"{key}_caught")) is not None:
                st.markdown("SQLAlchemy raised:")
                st.code(caught.exception + (f"\n  caused by {caught.cause}" if caught.cause else ""), language=None)
                st.code(caught.message, language=None, wrap_lines=True)
                if caught.cause:
                    st.caption(
                        "The driver failed inside execute, so SQLAlchemy wrapped MissingGreenlet in a "
                        "StatementError with the statement it could not run (asyncpg fails earlier and "
                        "raises MissingGreenlet itself):"
                    )
                    st.code(caught.sql, language="sql", wrap_lines=True)
