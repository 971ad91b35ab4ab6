"""Section 5's live pipeline, drawn: one event followed through the shared publisher's relay and
consumer, the figures of the outbox, the stream and the inbox, and the faults that move them,
side by side."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

import ui
from labbench import outbox_health
from labbench.faults import Faults, LabPublisher
from labbench.outbox_view import EventProgress, appended_at, event_progress
from source import calculate_and_store_airscore, retry_failed_events
from source.database import Database
from source.failed_events import discard_failed_events
from ui import gate, widgets
from ui.views import cache_views


def progress_text(event_id: str, now: EventProgress) -> str:
    """What happened to the event, in the order it happened, each time from the clock of the part
    that did it (the writer, Redis from the entry ID, the relay, the consumer)."""
    moments = []
    if now.applied_stream_id:
        moments.append((appended_at(now.applied_stream_id), "appended to the stream"))
    if now.stream_id and now.stream_id != now.applied_stream_id:
        again = ("appended again (the relay had died before marking it; the consumer's inbox drops the repeat)"
                 if now.applied_stream_id else "appended to the stream")
        moments.append((appended_at(now.stream_id), again))
    if now.applied_at:
        moments.append((now.applied_at, "applied by the consumer"))
    if now.published_at:
        moments.append((now.published_at, "marked published by the relay"))
    steps = [f"Your event `{event_id[:8]}`: **{now.status}**"]
    steps += [f"{what} {(moment - now.created_at).total_seconds():.2f} s after it was created"
              for moment, what in sorted(moments, key=lambda pair: pair[0])]
    if now.applied_at is None and now.status == "failed":
        steps.append(f"parked after {now.attempts} failed attempts ({widgets.escape_markdown(now.last_error)})")
    elif now.applied_at is None and now.attempts:
        steps.append(f"attempt {now.attempts} failed ({widgets.escape_markdown(now.last_error)}); the relay retries "
                     "with back-off")
    return " · ".join(steps)


def follow(db: Database, event_id: str, seconds: float) -> EventProgress | None:
    """Watch one event for up to `seconds` in this run while the publisher's thread moves it, in a
    status box that stays. Not a timer in the browser: a timed rerun that lands as a click's run ends
    makes Streamlit (1.67) drop that run's output."""
    deadline = time.monotonic() + seconds
    with st.status(f"Following your event `{event_id[:8]}` (up to {seconds:.0f} s)…", expanded=True) as box:
        line = st.empty()
        while (now := ui.run(event_progress(db=db, event_id=event_id))) is not None:
            line.markdown(progress_text(event_id, now))
            if now.settled or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        settled = now is not None and now.settled
        box.update(label=f"Your event `{event_id[:8]}`: " + ("settled" if settled else
                   f"still on its way after {seconds:.0f} s: Refresh to see where it is"),
                   state="complete", expanded=True)
    if now is not None:
        st.caption("Each time is read from the clock of the part that did it: the writer, Redis (from the stream "
                   "entry's ID), the relay, the consumer.")
    return now


def live_pipeline() -> None:
    """The shared publisher: a score stored and followed, the pipeline's figures, and the faults
    beside them."""
    state, db, publisher = st.session_state, ui.database(), ui.publisher()
    users = {"Alex Smith": state.user_alex_id, "Jane Doe": state.user_jane_id}
    if None in users.values():
        st.info("The sample users are missing: initialise them in section 2.")
        return
    figures = publisher.snapshot()
    st.markdown(
        f"One publisher per server process, shared by every learner, runs the lab's relay and consumer on a "
        f"thread of its own. Its relay claims **{publisher.settings.design}** and wakes on {figures.wake_mode}."
    )
    actions, numbers = st.columns([2, 3])
    with actions:
        name = st.selectbox("User", list(users), key="outbox_user")
        if st.button("Store a score and its event", key="outbox_create"):
            with ui.errors_shown():
                score, event = ui.run(calculate_and_store_airscore(
                    sessions=db.sessions, user_id=users[name], occupation_code="AI_ASSESSOR"))
                cache_views.queued(st, ui.forget_cached_latest_score(score.user_id))  # section 4 must not serve the old one
                state.outbox_event_id, state.outbox_watch = event.id, True
                ui.remember_made(outbox_event_id=event.id)
                ui.mark_done("outbox")
                st.success(f"Stored score `{score.id[:8]}` (AI-R {score.air_score}) and event `{event.id[:8]}` "
                           f"({event.event_type}, status **{event.status}**, no. {event.sequence} of its user) "
                           "in one transaction.")
        _publisher_switch(publisher)
        may_change = _faults(publisher)
    drawn = numbers.empty()
    with drawn.container():
        pipeline_figures(publisher)
    if event_id := state.get("outbox_event_id"):
        with ui.errors_shown():
            watching = publisher.running and state.pop("outbox_watch", False)
            now = follow(db, event_id, seconds=10.0 if watching else 0.0)
            if now is None:  # the lab data was reset
                del state.outbox_event_id
            elif not publisher.running and now.status == "pending":
                st.caption("It goes through once the instructor starts the publisher." if gate.instructor_key_set()
                           else "Start the publisher to watch it go through.")
            if watching:  # the figures as the event left them
                with drawn.container():
                    pipeline_figures(publisher)
    blocked(db)
    st.button("Refresh the figures", key="outbox_refresh")
    state["outbox_may_change"] = may_change


