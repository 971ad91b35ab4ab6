"""Section 5b drawn: the design's consequences as measured, Pub/Sub against Streams, the crash
comparison, and the knowledge checks with the learner's own figures in their feedback."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Awaitable, Callable
from typing import Any

import pandas as pd
import streamlit as st

import source
import ui
from labbench import dual_write, event_design, event_table, pubsub_vs_streams, relay_wake

RESULTS = "evd_results"  # session state: what this learner measured, by experiment


def results() -> dict[str, Any]:
    return st.session_state.setdefault(RESULTS, {})


async def _with_redis(use: Callable[[Any], Awaitable[Any]]) -> Any:
    """A client of the lab's Redis of its own, with timeouts long enough for a subscriber's
    reads (the cache's client gives up after 50 ms); closed afterwards."""
    client = source.make_redis_client(ui.redis_target(), timeout=2.0)
    try:
        return await use(client)
    finally:
        await client.aclose()


# --- 1. the design's consequences ------------------------------------------------------------


def run_workbench(design: event_table.Design, *, skew_ms: float, interval: float) -> None:
    db, prefix = ui.database(), source.redis_prefix()

    async def everything(report) -> dict[str, Any]:
        report("retention: a status column, then delete-on-publish", 0.0)
        found: dict[str, Any] = {
            "retention": [await _with_redis(lambda client, k=k: event_design.retention_experiment(
                db, client, prefix=prefix, keeps_status=k)) for k in (True, False)],
        }
        report(f"ordering: two writers, one {skew_ms:g} ms behind", 0.25)
        found["ordering"] = await event_design.ordering_experiment(db, skew_ms=skew_ms)
        report("versions: old and new payloads, one request's chain", 0.5)
        found["versioning"] = [await event_design.versioning_experiment(db, versioned=v) for v in (True, False)]
        modes = ["poll"] + (["notify"] if db.backend == "postgresql" else [])
        report("waking: a relay idle, then with events arriving (" + " and ".join(modes) + ")", 0.6)
        found["wake"] = [await _with_redis(lambda client, m=m: relay_wake.wake_experiment(
            db, client, prefix=prefix, mode=m, interval=interval)) for m in modes]
        return found

    results().update(ui.run_showing(everything, label="Running your design's workload", about=9, timeout=180))
    results()["design"] = design


def yours(chosen: bool) -> str:
    return " (your choice)" if chosen else ""


def workbench_results(design: event_table.Design) -> None:
    found = results()
    if "retention" not in found:
        return
    if found.get("design") != design:
        st.caption("These figures are from your previous choices: run again to measure the current ones.")
    keep, drop = found["retention"]
    st.markdown("**A status column vs delete-on-publish** "
                f"({keep.events} events appended to a throwaway stream on the lab's Redis, counted there with "
                f"`XRANGE`; the lab refused the first attempt of every {event_design.FAIL_EVERY}th, as section 5's "
                f"Refuse switch does, {keep.failed_attempts} in all)")
    st.dataframe(pd.DataFrame([
        {"design": f"status column{yours(design.status_column)}", "published": keep.published,
         "rows left": keep.rows_left, "published events still listed": keep.history_rows,
         "failed attempts recorded": keep.attempts_recorded},
        {"design": f"delete on publish{yours(not design.status_column)}", "published": drop.published,
         "rows left": drop.rows_left, "published events still listed": drop.history_rows,
         "failed attempts recorded": drop.attempts_recorded},
    ]), hide_index=True, width="stretch")
    st.caption("Delete-on-publish keeps the table small, but a published event leaves no row: nothing to "
               "replay, audit or count, and a retry leaves no trace. The status column keeps every row "
               "(a purge job by age would then bound the table; this workbench runs none).")

    order = found["ordering"]
    st.markdown(f"**Ordering: `created_at` vs a sequence number** ({order.events} events from two writers racing "
                f"on one aggregate, writer B's clock {order.skew_ms:g} ms behind A's; the commit order passed "
                f"from one writer to the other {order.writer_switches} times)")
    st.dataframe(pd.DataFrame([
        {"consumer orders by": f"created_at{yours(not design.sequence)}", "pairs out of commit order":
         order.created_at_inversions},
        {"consumer orders by": f"sequence (assigned in the transaction){yours(design.sequence)}",
         "pairs out of commit order": order.sequence_inversions},
    ]), hide_index=True, width="stretch")
    st.caption(f"Sequence numbers 1..{order.events} with no gap or repeat: "
               f"{'yes' if order.sequences_unique_and_gapless else 'no'}. The first events in commit order:")
    st.dataframe(pd.DataFrame(order.first_rows), hide_index=True, width="stretch")

    versioned, bare = found["versioning"]
    st.markdown(f"**Schema version and correlation/causation ids** ({versioned.events} events: "
                f"{versioned.old_events} written by the old producer in version 1's shape, the rest in version 2's; "
                "one request made a chain of 3 of them)")
    st.dataframe(pd.DataFrame([
        {"table": f"with schema_version, correlation_id, causation_id{yours(design.versioned)}",
         "applied": versioned.applied, "upcast from v1": versioned.upcast, "rejected": versioned.rejected,
         "the request's events found": " → ".join(versioned.chain) or "none"},
        {"table": f"without them{yours(not design.versioned)}", "applied": bare.applied, "upcast from v1": bare.upcast,
         "rejected": bare.rejected, "the request's events found": " → ".join(bare.chain) or "none (no column links them)"},
    ]), hide_index=True, width="stretch")

    st.markdown("**How the relay wakes**")
    rows = []
    for wake in found["wake"]:
        how = (f"polling every {wake.interval:g} s" if wake.mode == "poll"
               else f"LISTEN/NOTIFY (looks anyway after {wake.interval:g} s without a wake)")
        rows.append({"relay": how + yours(design.wake == wake.mode),
                     f"queries in {wake.idle_seconds:g} s idle": wake.idle_queries,
                     "queries per idle second": round(wake.idle_queries_per_second, 2),
                     "commit to stream, median ms": round(wake.median_ms, 1),
                     "worst ms": round(max(wake.latencies_ms), 1), "appended": wake.appended})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(f"Latency: from just before the writer sends COMMIT (its clock starts inside the transaction) to the relay's reply to XADD, over {len(found['wake'][0].latencies_ms)} "
               "events committed at random moments.")
    if len(found["wake"]) == 1:
        st.caption("LISTEN/NOTIFY is PostgreSQL's: on SQLite the relay can only poll, so only polling was measured.")


# --- 2. Pub/Sub vs Streams ---------------------------------------------------------------------


def run_pubsub() -> None:
    prefix = source.redis_prefix()
    results()["pubsub"] = ui.run_showing(lambda report: _with_redis(lambda client: pubsub_vs_streams.pubsub_vs_streams(
        client, prefix=prefix)), label="Publishing both ways with the subscriber away", about=3, timeout=60)


def pubsub_results() -> None:
    found = results().get("pubsub")
    if found is None:
        return
    st.dataframe(pd.DataFrame([
        {"phase": p.name, "sent": p.sent, "subscribers PUBLISH reached": p.pubsub_receivers,
         "Pub/Sub subscriber received": p.pubsub_received, "stream consumer received": p.stream_received}
        for p in found.phases
    ]), hide_index=True, width="stretch")
    st.markdown(f"Sent while away: **{found.sent_while_away}** · lost by Pub/Sub: **{found.pubsub_lost}** · "
                f"lost by the stream: **{found.stream_lost}** (consumer 1 read them with `XREADGROUP` when it came back).")
    st.markdown(
        f"Then {found.fanout_sent} more with a second subscriber and a second consumer in group "
        f"`{pubsub_vs_streams.GROUP}`: Pub/Sub subscribers received {found.pubsub_first} and "
        f"{found.pubsub_second} (every subscriber gets every message); the group's consumers received "
        f"{found.group_first} and {found.group_second}, {found.group_overlap} of them both (a group shares the "
        f"work out). A new group reading from the start received {found.second_group} of the "
        f"{found.stream_length} entries the stream holds: its whole history."
    )


# --- 3. outbox vs publish-after-commit vs dual write ------------------------------------------------


def run_crashes() -> None:
    db, prefix = ui.database(), source.redis_prefix()

    async def every_strategy(report):
        async def each(client):
            found = []
            for n, strategy in enumerate(dual_write.STRATEGIES):
                report(strategy, n / len(dual_write.STRATEGIES))
                found.append(await dual_write.crash_experiment(db, client, prefix=prefix, strategy=strategy))
            return found
        return await _with_redis(each)

    results()["crash"] = ui.run_showing(every_strategy, label="Storing scores four ways, with crashes injected",
                                        about=3, timeout=60)


def crash_results() -> None:
    found = results().get("crash")
    if found is None:
        return
    st.dataframe(pd.DataFrame([
        {"strategy": r.strategy, "operations": r.operations, "crashes injected": r.crashes,
         "scores committed": r.scores_committed, "events in the stream": r.events_in_stream,
         "lost events": r.lost, "phantom events": r.phantom, "entries appended again": r.duplicates}
        for r in found
    ]), hide_index=True, width="stretch")


# --- 4. knowledge checks with the learner's own figures ---------------------------------------------


NOT_MEASURED = "Run the experiments above to see your own figures here."


def figures() -> dict[str, Any]:
    found, out = results(), {}
    if "ordering" in found:
        order = found["ordering"]
        out.update(skew_ms=f"{order.skew_ms:g}", events=order.events,
                   created_at_inversions=order.created_at_inversions, sequence_inversions=order.sequence_inversions)
    if "retention" in found:
        keep, drop = found["retention"]
        out.update(kept_history=keep.history_rows, retention_events=keep.events, deleted_history=drop.history_rows,
                   attempts_recorded=keep.attempts_recorded, failed_attempts=keep.failed_attempts)
    if "versioning" in found:
        versioned, bare = found["versioning"]
        out.update(upcast=versioned.upcast, versioned_rejected=versioned.rejected, bare_rejected=bare.rejected,
                   chain_length=len(versioned.chain), bare_chain_length=len(bare.chain))
    if "wake" in found:
        poll = found["wake"][0]
        out.update(poll_qps=f"{poll.idle_queries_per_second:.2f}", poll_median=f"{poll.median_ms:.0f}")
        if len(found["wake"]) > 1:
            notify = found["wake"][1]
            out.update(notify_qps=f"{notify.idle_queries_per_second:.2f}", notify_median=f"{notify.median_ms:.0f}")
        else:
            out.update(notify_qps="(PostgreSQL only)", notify_median="(PostgreSQL only)")
    if "pubsub" in found:
        p = found["pubsub"]
        out.update(sent_while_away=p.sent_while_away, pubsub_lost=p.pubsub_lost, stream_lost=p.stream_lost)
    if "crash" in found:
        by = {r.strategy: r for r in found["crash"]}
        out.update(dual_phantom=by["dual write"].phantom, after_lost=by["publish after commit"].lost,
                   outbox_lost=by["outbox"].lost, outbox_phantom=by["outbox"].phantom,
                   crashes=by["outbox"].crashes, relay_lost=by[dual_write.RELAY_CRASH].lost,
                   relay_duplicates=by[dual_write.RELAY_CRASH].duplicates)
    return out


def with_figures(questions) -> tuple:
    """The questions with the learner's measured figures put into their feedback; where a figure
    is not measured yet, the feedback stops before "In your run" and says how to measure it."""
    values = figures()

    def why(text: str) -> str:
        needed = {field for _, field, _, _ in string.Formatter().parse(text) if field}
        if needed <= values.keys():
            return text.format(**values)
        return text.split("In your run")[0] + NOT_MEASURED

    return tuple(dataclasses.replace(q, why=why(q.why)) for q in questions)
