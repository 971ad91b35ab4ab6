import warnings

import streamlit as st

import ui
from labbench import migrations, shared_session
from ui import checks, gate
from ui.views import connection_views as arc
from ui.views import exercise_views, pooling_views

ui.page("2. DB Connectivity & Pooling")
db = ui.database()
st.title("2. Async database connectivity and connection pooling")
st.markdown(
    "Alex's dashboard sends several lookups per request, and many requests arrive at once. Each needs a "
    "database connection, quickly, and a connection the server dropped must not fail the request."
)
ready = ui.ensure_initialized()

st.subheader("The problem: a connection per request")
st.markdown("A new connection costs far more than a query on one that is already open. Measure both:")
arc.connection_cost(db)

st.subheader("The minimal pattern: one engine, a session per task")
st.markdown(
    "One engine per database for the whole process: it holds the pool and opens nothing until a request "
    "needs a connection. Each request or task takes a session of its own (`source/database_minimal.py`):"
)
arc.minimal_pattern()
st.markdown(
    "**Predict, then run.** While one lookup waits on the database, `await` lets the same thread start "
    "others. Guess how long the lookups take as concurrent tasks, each in its own session, then run them:"
)
arc.lookups(db, ready=ready)

exercise_views.panel("session-per-task")

st.subheader("Under load: a pool against a new connection per request")
st.markdown(
    "`clients` start at once, each sending its requests one after another; a request takes a connection, "
    "runs `SELECT 1`, holds it for the hold time and gives it back. The same load runs through a pooled "
    "engine and through `NullPool`, which opens a connection per request."
)
pooling_views.experiment(db)

st.subheader("The failure: the server ends a pooled connection")
st.markdown(
    "A restart, a failover or an idle-session timeout closes connections the pool still keeps. Let the "
    "server end the minimal engine's idle connections, then send three requests:"
)
arc.drop(db, hardened=False, ready=ready)
st.markdown(
    "**The hardening** (`source/database.py`): `pool_pre_ping` tests each connection as it is handed out "
    "and replaces a dead one; the other additions answer failures of their own (see the comments)."
)
arc.hardening_diff()
arc.drop(db, hardened=True, ready=ready)

st.subheader("All or nothing")
st.markdown(
    "One transaction inserts a user, a score for that user, then a second user with the same email. The "
    "database refuses the third write, so the whole transaction rolls back, the first two rows with it."
)
pooling_views.atomicity_action(db)

st.subheader("Going further")
with st.expander("The engine, the session factory and the app's pool settings"):
    pooling_views.engine_and_sessions(db)
with st.expander("The app's pool, now (shared by every learner on this server)"):
    st.button("Read the pool again", key="pool_refresh")
    pooling_views.app_pool(db)
with st.expander("Two tasks, one session: why each task needs its own"):
    st.markdown(
        "Two tasks register a user at the same time with `UserRepository(session).create(...)` and `commit()`: "
        "first sharing one `AsyncSession` (fresh, then one that already holds its connection), then each with a "
        "session of its own, as `create_user` opens one per call."
    )
    if st.button("Run the two tasks", key="shared_session", disabled=not ready):
        with ui.errors_shown(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy also warns of Session.add() during a flush
            st.session_state.shared_session_demo = (
                ui.run(shared_session.two_tasks_one_session(db)),
                ui.run(shared_session.two_tasks_one_session(db, warm=True)),
                ui.run(shared_session.one_session_per_task(db)),
            )
    if demo := st.session_state.get("shared_session_demo"):
        pooling_views.shared_session_demo(demo)
with st.expander("Throughput and the pool's limit"):
    pooling_views.formulas()

st.subheader("Set up and start over")
st.markdown(
    "Initialize migrates the schema to the newest revision and restores Alex and Jane; it is safe to click "
    "again. Reset deletes every learner's lab data (their saved progress stays)."
)
# At head, Initialize only creates the sample users if they are missing; below head (or unknown) it
# migrates the schema for everyone, so it goes through the instructor's gate.
migrates = ui.backend_status().schema_revision != migrations.history_as_on_disk()[-1].revision
if gate.instructor_key_set():
    st.caption("The room-wide actions (Initialize when it migrates, reset, the publisher, broker faults, schema "
               "steps) are also gathered on **7. Instructor**, with the room's progress.")
if (not migrates or gate.instructor_key_ok("Migrating the schema", key="init_key")) and st.button(
    f"Initialize {db.label} & create sample users", key="init_db"
):
    with ui.errors_shown():
        ui.initialise(label="Migrating the schema to head, then the sample users", where="init_db")
if ui.show_initialised("init_db"):
    st.success(f"Schema migrated to head on {db.label}; sample users ready.")
if ready or st.session_state.user_alex_id:
    st.markdown(f"**Alex Smith's user ID:** `{st.session_state.user_alex_id}`  \n"
                f"**Jane Doe's user ID:** `{st.session_state.user_jane_id}`")
if st.session_state.db_initialized and gate.instructor_key_ok("Resetting the lab data", key="reset_key"):
    confirmed = st.checkbox("Yes, delete all lab data, every learner's included", key="reset_confirm")
    if st.button("Reset lab data", key="reset_lab", disabled=not confirmed):
        with ui.errors_shown():
            report = ui.reset_lab_data()
            deleted = ", ".join(f"{n} {table}" for table, n in report.rows_deleted.items() if n)
            st.success(
                f"Lab data reset: deleted {deleted or 'no rows'} and {report.keys_deleted} Redis "
                "key(s); Alex and Jane are back to their sample values."
            )

ui.knowledge_check("pooling", checks.POOLING)
