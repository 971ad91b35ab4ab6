"""Section 5's pipeline, drawn: one event followed through the relay and the consumer, and the
figures of the outbox, the stream and the inbox."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

import ui
from labbench import outbox_health
from labbench.faults import Faults, LabPublisher
from labbench.outbox_view import EventProgress, appended_at, event_progress
from source.consumer import dead_letter_key, replay_dead_letter
from source.database import Database
from source.outbox_claims import AGGREGATE_ORDER
from ui import widgets


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
                    f"entries re-claimed {now.claimed}")
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


def consumer_health(publisher: LabPublisher, *, user_id: str, may_change: bool) -> None:
    """The consumer's pending-entries list, lag, oldest pending entry and dead letters, read now
    from Redis; a poison entry to append, and a dead letter to replay."""
    redis_client, stream = ui.inspect_client(), publisher.stream
    settings, figures = publisher.consumer_settings, publisher.snapshot()
    health = None
    with ui.errors_shown():
        health = ui.run(outbox_health.consumer_health(redis_client=redis_client, stream=stream))
        row = st.columns(4)
        row[0].metric("Unacknowledged (pending-entries list)", health.pending)
        row[1].metric("Lag (not yet delivered)", "-" if health.lag is None else health.lag)
        row[2].metric("Oldest pending entry", "-" if health.oldest_pending_age is None
                      else f"{health.oldest_pending_age:.1f} s")
        row[3].metric("Dead letters", health.dead_letter_count)
        st.caption(
            f"Read now: `XPENDING`, `XINFO GROUPS` and `XINFO CONSUMERS` on `{stream}`, the age from the oldest "
            f"pending entry's ID and the server's `TIME`, the dead letters from `{dead_letter_key(stream)}`. "
            f"Since the publisher started: {figures.claimed} entries re-claimed with `XAUTOCLAIM` (unacknowledged "
            f"{publisher.consumer_settings.claim_min_idle:g} s or more after their last delivery: a dead consumer's, or this "
            "consumer's own that failed and are delivered again), "
            f"{figures.dead_lettered} dead-lettered, {figures.consumers_removed} idle consumers removed."
        )
        if figures.consumer_error:
            when = figures.consumer_error_at.strftime("%H:%M:%S UTC") if figures.consumer_error_at else ""
            st.warning(f"The consumer's last error ({when}): {widgets.escape_markdown(figures.consumer_error)}")
        left, right = st.columns(2)
        left.markdown("**Pending entries** (oldest first)")
        left.dataframe(pd.DataFrame(health.pending_entries), hide_index=True, width="stretch")
        right.markdown("**Consumers in the group**")
        right.dataframe(pd.DataFrame(health.consumers), hide_index=True, width="stretch")
        st.markdown("**Dead letters** (newest first)")
        st.dataframe(pd.DataFrame(health.dead_letters), hide_index=True, width="stretch")
    if not may_change:  # the poison entry and the replay go to the shared stream: gated like the faults
        st.caption("Appending a poison entry or replaying a dead letter needs the instructor key (above).")
        return
    poison_col, replay_col = st.columns(2)
    with poison_col:
        kind = st.selectbox("A poison entry", list(outbox_health.POISONS), key="outbox_poison_kind")
        if st.button("Append it to the stream", key="outbox_poison"):
            with ui.errors_shown():
                entry = ui.run(outbox_health.append_poison(
                    redis_client=redis_client, stream=stream, kind=kind, user_id=user_id
                ))
                st.success(f"Appended `{entry}`. The consumer fails it, delivers it again after "
                           f"{settings.claim_min_idle:g} s idle, and dead-letters it after "
                           f"{settings.max_deliveries} deliveries.")
    with replay_col:
        choices = [letter["dead letter"] for letter in health.dead_letters] if health else []
        dead_id = st.selectbox("A dead letter", choices, key="outbox_dead_letter")
        if st.button("Replay it", disabled=dead_id is None, key="outbox_replay"):
            with ui.errors_shown():
                new_entry = ui.run(replay_dead_letter(redis_client=redis_client, stream=stream, dead_id=dead_id))
                if new_entry is None:
                    st.info("That dead letter is gone (replayed already?).")
                else:
                    st.success(f"Appended again as `{new_entry}`; applied once if its cause is fixed, "
                               "dead-lettered again if not.")


def broker_fault_switches(faults: Faults) -> None:
    """Two more ways a broker fails, beside "down" (the connection fails): it refuses (an error
    reply, as Redis's OOM), or it hangs (it runs the commands; the reply times out)."""
    switches = (("The broker refuses (OOM error reply)", "broker_refusing"),
                ("The broker hangs (runs the commands, the reply times out)", "broker_hung"))
    for column, (label, name) in zip(st.columns(2), switches, strict=True):
        key = f"outbox_{name}"
        # Each run draws the shared switch as it is now: a toggle keeps its own last value, and a
        # tab drawn before another changed the switch would otherwise set it back on its next run.
        st.session_state[key] = getattr(faults, name)
        column.toggle(label, key=key, on_change=_set_switch, args=(faults, name, key))


def _set_switch(faults: Faults, name: str, key: str) -> None:
    setattr(faults, name, st.session_state[key])


def blocked(db: Database) -> None:
    """The users whose later events wait behind a parked or retrying event, and why."""
    with ui.errors_shown():
        rows = ui.run(outbox_health.blocked_aggregates(db=db))
        if rows:
            st.markdown("**Held back**: these users' later events wait, so that each user's events go out in order")
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        else:
            st.caption("No user's events are held back: no event is parked or waiting for its retry.")


def retention_figures(publisher: LabPublisher) -> None:
    keep, now = publisher.retention, publisher.snapshot()
    hours = keep.keep_for / 3600
    st.caption(
        f"Retention: every {keep.interval:g} s the publisher deletes published outbox rows and inbox rows older "
        f"than {hours:g} h (an inbox row only once its event's outbox row is gone) and trims the stream "
        "(`XTRIM MINID`) below the oldest entry the group has not acknowledged. Since it started: "
        f"{now.pruned_outbox} outbox rows, {now.pruned_inbox} inbox rows, {now.trimmed_entries} stream entries; "
        f"{now.resent} published events sent again because the broker had lost its stream."
        + (f" Last pruning error: {widgets.escape_markdown(now.retention_error)}" if now.retention_error else "")
    )


def guarantees(publisher: LabPublisher, *, backend: str) -> None:
    durability = None
    with ui.errors_shown():
        durability = ui.run(outbox_health.broker_durability(redis_client=ui.inspect_client()))
    keep_hours = publisher.retention.keep_for / 3600
    st.markdown(
        "- **No loss in the database**: an event exists if and only if its score committed, and stays "
        "pending until a relay has appended it *and* committed the mark.\n"
        "- **What \"appended\" means**: Redis acknowledges `XADD` once the entry is in its memory. Whether it "
        "survives a restart depends on the server: with AOF off a restart brings back only the last RDB "
        "snapshot (`save`), so every write after it is lost, and nothing when snapshots are off too; with AOF "
        "and `appendfsync everysec`, up to about a second of writes is lost; with `always`, every write is "
        "fsynced to the AOF before the reply. "
        "Replicas copy writes asynchronously, so a failover can lose acknowledged entries. `WAIT` blocks until "
        "replicas have a connection's writes and `WAITAOF` (Redis 7.2+) until they are fsynced to the AOF, "
        "locally or on replicas; this "
        "relay calls neither.\n"
        "- **A broker that forgets**: when the consumer has to create its group (the embedded Redis keeps "
        "nothing across a restart; a Redis without persistence or a flushed one neither), the published "
        "events the inbox has no row for go back to pending and are sent again. This does not cover a Redis "
        "that comes back with its group but without its last entries (AOF `everysec` after a crash): those "
        "stay published and unapplied.\n"
        "- **At-least-once delivery, effect exactly once**: a crash between append and mark, or a broker "
        "that times out after running the commands, repeats the event; the inbox (primary key = event ID, "
        "inserted with the effect) drops the repeat. A poison entry is dead-lettered and acknowledged; the "
        "good entries beside it are applied.\n"
        "- **Order per user, with one relay**: claims go oldest first, and an event waits while an earlier "
        "event of its user waits for a retry or is parked as failed (until it is retried or discarded). From "
        "revision 0005 the claim looks such events up in an index that holds only them (a partial index), so "
        "the check reads no other event. On SQLite, relays in several processes take turns on the write lock, so "
        "order holds there too.\n"
        "- **Several processes on PostgreSQL**: row locks (`FOR UPDATE`) keep relays from ever claiming the same "
        "event, so a fault-free run publishes nothing twice. Order per user across relays comes from the claim design: "
        f"this publisher claims **{publisher.settings.design}**"
        + (" (an advisory lock per user, then the batch read in a snapshot taken after the locks are held), "
           "so relays in any number of processes keep each user's events in order. "
           if publisher.settings.design == AGGREGATE_ORDER else ", so two relays can hold two events of one user "
           "at once and append them out of order. ")
        + "Section 5 below runs several relays with either design and counts the inversions.\n"
        f"- **Bounded storage**: published outbox rows and inbox rows are kept {keep_hours:g} h, and the stream "
        "is trimmed only below what the group has acknowledged. The dead letters stay until replayed."
    )
    if durability is None:
        return
    if durability.maxmemory_policy is None:
        st.caption("This Redis does not answer `CONFIG GET` (the embedded one has no such command): its "
                   "eviction policy and persistence are unknown here. The embedded Redis keeps nothing across "
                   "a restart of the app.")
        return
    snapshots = f"`save` \"{durability.save}\"" if durability.save is not None else "`save` unknown"
    said = (f"This Redis: `maxmemory-policy` **{durability.maxmemory_policy}**, `maxmemory` "
            f"{durability.maxmemory or '0 (no limit)'}, `appendonly` {durability.appendonly}, "
            f"`appendfsync` {durability.appendfsync}, {snapshots}. The cache and the stream share it.")
    if durability.may_evict_the_stream:
        st.warning(said + " An `allkeys` policy evicts any key once memory reaches `maxmemory`, the stream "
                   "included: events already marked published would be lost to the consumer.")
    elif not durability.memory_limited:
        st.caption(said + " With no `maxmemory`, Redis neither evicts a key nor refuses a write for memory, "
                   "whatever the policy: it grows until the machine runs out of memory.")
    else:
        st.caption(said + " This policy never evicts the stream (it has no TTL); once memory reaches "
                   "`maxmemory` and nothing more can be evicted, writes are refused with an OOM error, which "
                   "the relay records as a refusal: a refusal parks the event once it has "
                   f"{publisher.settings.max_attempts} failed attempts, that one included.")
