"""Section 5's arc, drawn: the problem measured, the minimal outbox run on the learner's own tables,
each failure against the minimal code and the lab's, and the diff that answers it. Results stay in
session state until the learner runs the experiment again."""

from __future__ import annotations

import difflib
import inspect

import pandas as pd
import streamlit as st

import source
import ui
from labbench import dual_write, outbox_arc
from source import inbox, outbox_minimal, reconcile
from source.outbox import relay_batch

PROBLEM, PREDICTION, FAILURES = "outbox_problem", "outbox_prediction", "outbox_failures"

# One sentence per failure, beside its figures: why the minimal code's number is what it is.
WHY = {
    "crash": "Its appends reached Redis, its marks rolled back: the next relay appends the batch again, and a "
             "consumer without an inbox applies each repeat. The lab's consumer records each event ID with its "
             "effect, so a repeat changes nothing.",
    "two relays": "On PostgreSQL, SKIP LOCKED lets the second relay take a user's later events while the first "
                  "still appends the earlier ones; on SQLite the minimal relay's read lock blocks the other's "
                  "write (\"database is locked\") after it appended, and the retry appends again. The lab's relays "
                  "each claim only the users of the partitions they lease, in sequence order, and begin with "
                  "BEGIN IMMEDIATE on SQLite.",
    "rollback": "The entries were published and marked, then Redis forgot them; nothing in the group looks missing. "
                "The lab's relay keeps each entry ID with its mark, and a check sends back what the stream lost.",
}


def _with_redis(make):
    async def run(report):
        client = source.make_redis_client(ui.redis_target(), timeout=2.0)
        try:
            return await make(client, report)
        finally:
            await client.aclose()
    return run


def problem() -> None:
    """Publish after commit, with the process killed between the two writes."""
    if st.button("Store 10 scores, crashing twice between the commit and the publish", key="outbox_problem_run"):
        with ui.errors_shown():
            st.session_state[PROBLEM] = ui.run_showing(_with_redis(lambda client, report: dual_write.crash_experiment(
                ui.database(), client, prefix=source.redis_prefix(), strategy="publish after commit")),
                label="Storing 10 scores, then publishing each", about=2)
    if (found := st.session_state.get(PROBLEM)) is not None:
        st.markdown(f"**{found.scores_committed}** scores committed, **{found.events_in_stream}** announced: "
                    f"**{found.lost} lost**, the {found.crashes} whose process died after its commit.")


def _arc(failure: str, *, lab: bool) -> outbox_arc.ArcResult:
    code = "the lab's relay and consumer" if lab else "the minimal relay and consumer"
    return ui.run_showing(_with_redis(lambda client, report: outbox_arc.run(
        ui.database(), client, prefix=source.redis_prefix(), failure=failure, lab=lab, report=report)),
        label=f"{outbox_arc.FAILURES[failure]}: {code}", about=3, timeout=120)


def predict_then_run() -> None:
    st.markdown(f"**Predict, then run.** The minimal relay dies right after appending a batch of "
                f"{outbox_arc.BATCH} events, before its commit. How many effects will its consumer apply twice?")
    left, right = st.columns([1, 2])
    guess = left.number_input("Your prediction", min_value=0, max_value=1000, value=None, step=1,
                              key="outbox_guess", placeholder="a number")
    if right.button("Run it on your own outbox", key="outbox_predict_run"):
        if guess is None:
            left.error("Enter a prediction first (0 to 1,000).")
        else:
            with ui.errors_shown():
                st.session_state[PREDICTION] = (int(guess), _arc("crash", lab=False))
    if (found := st.session_state.get(PREDICTION)) is not None:
        guessed, result = found
        verdict = "right" if guessed == result.applied_twice else f"you said {guessed}"
        st.markdown(f"Measured: **{result.applied_twice}** applied twice ({verdict}); "
                    f"{result.appended} entries appended for {result.written} events, none lost.")


def break_it() -> None:
    failure = st.radio("The failure", list(outbox_arc.FAILURES), format_func=outbox_arc.FAILURES.get,
                       key="outbox_failure", horizontal=True)
    if st.button("Run it against the minimal code, then the lab's", key="outbox_break_run"):
        with ui.errors_shown():
            minimal = _arc(failure, lab=False)
            hardened = _arc(failure, lab=True)
            st.session_state.setdefault(FAILURES, {})[failure] = (minimal, hardened)
            ui.remember_figure("outbox", outbox_arc.FAILURES[failure],
                               f"minimal {_summary(minimal)}; the lab's {_summary(hardened)}")
            ui.mark_done("outbox")
    for shown, (minimal, hardened) in st.session_state.get(FAILURES, {}).items():
        st.markdown(f"**{outbox_arc.FAILURES[shown]}** ({minimal.backend})")
        st.dataframe(pd.DataFrame([_row(minimal), _row(hardened)]), hide_index=True, width="stretch")
        st.caption(WHY[shown])


def _summary(result: outbox_arc.ArcResult) -> str:
    return f"{result.lost} lost, {result.applied_twice} applied twice, {result.inversions} out of order"


def _row(result: outbox_arc.ArcResult) -> dict:
    return {"code": result.code, "events": result.written, "entries appended": result.appended,
            "applied": result.applied, "applied twice": result.applied_twice,
            "out of order": result.inversions, "lost": result.lost, "relay cycles refused": result.failed_cycles}


def diff(before, after) -> None:
    """The hardened function against the minimal one, as a unified diff."""
    lines = difflib.unified_diff(inspect.getsource(before).splitlines(), inspect.getsource(after).splitlines(),
                                 f"outbox_minimal.{before.__name__}", f"outbox.{after.__name__}", lineterm="", n=2)
    st.code("\n".join(lines), language="diff")


def hardening() -> None:
    relay_tab, consumer_tab, lost_tab = st.tabs(["The relay", "The consumer", "Lost entries"])
    with relay_tab:
        st.caption("Each change answers a failure: the claim takes each user's events in sequence order (two "
                   "relays); one pipeline per batch; a broker error schedules a retry with back-off instead of "
                   "failing the cycle; each entry ID is kept with its mark (lost entries).")
        diff(outbox_minimal.relay_once, relay_batch)
    with consumer_tab:
        st.caption("The inbox: an event's ID is inserted in the same transaction as its effect, so a repeat finds "
                   "it and changes nothing (source/inbox.py). Each entry is checked and applied in a savepoint of "
                   "its own: a poison one is dead-lettered instead of blocking its batch.")
        st.code(inspect.getsource(inbox.record_delivery), language="python")
    with lost_tab:
        st.caption("At start and every few seconds, published events the consumer has not applied are looked up "
                   "in the stream by their entry IDs; those gone are pending again (source/reconcile.py).")
        st.code(inspect.getsource(reconcile.missing_from_stream), language="python")
