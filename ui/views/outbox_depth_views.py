"""Section 5's "Going further", drawn: the guarantees and what the broker's persistence means for
them, the claim that runs with its statements, the consumer's health with poison entries and dead
letters, retention and the check for lost entries."""

from __future__ import annotations

import inspect

import pandas as pd
import streamlit as st

import ui
from labbench import migrations, outbox_health
from labbench.faults import LabPublisher
from source import outbox_claims
from source.consumer import dead_letter_key, replay_dead_letter
from source.outbox import relay_batch
from source.outbox_claims import AGGREGATE_ORDER
from source.partitions import PARTITIONS
from ui import widgets


def going_further() -> None:
    publisher, db = ui.publisher(), ui.database()
    with st.expander("What is guaranteed, and what the broker's persistence means for it"):
        guarantees(publisher)
    with st.expander("The claim that runs, with its statements"):
        claim_statements(publisher.settings.design, db.backend)
    with st.expander("The consumer: pending entries, poison entries and dead letters"):
        user_id = st.session_state.get("user_alex_id")
        consumer_health(publisher, user_id=user_id, may_change=st.session_state.get("outbox_may_change", False))
    with st.expander("Retention, and entries the broker lost"):
        retention_figures(publisher)
    with st.expander("The migrations: 0002 (retries, the inbox) and 0006 (numbers, entry IDs)"):
        with ui.errors_shown():
            st.code(migrations.source_as_on_disk("0002"), language="python")
            st.code(migrations.source_as_on_disk("0006"), language="python")


def claim_statements(design: str, backend: str) -> None:
    st.markdown(
        f"This publisher's relay claims **{design}** ({'SQLite: one statement, under the write lock' if backend != 'postgresql' else 'PostgreSQL'}). "
        "The users of the oldest due events go first, by `created_at`; within a user, events go by `sequence`, "
        "lowest first, none skipped. "
        + (f"Each user belongs to one of {PARTITIONS} partitions (a hash of its key), each leased to one relay "
           "at a time (`source/partitions.py`). A relay claims only the users of the partitions it holds, in one "
           "statement: the lease rows `FOR SHARE` until it commits, so a partition changes hands only between "
           "batches, and the events `FOR UPDATE`, never skipped."
           if design == AGGREGATE_ORDER else
           "One statement with `FOR UPDATE SKIP LOCKED`: no event is claimed twice, but a second relay may take "
           "a user's later events while the first still appends the earlier ones.")
    )
    if backend != "postgresql":
        statements = [outbox_claims.SQLITE_CLAIM]
    elif design == AGGREGATE_ORDER:
        statements = [outbox_claims.PARTITIONED_CLAIM]
    else:
        statements = [outbox_claims.ANY_ORDER_CLAIM]
    if backend == "postgresql" and design == AGGREGATE_ORDER:
        with ui.errors_shown():
            holders = ui.run(outbox_health.lease_holders(db=ui.database()))
            st.caption(f"Read now from `relay_leases`: {len(holders)} relay(s) hold partitions"
                       + (": " + ", ".join(f"`{name}` {count}" for name, count in holders.items()) if holders else "")
                       + ". Each app process's publisher runs one relay, and gives its partitions back when it stops.")
    dialect = ui.database().engine.dialect
    for statement in statements:
        st.code(str(statement.compile(dialect=dialect)), language="sql")
    st.code(inspect.getsource(relay_batch), language="python")


def retention_figures(publisher: LabPublisher) -> None:
    keep, now = publisher.retention, publisher.snapshot()
    hours = keep.keep_for / 3600
    checked = f"{now.last_reconciled_at:%H:%M:%S} UTC" if now.last_reconciled_at else "not yet"
    st.caption(f"Lost entries: checked every {publisher.reconcile.interval:g} s (last: {checked}); "
               f"{now.resent} published events sent again since the publisher started. The consumer noticed "
               f"{now.gaps} skipped numbers and applied {now.late} late events."
               + (f" Last check's error: {widgets.escape_markdown(now.reconcile_error)}" if now.reconcile_error else ""))
    st.caption(
        f"Retention: every {keep.interval:g} s the publisher deletes published outbox rows and inbox rows older "
        f"than {hours:g} h (an inbox row only once its event's outbox row is gone) and trims the stream "
        "(`XTRIM MINID`) below the oldest entry the group has not acknowledged. Since it started: "
        f"{now.pruned_outbox} outbox rows, {now.pruned_inbox} inbox rows, {now.trimmed_entries} stream entries."
        + (f" Last pruning error: {widgets.escape_markdown(now.retention_error)}" if now.retention_error else "")
    )


def guarantees(publisher: LabPublisher) -> None:
    durability = None
    with ui.errors_shown():
        durability = ui.run(outbox_health.broker_durability(redis_client=ui.inspect_client()))
    keep_hours, check = publisher.retention.keep_for / 3600, publisher.reconcile.interval
    ordered = publisher.settings.design == AGGREGATE_ORDER
    st.markdown(
        "- **No loss in the database**: an event exists if and only if its score committed, and stays pending "
        "until a relay has appended it *and* committed the mark.\n"
        "- **Order per user, from a number, not a clock**: each event carries its user's next `sequence`, "
        "from a counter row the writer's transaction keeps locked until it commits, so numbers follow commit "
        "order whatever the app servers' clocks say (a test runs one writer 200 ms behind). The relay claims "
        "each user's events lowest number first, none skipped, and an event waits behind an earlier one that "
        "is parked or waiting for its retry. "
        + ("With this claim, relays in any number of processes keep that order. " if ordered else
           "With this claim (any order), two relays can append one user's events out of order. ")
        + "The consumer keeps the highest number as the latest; a gap or a late event is counted and applied, "
        "never waited for.\n"
        "- **At-least-once delivery, effect exactly once**: a relay that dies between its append and its "
        "commit, or a broker that times out after running the commands, repeats an event; the inbox (its "
        "primary key the event ID, inserted with the effect) drops the repeat.\n"
        "- **Poison entries**: each entry is decoded and checked field by field before the database sees it; "
        "one that cannot be applied (or that the database rejects as data: SQLSTATE class 22 or 23) is "
        f"dead-lettered after {publisher.consumer_settings.max_deliveries} deliveries, its bytes kept as they "
        "were, and the good entries of its batch are applied. A database that fails (a lost connection, a "
        "statement timeout) fails the batch, which is delivered again: it dead-letters nothing.\n"
        "- **What \"appended\" means**: Redis acknowledges `XADD` once the entry is in its memory. Restarted, "
        "it comes back with its last RDB snapshot (`save`; a clean `SHUTDOWN` writes one when save points are "
        "set), so entries appended since are gone, while the stream and its group look whole; with AOF and "
        "`appendfsync everysec`, an operating-system crash loses about the last second. Replicas copy writes "
        "asynchronously, so a failover can lose entries too; this relay calls neither `WAIT` nor `WAITAOF`.\n"
        f"- **A broker that comes back with less**: every {check:g} s (and at start) the publisher looks each "
        "published event the consumer has not applied up in the stream by its recorded entry ID; those gone "
        "are pending again and go out with the next relay cycle. A test restarts a real Redis from an older "
        "snapshot while the consumer lags: every event applied once. Dead letters stay in the stream, and "
        "events older than the retention window are left alone, so nothing is sent again forever.\n"
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


