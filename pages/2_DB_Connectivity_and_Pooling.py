import warnings

import streamlit as st

import ui
from labbench import migrations, pooling, shared_session
from source import run_db_setup_and_create_user
from ui import checks, gate
from ui.views import pooling_views

ui.page("2. DB Connectivity & Pooling")
db = ui.database()
st.title("2. Async database connectivity and connection pooling")
st.markdown(
    "InnovateAI's API serves many requests at once, and most of a request's time is spent "
    "waiting on I/O. Alex uses SQLAlchemy's async engine (`asyncpg` on PostgreSQL, `aiosqlite` "
    "on SQLite) so that one process keeps serving while queries are in flight, and a "
    "**connection pool** so that a request borrows an open connection instead of paying for a "
    "new one (a socket connect, authentication and a server process on PostgreSQL) every time."
)
st.markdown(
    "Of the $N_{\\text{max}}$ = `pool_size + max_overflow` connections the pool may hold, "
    "$N_{\\text{avail}}$ are free at any moment; a request that finds none waits up to "
    "`pool_timeout`. Throughput, the rate at which requests complete, is"
)
st.latex(r"\Theta = \frac{\text{number of requests}}{\text{total time}}")

st.subheader("Initialise the database and the sample users")
st.markdown(
    "This runs the Alembic migrations to the newest revision, then creates Alex Smith and Jane "
    "Doe if they do not exist yet. It is safe to click again, or from several browsers at once."
)
# At head, Initialize only creates the sample users if they are missing; below head (or unknown) it
# migrates the schema for everyone, so it goes through the instructor's gate.
migrates = ui.backend_status().schema_revision != migrations.history_as_on_disk()[-1].revision
if (not migrates or gate.instructor_key_ok("Migrating the schema", key="init_key")) and st.button(
    f"Initialize {db.label} & create sample users", key="init_db"
):
    with ui.errors_shown():
        with st.spinner("Migrating and creating the sample users..."):
            alex, jane = ui.run(run_db_setup_and_create_user(db), timeout=60)
        st.session_state.update(db_initialized=True, user_alex_id=alex.id, user_jane_id=jane.id)
        ui.backend_status.clear()
        st.session_state.init_flash = f"Schema migrated to head on {db.label}; sample users ready."
        st.rerun()  # once, so that the sidebar shows the new schema revision
if st.session_state.db_initialized and st.session_state.user_alex_id is None:
    ui.require_initialized()  # picks up the IDs when another session created the users
if flash := st.session_state.pop("init_flash", None):
    st.success(flash)
if st.session_state.db_initialized and st.session_state.user_alex_id:
    st.markdown(
        f"**Alex Smith's user ID:** `{st.session_state.user_alex_id}`  \n"
        f"**Jane Doe's user ID:** `{st.session_state.user_jane_id}`"
    )
elif not st.session_state.db_initialized:
    st.warning("The database is not initialised yet: click the button above.")


st.subheader("The engine, the session factory and the pool")
pooling_views.engine_and_sessions(db)

st.subheader("Two tasks, one session")
st.markdown(
    "Two tasks register a user at the same time with `UserRepository(session).create(...)` and "
    "`commit()`: first sharing one `AsyncSession` (fresh, then one that already holds its connection), "
    "then each with a session of its own, as `create_user` opens one per call."
)
if st.button("Run the two tasks", key="shared_session", disabled=not st.session_state.db_initialized):
    with ui.errors_shown(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy also warns of Session.add() during a flush
        st.session_state.shared_session_demo = (
            ui.run(shared_session.two_tasks_one_session(db)), ui.run(shared_session.two_tasks_one_session(db, warm=True)),
            ui.run(shared_session.one_session_per_task(db)),
        )
if demo := st.session_state.get("shared_session_demo"):
    pooling_views.shared_session_demo(demo)

st.subheader("The app's pool, now")
st.button("Read the pool again", key="pool_refresh")
pooling_views.app_pool(db)

st.subheader("Experiment: a pool against a new connection per request")
st.markdown(
    "`clients` requests start at once; each client sends its requests one after another. A "
    "request acquires a connection, runs `SELECT 1`, keeps the connection for the hold time "
    "(the rest of its work) and gives it back. The same load runs through a pooled engine with "
    "your settings, then through a `NullPool` engine, which opens and closes a real connection "
    "for every request. Both are throwaway engines on this database, disposed afterwards."
)
with st.form("pool_experiment_form"):
    c1, c2, c3 = st.columns(3)
    clients = c1.number_input("Concurrent clients", 1, pooling.MAX_CONCURRENCY, 50, key="exp_clients")
    per_client = c1.number_input("Requests per client", 1, pooling.MAX_REQUESTS_PER_CLIENT, 5, key="exp_per_client")
    pool_size = c2.number_input("pool_size", 1, pooling.MAX_POOL_SIZE, 5, key="exp_pool_size")
    max_overflow = c2.number_input("max_overflow", 0, pooling.MAX_OVERFLOW, 10, key="exp_max_overflow")
    overflow_slot = c2.empty()
    pool_timeout = c3.number_input("pool_timeout (s)", 0.05, pooling.MAX_POOL_TIMEOUT_S, 2.0, step=0.05, key="exp_timeout")
    hold_ms = c3.number_input("Hold time (ms)", 0, pooling.MAX_HOLD_MS, 10, key="exp_hold")
    run_experiment = st.form_submit_button("Run the experiment", key="exp_run")
if run_experiment:
    settings = pooling.PoolSettings(
        concurrency=int(clients), requests_per_client=int(per_client), pool_size=int(pool_size),
        max_overflow=int(max_overflow), pool_timeout=float(pool_timeout), hold_ms=float(hold_ms),
    )
    with ui.errors_shown(fields={"max_overflow": overflow_slot}), st.spinner("Running both engines..."):
        st.session_state.pool_experiment = ui.run(pooling.run_pool_experiment(db=db, settings=settings), timeout=180)
        ui.mark_done("pooling")

if result := st.session_state.get("pool_experiment"):
    pooling_views.experiment_result(result, db)

st.subheader("Atomicity: all or nothing")
st.markdown(
    "One transaction inserts a user, then a score for that user, then a second user with the "
    "same email. The database refuses the third write, so the whole transaction rolls back: "
    "the first two rows disappear with it."
)
if st.button("Run a transaction that fails part-way", key="atomicity", disabled=not st.session_state.db_initialized):
    with ui.errors_shown():
        pooling_views.atomicity(ui.run(pooling.demonstrate_atomicity(db)))
if not st.session_state.db_initialized:
    st.caption("Initialise the database first.")

st.subheader("Start over")
st.markdown(
    "Resetting deletes every row of the lab's own tables and every Redis key under the lab's "
    "prefix, then restores Alex and Jane as they were (same IDs). Nothing else in the database "
    "or in Redis is touched. Learners' saved progress (their marks and quiz answers, in the room's own "
    "tables) is kept; IDs they made may then name rows that are gone."
)
st.caption("With `LAB_INSTRUCTOR_KEY` set, the room-wide actions (Initialize when it migrates, reset, the publisher, "
           "broker faults, the relay crash, failed events, schema steps) are also gathered on **7. Instructor**, "
           "with the room's progress.")
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
