"""Section 5's pipeline, drawn: one event followed through the relay and the consumer, and the
figures of the outbox, the stream and the inbox."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

import ui
import widgets
from labbench.faults import Faults, LabPublisher
from labbench.outbox_view import EventProgress, event_progress
from source.database import Database


def progress_text(event_id: str, now: EventProgress) -> str:
    def after(moment) -> str:
        return f"{(moment - now.created_at).total_seconds():.2f} s after it was created"

    steps = [f"Your event `{event_id[:8]}`: **{now.status}**"]
    if now.published_at:
        steps.append(f"appended to the stream {after(now.published_at)}")
    if now.applied_at:
        steps.append(f"applied by the consumer {after(now.applied_at)}")
    elif now.status == "failed":
        steps.append(f"parked after {now.attempts} failed attempts ({widgets.escape_markdown(now.last_error)})")
    elif now.attempts:
        steps.append(f"attempt {now.attempts} failed ({widgets.escape_markdown(now.last_error)}); the relay retries "
                     "with back-off")
    return " · ".join(steps)


def follow(db: Database, event_id: str, seconds: float) -> EventProgress | None:
    """Watch one event for up to `seconds` in this run while the publisher's thread moves it. Not a
    timer in the browser: a timed rerun that lands as a click's run ends makes Streamlit (1.67)
    drop that run's output."""
    box = st.empty()
    deadline = time.monotonic() + seconds
    while (now := ui.run(event_progress(db=db, event_id=event_id))) is not None:
        box.markdown(progress_text(event_id, now))
        if now.settled or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return now


def pipeline_figures(publisher: LabPublisher, *, faults: Faults) -> None:
    with ui.errors_shown():
        view, now = ui.outbox_overview(), publisher.snapshot()
        status = "running" if now.running else "stopped"
        # On PostgreSQL the relay sleeps until the trigger's NOTIFY: count how often one woke it.
        notify = f" · woken by NOTIFY {now.notify_wakeups}×" if "NOTIFY" in now.wake_mode else ""
        st.markdown(f"**Publisher {status}**{notify} · batches {now.batches} · relay crashes {faults.crashes} · "
                    f"retries scheduled {now.retries_scheduled} · consumer `{now.consumer_name or '-'}`, "
                    f"claimed from dead consumers {now.claimed}")
        row = st.columns(4)
        row[0].metric("Created (outbox rows)", view.created)
        row[1].metric("Pending", view.pending)
        row[2].metric("Published", view.published)
        row[3].metric("Failed", view.failed)
        row = st.columns(4)
        row[0].metric("Appended to the stream", "-" if view.appended is None else view.appended)
        row[1].metric("Delivered to the consumer", view.delivered)
        row[2].metric("Applied (inbox rows)", view.applied)
        row[3].metric("Duplicates dropped", view.duplicates)
        st.caption(
            "Outbox figures: the outbox table. Appended: entries the stream has received (`XINFO "
            "STREAM`; the embedded Redis starts empty with each server process). Delivered, applied, "
            "duplicates: the consumer's inbox table."
        )
        if view.appended is None:
            st.warning("Redis did not answer: the stream's figures are missing.")
        left, right = st.columns([3, 2])
        left.markdown("**Latest events** (the outbox table)")
        left.dataframe(pd.DataFrame(view.events), hide_index=True, width="stretch")
        right.markdown("**Read model** (what the consumer applied)")
        right.dataframe(pd.DataFrame(view.read_model), hide_index=True, width="stretch")
