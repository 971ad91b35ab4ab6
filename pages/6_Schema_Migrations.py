import inspect

import pandas as pd
import streamlit as st

import ui
from labbench import migrations
from source import migration_patterns
from ui import checks, gate
from ui.views import migrations_views as views
from ui.views import story_views

ui.page("6. Schema Migrations")
st.title("6. Schema Migrations with Alembic")
st.markdown(
    "Alex's models keep changing (section 5 needed new outbox columns), and every server's schema must "
    "follow them, in order, without losing a row."
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

    st.subheader("The problem: a schema that must follow the code")
    st.markdown(
        "Each change is a **revision**: a script with `upgrade()` and `downgrade()`, chained to its parent. "
        f"The database records its revision in `alembic_version`. The database is at **{current or 'base'}**; "
        f"the newest revision is **{head}**."
    )
    st.dataframe(pd.DataFrame(
        {"revision": r.revision, "parent": r.down_revision or "(base)", "message": r.message, "file": r.filename,
         "database": "◀ here" if r.revision == current else "", "head": "head" if r.is_head else ""}
        for r in history
    ), hide_index=True, width="stretch")
    st.markdown(
        "Do the models and the live schema agree? The drift check compares them as `alembic check` does: "
        "tables, columns, column types, nullability, indexes, unique constraints and foreign keys (not "
        "primary keys, CHECK constraints, server defaults or triggers)."
    )
    views.drift_check(db)

    st.subheader("The minimal pattern: a revision that adds a column")
    st.markdown("What autogenerate writes for a new required column (`source/migration_patterns.py`):")
    st.code(inspect.getsource(migration_patterns.add_plan_minimal), language="python")
    st.markdown("**Predict, then run.** On a table that already has three rows, what does it do?")
    views.predict_required_column(db)

    st.subheader("The hardening: expand, backfill, contract")
    st.markdown(
        "Add the column as nullable, give every row a value, then make it NOT NULL: each step is valid for "
        "the rows already there, on PostgreSQL and on SQLite."
    )
    views.hardening(db)

    st.subheader("The lab's own revisions, one step at a time")
    st.markdown(
        "A downgrade runs the revision's `downgrade()`: it drops what the upgrade added, data included. "
        "Upgrade again to return (section 2's Initialize restores the sample users). Below 0004 learners' "
        "saved progress is dropped and stays in each browser tab until an upgrade."
    )
    if gate.instructor_key_ok("Changing the schema", key="migrate_key"):
        views.step_buttons(db, current=current, head=head)

    st.subheader("See the SQL before it runs")
    st.markdown(f"Alembic's offline mode renders a step as SQL for this database ({db.backend}) without running it:")
    targets = ["base"] + [r.revision for r in history]
    target = st.selectbox("Target revision", [t for t in targets if t != (current or "base")], key="sql_target")
    if target:
        st.code(offline_sql(db.backend, current, target, scripts), language="sql", height=300)

    st.subheader("Going further")
    for revision in history:
        with st.expander(f"Revision {revision.revision}: {revision.message}"):
            st.code(migrations.source_as_on_disk(revision.revision), language="python")

st.subheader("The end of Alex's story")
story_views.payoff()

ui.knowledge_check("migrations", checks.MIGRATIONS)
