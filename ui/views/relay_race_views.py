"""Section 5's several-relays experiment, drawn: the learner picks how many relays, which claim
design, how many events over how many users; the result is measured by labbench/relay_race.py on a
throwaway table and stream (the lab's publisher is not touched)."""

from __future__ import annotations

import streamlit as st

import ui
from labbench.relay_race import DESIGNS, check_input, race
from source import redis_setup
from source.outbox_claims import AGGREGATE_ORDER


def design_note(backend: str) -> str:
    if backend == "postgresql":
        return ("The publisher's relay claims **in aggregate order** (`RelaySettings.design`, `source/outbox_claims.py`): "
                "it takes a transaction-scoped advisory lock per user, then reads the batch in a second statement, "
                "so only one relay at a time has a user's events in flight and the next one sees what the last one "
                "committed. Any number of relays, in any number of processes, keep each user's events in order. "
                "The **any order** claim (`FOR UPDATE SKIP LOCKED` alone) only keeps an event from being claimed "
                "twice: a relay may take a user's later events while another still appends the earlier ones.")
    return ("On SQLite there are no advisory locks and both designs run the same claim: every relay begins its "
            "cycle with `BEGIN IMMEDIATE`, so relays take turns on the database's write lock, append included, "
            "and each user's events stay in order whatever the design; several relays are no faster than one.")


def several_relays(backend: str) -> None:
    st.markdown(design_note(backend))
    left, mid, right = st.columns(3)
    with left:
        relays = st.number_input("Relays", value=2, step=1, key="relays_count")
        design = st.selectbox("Claim design", DESIGNS, index=DESIGNS.index(AGGREGATE_ORDER), key="relays_design")
    with mid:
        events = st.number_input("Events in the burst", value=5_000, step=500, key="relays_events")
    with right:
        users = st.number_input("Users (aggregates)", value=5, step=1, key="relays_users")
    if not st.button("Run the relays", key="relays_run"):
        return
    problems = check_input(relays=int(relays), events=int(events), users=int(users))
    boxes = {"relays": left, "events": mid, "users": right}
    for field, why in problems.items():
        boxes[field].error(f"{field.capitalize()}: {why}")
    if problems:
        return
    with ui.errors_shown(), st.spinner("The relays are draining the burst..."):
        result = ui.run(race(database_url=ui.database().url.render_as_string(hide_password=False),
                             redis_target=ui.redis_target(), fake_server=redis_setup.FAKE_SERVER,
                             relays=int(relays), design=design, events=int(events), users=int(users)), timeout=150)
        row = st.columns(4)
        row[0].metric("Events/s", f"{result.events_per_s:,.0f}")
        row[1].metric("Duplicates", result.duplicates)
        row[2].metric("Inversions", result.inversions)
        row[3].metric("Not appended", result.missing)
        st.caption(
            f"{result.relays} relay(s), {result.design}, each on a thread with its own event loop, engine and Redis "
            f"client; {result.events:,} events over {int(users)} users in {result.seconds:.2f} s; published per "
            f"relay: {', '.join(f'{n:,}' for n in result.per_relay)}. Counted by reading the stream (`XRANGE`): an "
            "inversion is an event that reached it after a later event of the same user (by `created_at`, `id`); "
            "a duplicate is a second entry of one event. The table and the stream were throwaway ones, now gone."
        )
