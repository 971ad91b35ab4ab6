"""Section 5's several-relays experiment, drawn: the learner picks how many relays, which claim
design, how many events over how many users, and whether one relay stops mid-run; the result is
measured by labbench/relay_race.py on throwaway tables and a throwaway stream (the lab's publisher
is not touched)."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

import ui
from labbench.relay_race import DESIGNS, STOP_AFTER, RaceResult, check_input, race
from source import redis_setup
from source.outbox_claims import AGGREGATE_ORDER
from source.partitions import PARTITIONS, LeaseSettings

RUNS = "relays_runs"  # this session's results, newest last


def design_note(backend: str, design: str) -> str:
    if backend != "postgresql":
        return ("On SQLite both designs run one claim, with no partitions: each relay's cycle begins with "
                "`BEGIN IMMEDIATE`, so one relay at a time holds the write lock, append included, and each user's "
                "events stay in order. A second relay gains only the work done outside the lock.")
    lease = LeaseSettings()
    return ((f"The publisher's relay claims **{AGGREGATE_ORDER}**: " if design == AGGREGATE_ORDER else
             f"The publisher's relay claims **{design}**. In aggregate order, ")
            + f"the users are split by a hash of their id into {PARTITIONS} partitions, each leased to one relay, "
            "and a relay publishes only the users of its partitions. At each heartbeat (its first batch or look "
            f"{lease.heartbeat:g} s or more after the last) a relay renews its leases and takes or gives back "
            "partitions to hold its fair share of them, and about its share of the waiting events. A relay that dies loses its leases "
            f"{lease.ttl:g} s after its last heartbeat; the others take them at their next one. "
            "**Any order** (`SKIP LOCKED`, no partitions) only keeps an event from being claimed twice.")


def spans(partitions: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) as "0–2, 5"."""
    runs: list[list[int]] = []
    for p in partitions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"


def several_relays(backend: str) -> None:
    st.markdown(design_note(backend, ui.publisher().settings.design))
    left, mid, right = st.columns(3)
    with left:
        relays = st.number_input("Relays", value=2, step=1, key="relays_count")
        design = st.selectbox("Claim design", DESIGNS, index=DESIGNS.index(AGGREGATE_ORDER), key="relays_design")
    with mid:
        events = st.number_input("Events in the burst", value=5_000, step=500, key="relays_events")
        stop = st.checkbox(f"Stop relay 1 after {STOP_AFTER} batches", key="relays_stop",
                           help="It appends its next batch, then dies before its commit: no goodbye, its leases "
                                "left to expire.")
    with right:
        users = st.number_input("Users (aggregates)", value=50, step=1, key="relays_users")
    if st.button("Run the relays", key="relays_run"):
        problems = check_input(relays=int(relays), events=int(events), users=int(users), stop=stop)
        boxes = {"relays": left, "events": mid, "users": right}
        for field, why in problems.items():
            boxes[field].error(f"{field.capitalize()}: {why}")
        if not problems:
            with ui.errors_shown():
                result = ui.run_showing(
                    lambda report: race(database_url=ui.database().url.render_as_string(hide_password=False),
                                        redis_target=ui.redis_target(), fake_server=redis_setup.FAKE_SERVER,
                                        relays=int(relays), design=design, events=int(events), users=int(users),
                                        stop_one=stop, report=report),
                    label=f"{int(relays)} relay(s) draining {int(events):,} events",
                    about=2 + int(events) / 2_000 + (LeaseSettings().ttl if stop else 0), timeout=150)
                st.session_state[RUNS] = [*st.session_state.get(RUNS, [])[-5:], result]
    if runs := st.session_state.get(RUNS):
        show(runs[-1], runs[:-1])


