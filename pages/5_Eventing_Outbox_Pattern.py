import inspect

import streamlit as st

import ui
from source import calculate_and_store_airscore, outbox_minimal
from ui import checks
from ui.views import exercise_views, outbox_depth_views, outbox_views, relay_race_views
from ui.views import outbox_arc_views as arc

ui.page("5. Eventing (Outbox Pattern)")
st.title("5. Reliable events with the transactional outbox")
st.markdown(
    "Alex's dashboard now serves scores fast. Next, the recommendations service must hear about every new "
    "AI-R score: each one once, in order per user, and never one that was rolled back."
)
ui.require_initialized()

st.subheader("1. The problem: two writes, no shared transaction")
st.markdown("Commit the score, then publish to Redis: a process that dies between the two leaves a score "
            "that no other service hears of.")
arc.problem()

st.subheader("2. The minimal outbox")
st.markdown(
    "The event becomes a row, inserted in the same transaction as the score: it exists exactly when the "
    "score does. A **relay** copies pending rows to a Redis stream and marks them published; a "
    "**consumer** reads the stream with a consumer group, applies each entry and acknowledges it."
)
with st.expander("The code: the write, the minimal relay and consumer (`source/outbox_minimal.py`)"):
    st.code(inspect.getsource(calculate_and_store_airscore), language="python")
    st.code(inspect.getsource(outbox_minimal.relay_once), language="python")
    st.code(inspect.getsource(outbox_minimal.consume_once), language="python")
st.caption("Everything in steps 2 and 3 runs on tables and a stream of your own, removed afterwards.")
arc.predict_then_run()
exercise_views.panel("outbox-relay")

st.subheader("3. Break it")
arc.break_it()

st.subheader("4. What each failure adds")
arc.hardening()

st.subheader("5. The lab's pipeline, live")
outbox_views.live_pipeline()

st.subheader("Going further")
outbox_depth_views.going_further()
with st.expander("Several relays at once: throughput and order"):
    relay_race_views.several_relays(ui.database().backend)
st.caption("Design your own event table and delivery, and measure each choice: **5b. Event Table Design (Create)**.")
ui.knowledge_check("outbox", checks.OUTBOX)
