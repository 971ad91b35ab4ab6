import inspect

import streamlit as st

import ui
from labbench import migrations
from source import calculate_and_store_airscore, retry_failed_events
from source.outbox import discard_failed_events, relay_batch
from ui import checks, gate
from ui.views import cache_views, outbox_views, relay_race_views

ui.page("5. Eventing (Outbox Pattern)")
st.title("5. Building a Reliable Eventing System with the Outbox Pattern")
st.markdown(
    "When an AI-R score is stored, other InnovateAI services must hear about it. Writing the score "
    "and then publishing to the broker is two writes with no common transaction: a crash or a "
    "broker outage in between loses the event, or announces a score that was rolled back. Alex "
    "uses the **transactional outbox**: the event is a row committed *in the same transaction* as "
    "the score, and a separate **relay** later copies pending rows to a Redis stream. Services "
    "converge (eventual consistency) without a two-phase commit."
)
ui.require_initialized()
state = st.session_state
users = {"Alex Smith": state.user_alex_id, "Jane Doe": state.user_jane_id}
if None in users.values():
    st.info("The sample users are missing: initialise them in section 2.")
    st.stop()
db, publisher = ui.database(), ui.publisher()

st.subheader("1. The score and its event, one commit")
name = st.selectbox("User", list(users), key="outbox_user")
if st.button("Calculate & Store AIRScore (Creates Pending Event)", key="outbox_create"):
    with ui.errors_shown():
        score, event = ui.run(calculate_and_store_airscore(
            sessions=db.sessions, user_id=users[name], occupation_code="AI_ASSESSOR"
        ))
        cache_views.queued(st, ui.forget_cached_latest_score(score.user_id))  # section 4 must not serve the old one
        state.outbox_event_id, state.outbox_watch = event.id, True
        ui.mark_done("outbox")  # saves the event's ID with the mark
        st.success(
            f"Stored score `{score.id[:8]}` (AI-R {score.air_score}) and event `{event.id[:8]}` "
            f"({event.event_type}, status **{event.status}**) in one transaction."
        )
with st.expander("The code: `calculate_and_store_airscore`"):
    st.code(inspect.getsource(calculate_and_store_airscore), language="python")
    st.markdown(
        "The transaction locks the user first: two writes for one user then commit one after "
        "the other, so the events' `created_at` order is their commit order, the order the relay "
        "publishes. (`created_at` is taken at insert, not at commit; without the lock a later "
        "insert could commit first.)"
    )

st.subheader("2. The publisher: a relay and a consumer on their own thread")
figures = publisher.snapshot()
st.markdown(
    "One publisher per server process, shared by every learner: a thread with its own event loop, "
    "database engine and Redis clients. It runs two tasks. The **relay** claims due pending events "
    "in batches of 100 (`FOR UPDATE SKIP LOCKED` on PostgreSQL), appends them to the stream "
    f"`{publisher.stream}` with one pipeline, and marks them published before its transaction "
    f"commits. It wakes on {figures.wake_mode}. The **consumer** stands in "
    "for the service that reads the stream (in production, another process; here it shares the "
    "publisher's thread so that one button starts the whole pipeline): a consumer group `XREADGROUP`, an *inbox* row per event "
    "ID written in the same transaction as the effect (a per-user read model), `XACK` after commit, "
    "and `XAUTOCLAIM` for entries a dead consumer never acknowledged."
)
st.caption("With `LAB_INSTRUCTOR_KEY` set, the room-wide actions (Initialize when it migrates, reset, the publisher, "
           "broker faults, the relay crash, failed events, schema steps) are also gathered on **7. Instructor**, "
           "with the room's progress.")
if gate.instructor_key_ok("Starting or stopping the publisher", key="outbox_stop_key"):
    start_col, stop_col = st.columns(2)
    if start_col.button("Start publisher", disabled=figures.running, key="outbox_start"):
        publisher.start()
        state.outbox_watch = True
        st.rerun()
    if stop_col.button("Stop publisher", disabled=not figures.running, key="outbox_stop"):
        publisher.stop()
        st.rerun()


