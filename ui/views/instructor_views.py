"""The instructor page, drawn: the room's learners and answers, and the room-wide actions that
the section pages also offer (each here behind the page's one key check)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

import ui
from labbench import migrations
from runtime import learners
from source import retry_failed_events
from source.failed_events import discard_failed_events
from ui import learner, widgets
from ui.views import migrations_views, outbox_views

MARKS = {(True, True): "✓", (True, False): "◐ action", (False, True): "◐ check", (False, False): ""}


def stored() -> bool:
    """True when the schema has the learners' tables; else says why nothing is shown."""
    revision = ui.backend_status().schema_revision
    if migrations.stores_learners(revision):
        return True
    st.info(f"The schema is at {revision or 'base'}, below {migrations.FIRST_REVISION}: learners' progress "
            "is not stored (each learner keeps it in their browser tab). Upgrade below to store it again.")
    return False


def room_progress() -> None:
    """Learners seen in the last 30 minutes, one row each, a column per section."""
    if not stored():
        return
    with ui.errors_shown():
        active = ui.run(learners.active_learners(ui.database()))
        now = datetime.now(UTC)
        st.markdown(f"**{len(active)} learner(s) active in the last 30 minutes** (last seen: when they "
                    "opened the app or changed something, and on a page run 5 minutes or more after that).")
        if not active:
            return
        rows = []
        for one in active:
            row = {"learner": one.display_name or f"(no name) {one.id[:8]}",
                   "last seen": f"{(now - one.last_seen_at).total_seconds() / 60:.0f} min ago"}
            for section, label in widgets.PROGRESS.items():
                row[label.split(" ", 1)[0]] = MARKS[(section in one.done, section in one.passed)]
            rows.append(row)
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption("✓ key action done and check passed · ◐ one of the two. Names are what learners typed.")


def answer_shares() -> None:
    """Each question's share of right answers, over every learner's stored answers."""
    if not stored():
        return
    with ui.errors_shown():
        shares = ui.run(learners.question_shares(ui.database()))
        if not shares:
            st.caption("No answers stored yet.")
            return
        rows = []
        for share in shares:
            questions = learner.QUESTIONS.get(share.section, ())
            known = share.question < len(questions)
            prompt = questions[share.question].prompt if known else "(no such question)"
            rows.append({"section": widgets.PROGRESS.get(share.section, share.section), "question": share.question + 1,
                         "objective": questions[share.question].objective if known else "", "prompt": prompt[:90], "answered": share.answered, "right": share.right,
                         "share right": f"{share.right / share.answered:.0%}"})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption("Over every stored answer (a learner's latest choice per question), active or not.")


def health() -> None:
    status, db, target = ui.backend_status(), ui.database(), ui.redis_target()
    database = "busy (no answer within 3 s)" if status.database_busy else ("up" if status.database_ok else "down")
    widgets.metric_row([("Database", database), ("Schema revision", status.schema_revision or "none"),
                        ("Redis", "up" if status.redis_ok else "down")])
    st.caption(f"{db.label} · {widgets.escape_markdown(target.label)}. Read now (the status is cached for 3 s).")
    publisher = ui.publisher()
    outbox_views.pipeline_figures(publisher)


def schema_actions() -> None:
    db = ui.database()
    current = ui.backend_status().schema_revision
    head = migrations.history_as_on_disk()[-1].revision
    st.markdown(f"The database is at **{current or 'base'}**; the newest revision is **{head}**. Below "
                f"{migrations.FIRST_REVISION} learners' progress cannot be stored (it stays in each tab), "
                "and a downgrade below it drops every learner's saved progress.")
    if st.button("Initialize (migrate to head, sample users)", key="room_init"):
        with ui.errors_shown():
            ui.initialise(label="Migrating the schema to head, then the sample users", where="room_init")
    ui.show_initialised("room_init")
    migrations_views.step_buttons(db, current=current, head=head, key_prefix="room_")


def outbox_actions() -> None:
    publisher, db = ui.publisher(), ui.database()
    faults = publisher.faults
    running = publisher.snapshot().running
    cols = st.columns(4)
    if cols[0].button("Start publisher", disabled=running, key="room_start"):
        publisher.start()
        st.rerun()
    if cols[1].button("Stop publisher", disabled=not running, key="room_stop"):
        publisher.stop()
        st.rerun()
    if cols[2].button("Take the broker down", disabled=faults.broker_down, key="room_broker_down"):
        faults.broker_down = True
        st.rerun()
    if cols[3].button("Bring the broker back", disabled=not faults.broker_down, key="room_broker_up"):
        faults.broker_down = False
        st.rerun()
    outbox_views.broker_fault_switches(faults)
    cols = st.columns(3)
    if cols[0].button("Crash the relay after its next append", key="room_crash"):
        faults.arm_crash()
    if cols[1].button("Retry failed events", key="room_retry"):
        with ui.errors_shown():
            st.success(f"{ui.run(retry_failed_events(db=db))} failed event(s) are pending again.")
    if cols[2].button("Discard failed events", key="room_discard"):
        with ui.errors_shown():
            st.success(f"{ui.run(discard_failed_events(db=db))} failed event(s) discarded: never sent.")
    if faults.crash_armed:
        st.info("Armed: the next batch the relay appends will not be marked published.")


def reset_action() -> None:
    st.markdown("Deletes every row of the lab's own tables and every Redis key under the lab's prefix, then "
                "restores Alex and Jane (same IDs). Learners' saved progress is kept: their marks and answers "
                "stay, though IDs they made may then name rows that are gone.")
    confirmed = st.checkbox("Yes, delete all lab data, every learner's included", key="room_reset_confirm")
    if st.button("Reset lab data", key="room_reset", disabled=not confirmed):
        with ui.errors_shown():
            report = ui.reset_lab_data()
            deleted = ", ".join(f"{n} {table}" for table, n in report.rows_deleted.items() if n)
            st.success(f"Lab data reset: deleted {deleted or 'no rows'} and {report.keys_deleted} Redis key(s).")
