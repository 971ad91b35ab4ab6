import streamlit as st

import ui
from labbench import dual_write, event_table
from ui import checks
from ui.views import event_design_views as views
from ui.views import exercise_views

ui.page("5b. Event Table Design (Create)")
st.title("5b. Design the event table and its delivery")
st.markdown(
    "Alex has a working outbox. Before other teams copy it, he wants each choice in its table measured, "
    "not argued. Your choices for the table change its definition below, and the lab runs the same "
    "workload through both alternatives of each choice (where the database offers both) on throwaway "
    "tables, dropped afterwards (the lab's `domain_events` table is never touched). Your choice is "
    "marked in each result."
)
if not ui.backend_status().database_ok:
    st.stop()
db = ui.database()
postgres = db.backend == "postgresql"

st.subheader("1. Your event table")
left, right = st.columns(2)
finish = left.radio("When the relay has published an event", ("Mark it published (status column)",
                    "Delete the row"), key="evd_finish")
order = left.radio("Consumers order one aggregate's events by", ("A sequence number assigned in the transaction",
                   "created_at from the writer's clock"), key="evd_order")
versioned = left.checkbox("Schema version and correlation/causation ids", value=True, key="evd_versioned")
wake_options = ("Polling", "LISTEN/NOTIFY") if postgres else ("Polling",)
wake = right.radio("The relay wakes by", wake_options, key="evd_wake")
if not postgres:
    right.caption("LISTEN/NOTIFY is PostgreSQL's; on SQLite a relay can only poll.")
skew_ms = right.number_input("Writer B's clock runs behind writer A's by (ms)", min_value=0, max_value=1000,
                             value=50, step=10, key="evd_skew")
interval = right.number_input("Polling interval (s)", min_value=0.1, max_value=2.0, value=0.5, step=0.1,
                              key="evd_interval")
design = event_table.Design(status_column=finish.startswith("Mark"), sequence=order.startswith("A sequence"),
                             versioned=versioned, wake="notify" if wake == "LISTEN/NOTIFY" else "poll")

code_tab, ddl_tab = st.tabs(["As SQLAlchemy models", f"As the DDL Alembic emits for {db.backend}"])
code_tab.code(event_table.model_code(design), language="python")
ddl_tab.caption("What `op.create_table` emits for these tables in Alembic's offline (SQL) mode, for the "
                "database this lab is on.")
ddl_tab.code(event_table.alembic_ddl(design, db.backend), language="sql")
if design.wake == "notify":
    st.caption("Waking on NOTIFY adds no column: the writer calls `pg_notify` in its transaction "
               "(or a trigger does, as the lab's revision 0002 does), delivered at commit.")

exercise_views.panel("event-table")

st.subheader("2. Run the workload through each design")
st.markdown(
    "Four measurements: 20 events through a relay whose broker refuses some first attempts; two writers "
    "racing on one aggregate with offset clocks; old and new payload versions and one request's chain "
    "read by a consumer; and a relay that polls or listens, idle and then with events arriving."
)
if st.button("Run my design's workload", key="evd_run"):
    with ui.errors_shown():
        views.run_workbench(design, skew_ms=float(skew_ms), interval=float(interval))
        ui.mark_done("event_design")
views.workbench_results(design)

st.subheader("3. Pub/Sub or Streams: a subscriber goes away")
st.markdown(
    "Redis also has Pub/Sub, yet the lab's relay appends to a **stream**. Why: "
    "the same events are published both ways (`PUBLISH` to a channel and `XADD` to a stream) while a "
    "Pub/Sub subscriber is unsubscribed and a stream consumer stops reading for at least a second, then both "
    "come back."
)
if st.button("Publish both ways with the subscriber away", key="evd_pubsub"):
    with ui.errors_shown():
        views.run_pubsub()
views.pubsub_results()

st.subheader("4. Why the outbox: a crash between the two writes")
st.markdown(
    f"{dual_write.OPERATIONS} scores stored four ways; the process is made to crash between the two writes of "
    f"operations {' and '.join(map(str, sorted(dual_write.CRASH_ON)))} (an exception raised from outside, by a "
    "wrapper around the second step). Then the database "
    "and the stream are compared: a *lost* event is a committed score the stream never announced, a "
    "*phantom* one announces a score that was never committed.\n\n"
    "- **Dual write**: insert the score, publish, commit.\n"
    "- **Publish after commit**: commit the score, then publish.\n"
    "- **Outbox**: insert the score and its event row in one transaction; a relay publishes the rows.\n"
    "- **Outbox, relay crashes**: the writes as the outbox's, and the relay dies instead, after appending "
    "the events of those operations and before its mark commits; the restarted relay appends them again."
)
if st.button("Run the four with injected crashes", key="evd_crash"):
    with ui.errors_shown():
        views.run_crashes()
views.crash_results()

ui.knowledge_check("event_design", views.with_figures(checks.EVENT_DESIGN))