def _publisher_switch(publisher: LabPublisher) -> None:
    running = publisher.snapshot().running
    if not gate.instructor_key_ok("Starting or stopping the publisher", key="outbox_stop_key"):
        return
    start, stop = st.columns(2)
    if start.button("Start publisher", disabled=running, key="outbox_start"):
        with st.status("Starting the publisher (its thread, engine and Redis clients)…") as box:
            publisher.start()
            box.update(label="Publisher started", state="complete")
        st.session_state.outbox_watch = True
        st.rerun()
    if stop.button("Stop publisher", disabled=not running, key="outbox_stop"):
        publisher.stop()
        st.rerun()


def _faults(publisher: LabPublisher) -> bool:
    """The broker's and the relay's faults, for the shared publisher only (gated)."""
    faults = publisher.faults
    with st.popover("Break the live pipeline"):
        if not gate.instructor_key_ok("Breaking the relay or retrying failed events", key="outbox_fault_key"):
            return False
        _switch("The broker is down (the relay cannot connect)", faults, "broker_down")
        broker_fault_switches(faults)
        if st.button("Crash the relay after its next append", key="outbox_crash"):
            faults.arm_crash()
        if faults.crash_armed:
            st.caption("Armed: the next batch the relay appends will not be marked published.")
        retry, discard = st.columns(2)
        if retry.button("Retry failed events", key="outbox_retry"):
            with ui.errors_shown():
                st.success(f"{ui.run(retry_failed_events(db=ui.database()))} failed event(s) are pending again.")
        if discard.button("Discard failed events", key="outbox_discard"):
            with ui.errors_shown():
                st.success(f"{ui.run(discard_failed_events(db=ui.database()))} failed event(s) discarded: never sent.")
    on = [label for label, name in (("down", "broker_down"), ("refusing", "broker_refusing"),
                                    ("hung", "broker_hung")) if getattr(faults, name)]
    st.caption(f"The relay's broker: **{', '.join(on) if on else 'working'}**"
               + (" · a relay crash is armed" if faults.crash_armed else ""))
    return True


def broker_fault_switches(faults: Faults) -> None:
    """Two more ways a broker fails, beside "down" (the connection fails): it refuses (an error
    reply, as Redis's OOM), or it hangs (it runs the commands; the reply times out)."""
    _switch("The broker refuses (an OOM error reply)", faults, "broker_refusing")
    _switch("The broker hangs (runs the commands, the reply times out)", faults, "broker_hung")


def _switch(label: str, faults: Faults, name: str) -> None:
    key = f"outbox_{name}"
    # Each run draws the shared switch as it is now: a toggle keeps its own last value, and a tab
    # drawn before another changed the switch would otherwise set it back on its next run.
    st.session_state[key] = getattr(faults, name)
    st.toggle(label, key=key, on_change=_set_switch, args=(faults, name, key))


def _set_switch(faults: Faults, name: str, key: str) -> None:
    value = st.session_state.get(key)  # None: seen after a client sent clear_cache; the switch keeps its value
    if value is not None:
        setattr(faults, name, value)


def pipeline_figures(publisher: LabPublisher) -> None:
    with ui.errors_shown():
        view, now = ui.outbox_overview(), publisher.snapshot()
        status = "running" if now.running else "stopped"
        # On PostgreSQL the relay sleeps until the trigger's NOTIFY: count how often one woke it.
        notify = f" · woken by NOTIFY {now.notify_wakeups}×" if "NOTIFY" in now.wake_mode else ""
        st.markdown(f"**Publisher {status}**{notify} · batches {now.batches} · relay crashes {publisher.faults.crashes}"
                    f" · retries scheduled {now.retries_scheduled} · sent again {now.resent}")
        widgets.metric_row([("Created (outbox rows)", view.created), ("Pending", view.pending),
                            ("Published", view.published), ("Failed", view.failed)])
        widgets.metric_row([("Appended to the stream", "-" if view.appended is None else view.appended),
                            ("Delivered to the consumer", view.delivered), ("Applied (inbox rows)", view.applied),
                            ("Duplicates dropped", view.duplicates)])
        if view.appended is None:
            st.warning("Redis did not answer: the stream's figures are missing.")
        elif view.appended < view.published:
            st.caption("Appended counts the entries this Redis server has received (`XINFO STREAM`), since it "
                       "started empty; the outbox and the inbox, in the database, remember more.")
        with st.expander("The rows behind these figures: the latest events, and the consumer's read model"):
            st.dataframe(pd.DataFrame(view.events), hide_index=True, width="stretch")
            st.dataframe(pd.DataFrame(view.read_model), hide_index=True, width="stretch")


def blocked(db: Database) -> None:
    """The users whose later events wait behind a parked or retrying event, and why."""
    with ui.errors_shown():
        rows = ui.run(outbox_health.blocked_aggregates(db=db))
        if rows:
            st.markdown("**Held back**: these users' later events wait, so that each user's events go out in order")
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