if event_id := state.get("outbox_event_id"):
    with ui.errors_shown():
        watching = publisher.running and state.pop("outbox_watch", False)
        now = outbox_views.follow(db, event_id, seconds=10.0 if watching else 0.0)
        if now is None:  # the lab data was reset
            del state.outbox_event_id
        elif not publisher.running and now.status == "pending":
            st.caption("It goes through once the instructor starts the publisher." if gate.instructor_key_set()
                       else "Start the publisher to watch it go through.")
        elif watching and not now.settled:
            st.caption("Still on its way after 10 s: refresh the figures to see where it is.")
st.button("Refresh the figures", key="outbox_refresh")
outbox_views.pipeline_figures(publisher, faults=publisher.faults)
outbox_views.retention_figures(publisher)

st.subheader("3. Break it")
relay_settings = publisher.settings
st.markdown(
    "**Broker down**: the relay's own publish path cannot connect (the cache and everyone's other "
    "Redis traffic keep working). Events stay pending; each failed attempt is recorded with its error "
    f"and a retry time that doubles, with jitter, up to {relay_settings.backoff_max:g} s; a failed "
    "connection never parks an event, so after an outage of any length the events drain by "
    f"themselves within about {relay_settings.backoff_max:g} s. **Refusing** (an error reply): "
    f"a refusal parks the event as *failed* once it has {relay_settings.max_attempts} failed attempts (that one "
    "and any earlier failures included), and its user's "
    "later events wait behind it until it is retried or discarded. **Hung** (Redis runs the "
    "commands, the reply times out): the outcome is unknown, so the events stay pending and go out "
    "again; the inbox drops the repeats."
)
faults = publisher.faults
st.markdown(f"The broker is **{'down' if faults.broker_down else 'up'}** for the relay"
            + (" and **refuses**" if faults.broker_refusing else "") + (" and **hangs**" if faults.broker_hung else "") + ".")
faults_open = gate.instructor_key_ok("Breaking the relay or retrying failed events", key="outbox_fault_key")
if faults_open:
    down_col, up_col = st.columns(2)
    if down_col.button("Take the broker down", disabled=faults.broker_down, key="outbox_broker_down"):
        faults.broker_down = True
        st.rerun()
    if up_col.button("Bring the broker back", disabled=not faults.broker_down, key="outbox_broker_up"):
        faults.broker_down = False
        st.rerun()
    outbox_views.broker_fault_switches(faults)
outbox_views.blocked(db)
retry_col, discard_col = st.columns(2)
if faults_open and retry_col.button("Retry failed events", key="outbox_retry"):
    with ui.errors_shown():
        st.success(f"{ui.run(retry_failed_events(db=db))} failed event(s) are pending again.")
if faults_open and discard_col.button("Discard failed events", key="outbox_discard"):
    with ui.errors_shown():
        st.success(f"{ui.run(discard_failed_events(db=db))} failed event(s) discarded: never sent.")
st.markdown(
    "**The relay dies after appending, before marking published**: the batch's transaction rolls "
    "back, so its events are still pending and the next cycle appends them again. Watch "
    "*Appended* and *Duplicates dropped* rise together while *Applied* counts each event once."
)
if faults_open and st.button("Crash the relay after its next append", key="outbox_crash"):
    faults.arm_crash()
if faults.crash_armed:
    st.info("Armed: the next batch the relay appends will not be marked published.")

st.markdown(
    "**A poison entry**: one the consumer cannot apply. Each entry is applied in its own savepoint, so "
    "it undoes only itself: the good entries of its batch commit and are acknowledged. It stays "
    "unacknowledged, is claimed again after "
    f"{publisher.consumer_settings.claim_min_idle:g} s idle, and after {publisher.consumer_settings.max_deliveries} "
    "deliveries (the count Redis keeps per entry) moves to the dead letters with its error."
)
outbox_views.consumer_health(publisher, user_id=users[name], may_change=faults_open)

st.subheader("4. What is guaranteed")
outbox_views.guarantees(publisher, backend=db.backend)
with st.expander("The relay's cycle: `relay_batch`"):
    st.code(inspect.getsource(relay_batch), language="python")
with st.expander("The migration that added attempts, retries, the failed status and the inbox (0002)"):
    with ui.errors_shown():
        st.code(migrations.source_as_on_disk("0002"), language="python")

st.subheader("5. Several relays, order kept")
relay_race_views.several_relays(db.backend)
st.caption("Design your own event table and delivery, and measure each choice: **5b. Event Table Design (Create)**.")
ui.knowledge_check("outbox", checks.OUTBOX)
