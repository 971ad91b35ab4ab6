import pandas as pd
import streamlit as st

import ui
from labbench import migrations
from ui import checks, gate

ui.page("6. Schema Migrations")
st.title("6. Schema Migrations with Alembic")
st.markdown(
    "Alex's models will keep changing: section 5 already needed new outbox columns. Editing "
    "tables by hand on every server does not scale, so each change is a **revision**: a small "
    "script with `upgrade()` and `downgrade()`, chained to its parent. The database records the "
    "revision it is at in `alembic_version`, and `alembic upgrade head` walks the chain from there. "
    "This lab's schema was created this way: the initialise button in section 2 runs the same "
    "migrations as the command line."
)

db = ui.database()


@st.cache_data(show_spinner=False, max_entries=100)
def offline_sql(backend: str, from_revision: str | None, to_revision: str, scripts: tuple) -> str:
    """Rendered once per dialect and pair of revisions: the same scripts give the same SQL."""
    return migrations.offline_sql(db, from_revision=from_revision, to_revision=to_revision)


scripts = migrations.scripts_on_disk()
with ui.errors_shown():
    current = ui.run(db.current_revision())
    history = migrations.history_as_on_disk()
    head = history[-1].revision

    st.subheader("Revision history")
    st.dataframe(
        pd.DataFrame(
            {
                "revision": r.revision,
                "parent": r.down_revision or "(base)",
                "message": r.message,
                "file": r.filename,
                "database": "◀ here" if r.revision == current else "",
                "head": "head" if r.is_head else "",
            }
            for r in history
        ),
        hide_index=True,
        width="stretch",
    )
    st.markdown(f"The database is at **{current or 'base (empty schema)'}**; the newest revision is **{head}**.")
    for revision in history:
        with st.expander(f"{revision.revision}: {revision.message}"):
            st.code(migrations.source_as_on_disk(revision.revision), language="python")

    st.subheader("See the SQL before it runs")
    st.markdown(
        "Alembic's offline mode renders a migration as SQL for this database's dialect "
        f"({db.backend}) without running it: what a DBA reviews before a release."
    )
    targets = ["base"] + [r.revision for r in history]
    target = st.selectbox("Target revision", [t for t in targets if t != (current or "base")], key="sql_target")
    if target:
        st.code(offline_sql(db.backend, current, target, scripts), language="sql")

    st.subheader("Upgrade or downgrade one step")
    st.markdown(
        "A downgrade runs the revision's `downgrade()`: it drops what the upgrade added, data "
        "included. Upgrade again to return; the sample users come back with section 2's button. Below "
        "0004 the learners' saved progress is dropped, and until an upgrade each learner's progress "
        "stays in their browser tab only."
    )
    st.caption("With `LAB_INSTRUCTOR_KEY` set, the room-wide actions (Initialize when it migrates, reset, the publisher, "
           "broker faults, the relay crash, failed events, schema steps) are also gathered on **7. Instructor**, "
           "with the room's progress.")
    if gate.instructor_key_ok("Changing the schema", key="migrate_key"):
        up_col, down_col = st.columns(2)
        direction = None
        if up_col.button("Upgrade one step", disabled=current == head, key="upgrade_step"):
            direction = "up"
        if down_col.button("Downgrade one step", disabled=current is None, key="downgrade_step"):
            direction = "down"
        if direction:
            st.session_state.migration_step = ui.run(migrations.step(db, direction=direction), timeout=120)
            ui.backend_status.clear()
            st.rerun()  # redraw the history with the new revision
    result = st.session_state.get("migration_step")
    if result is not None:
        st.success(f"Migrated from {result.before or 'base'} to {result.after or 'base'}.")
        changes = {
            "tables added": result.tables_added, "tables dropped": result.tables_dropped,
            "columns added": result.columns_added, "columns dropped": result.columns_dropped,
            "indexes added": result.indexes_added, "indexes dropped": result.indexes_dropped,
        }
        for label, names in changes.items():
            if names:
                st.markdown(f"**{label}:** " + ", ".join(f"`{n}`" for n in names))

    st.subheader("Drift check")
    st.markdown(
        "Do the models and the live schema agree? This compares `Base.metadata`, and the room's own "
        "learner tables (revision 0004, kept out of the models), with what the database reflects, as "
        "`alembic check` does (the tests run it): an empty list means no drift in what autogenerate "
        "compares (tables, columns and their types, indexes, keys; not triggers or server defaults)."
    )
    if st.button("Run drift check", key="drift_check"):
        differences = ui.run(migrations.drift(db))
        ui.mark_done("migrations")
        if differences:
            st.warning(f"{len(differences)} difference(s) between the models and the database:")
            st.code("\n".join(differences), language=None)
        else:
            st.success("No drift: the tables, columns, indexes and keys match the models.")

ui.knowledge_check("migrations", checks.MIGRATIONS)
