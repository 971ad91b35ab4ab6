"""Section 3's repository pieces, drawn: UserRepository's source, its Protocol and the in-memory fake
(the reason for the pattern), and the query workbench the learner composes from fixed choices."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from labbench import workbench
from source.config import PROJECT_DIR
from source.repositories import UserRepository, UserRepositoryProtocol
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