def show(result: RaceResult, earlier: list[RaceResult]) -> None:
    row = st.columns(4)
    row[0].metric("Events/s", f"{result.events_per_s:,.0f}")
    row[1].metric("Duplicates", result.duplicates)
    row[2].metric("Inversions", result.inversions)
    row[3].metric("Not appended", result.missing)
    st.caption(
        f"{result.relays} relay(s), {result.design}, each on a thread with its own event loop, engine and Redis "
        f"client; {result.events:,} events over {result.users:,} users in {result.seconds:.2f} s, the clock "
        f"started once the relays {'held their partitions' if result.partitioned else 'were connected'}, "
        f"{result.settle_seconds:.2f} s after they started. Counted by reading the stream (`XRANGE`): an inversion is an event "
        "that reached it after a later event of its user; a duplicate, a second entry of one event."
    )
    st.dataframe(pd.DataFrame(
        {"relay": h.relay, **({"partitions": spans(h.partitions), "users": h.users} if result.partitioned else {}),
         "published": h.published} for h in result.holdings), hide_index=True)
    for sentence in explanations(result, earlier):
        st.caption(sentence)
    if len(earlier) >= 1:
        st.dataframe(pd.DataFrame({"relays": r.relays, "design": r.design, "users": r.users,
                                   "stopped one": r.stop is not None, "events/s": round(r.events_per_s),
                                   "inversions": r.inversions, "duplicates": r.duplicates}
                                  for r in [*earlier, result]), hide_index=True)


def explanations(result: RaceResult, earlier: list[RaceResult]) -> list[str]:
    """One sentence per surprising figure of this run."""
    said = []
    if (stop := result.stop) is not None:
        if stop.taken_at is not None:
            said.append(
                f"Relay {stop.relay} stopped at {stop.at:.2f} s holding partitions {spans(stop.partitions)}; "
                + "; ".join(f"relay {n} took {spans(p)}" for n, p in stop.taken_by)
                + f" at {stop.taken_at:.2f} s, {stop.taken_at - stop.at:.2f} s later, as the lease table showed: "
                "its leases had to expire first"
                + (", and the time above counts that wait." if result.seconds >= stop.taken_at else "."))
        else:
            said.append(f"Relay {stop.relay} stopped at {stop.at:.2f} s; with no partitions to wait for, the "
                        "others claimed its events in their next batches.")
        if stop.in_flight:
            said.append(f"The {result.duplicates:,} duplicate(s): relay {stop.relay} appended {stop.in_flight} "
                        "event(s), then died before its commit, so they stayed pending and were appended again "
                        "(at least once; the consumer's inbox drops a repeat).")
    idle = [h.relay for h in result.holdings if h.users == 0]
    if result.partitioned and idle:
        said.append(f"Relay(s) {', '.join(map(str, idle))} had none of the {result.users} user(s) in their "
                    f"partitions: a user's partition is a hash of its id, and {PARTITIONS} partitions can outnumber "
                    "the users.")
    idle = [h.relay for h in result.holdings if h.published == 0 and not (stop and h.relay == stop.relay)]
    if result.backend == "sqlite" and idle:
        said.append(f"Relay(s) {', '.join(map(str, idle))} published nothing: a relay waiting for SQLite's write "
                    "lock tries again between sleeps, and the relay that just committed can take the lock again at once.")
    fewer = [r for r in earlier if (r.design, r.backend, r.stop) == (result.design, result.backend, None)
             and r.relays < result.relays and r.events_per_s >= result.events_per_s]
    if fewer and result.stop is None:
        said.append(f"{result.relays} relays were no faster than {fewer[-1].relays}: here relays are threads of "
                    "one process, whose Python runs one thread at a time (the GIL), on "
                    f"{os.cpu_count()} core(s) shared with PostgreSQL and Redis; another relay gains only while "
                    "the others wait on the database or Redis.")
    if result.locked_out:
        said.append(f"{result.locked_out} batch(es) waited longer than SQLite's busy timeout for the write lock and "
                    "were tried again: the relay that commits begins its next batch at once, while a waiting one "
                    "only looks between sleeps.")
    if result.inversions:
        said.append("Any order: a relay took a user's later events while another still appended the earlier ones.")
    return said
