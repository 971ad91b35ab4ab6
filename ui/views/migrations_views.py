"""Section 6's pieces, drawn: the required-column revision (minimal, after the learner's prediction,
and hardened, with the diff), the schema steps (one view for section 6 and the instructor page), and
the drift check. Each result stays in session state until the learner runs it again."""

from __future__ import annotations

import inspect

import streamlit as st

import ui
from labbench import migrations
from source import migration_patterns
from source.database import Database
from ui import widgets


def predict_required_column(db: Database) -> None:
    outcomes = migrations.REQUIRED_COLUMN_OUTCOMES
    guess = st.radio("Your prediction", range(len(outcomes)), format_func=outcomes.__getitem__, index=None,
                     key="required_column_guess")
    if st.button("Run the minimal revision on a table with 3 rows", key="required_minimal", disabled=guess is None):
        with ui.errors_shown():
            st.session_state.required_minimal_result = (ui.run(migrations.required_column(db, hardened=False)), guess)
    if guess is None:
        st.caption("Choose a prediction to run it.")
    if shown := st.session_state.get("required_minimal_result"):
        run, guessed = shown
        verdict = "You predicted it." if guessed == run.outcome else f"You predicted: {outcomes[guessed]}."
        happened = outcomes[run.outcome] if run.outcome is not None else "something else"
        (st.error if run.error else st.success)(f"What happened: {happened}. {verdict}")
        _column_run(run)


def hardening(db: Database) -> None:
    widgets.show_diff(inspect.getsource(migration_patterns.add_plan_minimal),
                      inspect.getsource(migration_patterns.add_plan_hardened),
                      before="add_plan_minimal", after="add_plan_hardened")
    if st.button("Run the hardened revision on a table with 3 rows", key="required_hardened"):
        with ui.errors_shown():
            st.session_state.required_hardened_result = run = ui.run(migrations.required_column(db, hardened=True))
            if not run.error:
                ui.remember_figure("migrations", "required_column", f"a required column added to a table with "
                                   f"{len(run.plans)} rows in {len(run.sql)} statements, every row backfilled")
    if run := st.session_state.get("required_hardened_result"):
        (st.error if run.error else st.success)(
            f"The database refused: {widgets.escape_markdown(run.error)}" if run.error else
            f"It works: {len(run.plans)} rows, each with plan = "
            f"{', '.join(repr(p) for p in run.plans)}; the column now refuses NULL.")
        _column_run(run)


def _column_run(run: migrations.ColumnRun) -> None:
    st.code(";\n".join(run.sql) + ";", language="sql")
    refused = f" The database refused: {widgets.escape_markdown(run.error)}." if run.error else ""
    st.caption(f"What the revision sent, in order (SQLite's reads of the table's definition left out).{refused} "
               "The table was this run's own, in a transaction rolled back after it.")


def step_buttons(db: Database, *, current: str | None, head: str, key_prefix: str = "") -> None:
    """Upgrade or downgrade one step, with what it does while it runs and an account of what changed.
    Section 6 and the instructor page draw it (each behind the instructor's gate when a key is set)."""
    up_col, down_col = st.columns(2)
    direction = None
    if up_col.button("Upgrade one step", disabled=current == head, key=f"{key_prefix}upgrade_step"):
        direction = "up"
    if down_col.button("Downgrade one step", disabled=current is None, key=f"{key_prefix}downgrade_step"):
        direction = "down"
    key = f"{key_prefix}migration_step"
    if direction == "down" and ui.publisher().running:
        # Its relay and consumer read and write what a downgrade drops (from 0006: each event's number
        # and stream entry ID): every cycle would fail, and every new score too, until an upgrade.
        down_col.warning("Stop the outbox publisher first (section 5): a downgrade drops tables or columns its "
                         "relay and consumer use, and each of their cycles would fail until the schema is "
                         "upgraded again. Publishers in other app processes are not stopped by this page.")
        direction = None
    if direction:
        def done(_result) -> None:
            ui.backend_status.clear()

        with ui.errors_shown():
            step = "upgrade" if direction == "up" else "downgrade"
            ui.run_then_rerun(lambda report: migrations.step(db, direction=direction, report=report),
                              label=f"One {step} step from {current or 'base'}", about=2, key=key, then=done,
                              timeout=120)
    if (result := ui.show_kept(key)) is not None:
        st.session_state[f"{key}_result"] = result
    if (result := st.session_state.get(f"{key}_result")) is not None:
        step_result(result)


def step_result(result: migrations.StepResult) -> None:
    st.success(f"Migrated from {result.before or 'base'} to {result.after or 'base'}.")
    changes = {
        "tables added": result.tables_added, "tables dropped": result.tables_dropped,
        "columns added": result.columns_added, "columns dropped": result.columns_dropped,
        "indexes added": result.indexes_added, "indexes dropped": result.indexes_dropped,
    }
    for label, names in changes.items():
        if names:
            st.markdown(f"**{label}:** " + ", ".join(f"`{n}`" for n in names))


def drift_check(db: Database) -> None:
    if st.button("Run drift check", key="drift_check"):
        with ui.errors_shown():
            st.session_state.drift_result = differences = ui.run(migrations.drift(db))
            ui.mark_done("migrations")
            if not differences:
                revision = ui.run(db.current_revision())
                ui.remember_figure("migrations", "drift", f"no drift between the models and the schema at revision "
                                   f"{revision}")
    differences = st.session_state.get("drift_result")
    if differences:
        st.warning(f"{len(differences)} difference(s) between the models and the database:")
        st.code("\n".join(differences), language=None)
    elif differences is not None:
        st.success("No drift: the tables, columns, column types, nullability, indexes, unique constraints and "
                   "foreign keys match the models.")
