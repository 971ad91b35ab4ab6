"""Section 4's results, drawn: one cached read, the counters and T_avg, the keys as Redis holds
them, the traffic experiment, the choice of an unreachable Redis for the learner's reads."""

from __future__ import annotations

from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st

import ui
from labbench.cache_inspect import KeyState
from labbench.cache_traffic import TrafficResult
from source.cache import Invalidation
from source.cache_stats import CacheCounts, Lookup

FAULTS = {
    "none": "The lab's Redis",
    "refused": "Unreachable: refuses connections",
    "hung": "Unreachable: accepts, never answers",
}
FAULT_NOTE = (
    "The unreachable choices divert only your reads in the section above: everyone else's reads, and "
    "every write (yours too), use the lab's Redis. The client never retries, and each step of a Redis "
    "call is bounded by 50 ms: waiting for a free pooled connection, connecting, and each reply (so a "
    "read that meets all three can wait longer before it falls back). After Redis fails the cache "
    "skips it for 1 s, then tries again, so caching resumes by itself; a read that found every "
    "pooled connection busy falls back too, but skips nothing: that was this process's load."
)
KEEP_TRUE = (
    "A write commits first, then replaces each key it made stale with a *tombstone* (a marker value) "
    "that lives 30 s; the next read misses, loads the new row and stores it in the tombstone's place. "
    "(Invalidating before the commit would let a reader cache the old row again.) A reader that "
    "loaded the old row just before the commit, in this process or another, stores it only if the "
    "key still holds what its own GET saw: the tombstone is not that, so it stores nothing. "
    "The old row can still be stored only by a store that reaches Redis more than 20 s after it "
    "was sent. And between a commit and its invalidation, a read in another process can still be "
    "served the old value (in this process, reads of a key being written wait until the "
    "invalidation has landed, then read Redis)."
)


def fault_choice() -> str:
    """The radio that points the learner's reads at an unreachable Redis; returns the choice."""
    labels = {**FAULTS, "none": f"The lab's Redis ({ui.redis_target().label})"}
    fault = st.radio("Redis for your reads", list(labels), format_func=labels.get, horizontal=True, key="cache_fault")
    st.caption(FAULT_NOTE)
    if fault != "none":
        st.warning(f"**Your reads use a Redis that {ui.redis_cache_target(fault).reason}.** They are served "
                   "from the database: fetch above to see it.")
    return fault


def invalidation(where, done: Invalidation, success: str) -> None:
    if not queued(where, done):
        where.success(success)


def queued(where, done: Invalidation) -> bool:
    """Say so when the lab's Redis did not take a write's invalidation; True if it did not."""
    if done.removed is None:
        where.warning(
            f"The write committed, but the lab's Redis did not answer ({done.error}). The invalidation is "
            "queued in this server process and sent before its next command to that Redis; until "
            "then that Redis may still serve the old value, and if this process stops first, the "
            "old value lives until its TTL (at most 330 s)."
        )
    return done.removed is None


def lookup(where, lookup: Lookup, *, in_process: bool = False) -> None:
    ms = lookup.seconds * 1000
    if lookup.outcome == "hit":
        where.success(f"**HIT** · {ms:.2f} ms, from Redis{' (in-process fakeredis, no network)' if in_process else ''}")
    elif lookup.outcome == "miss":
        if not lookup.loaded:
            then = " (shared another reader's load, which stores it)"
        elif lookup.stored:
            then = ", then stored in Redis"
        else:
            then = f", not stored in Redis: {lookup.not_stored}"
        where.info(
            f"**MISS** · {ms:.2f} ms: Redis GET {lookup.cache_seconds * 1000:.2f} ms, database "
            f"{lookup.db_seconds * 1000:.2f} ms{then}"
        )
    else:
        where.warning(f"**ERROR → served from the database** · {ms:.2f} ms (Redis: {lookup.error})")
    if lookup.value is None:
        where.caption("Not found in the database.")
    else:
        where.json(asdict(lookup.value))


def counts(where, counts: CacheCounts) -> None:
    cells = where.columns(5)
    for cell, (label, value) in zip(cells, (
        ("Hits", counts.hits), ("Misses", counts.misses), ("Errors", counts.errors),
        ("Database loads", counts.db_loads), ("Hit ratio H", f"{counts.hit_ratio:.2f}"),
    ), strict=True):
        cell.metric(label, value)


def counters(mine: CacheCounts, everyone: CacheCounts) -> None:
    """Your reads' T_avg, and every read this server process served."""
    formula(st, mine)
    st.markdown("**All reads in this server process** (every learner on this server, traffic runs "
                "included; the strategy comparison and the arc's runs keep their own counts):")
    counts(st, everyone)


def formula(where, counts: CacheCounts) -> None:
    if not counts.hits + counts.misses or not counts.db_loads:
        where.caption("The formula needs a measured miss: invalidate, then fetch.")
        return
    h, tc, td = counts.hit_ratio, counts.t_cache * 1000, counts.t_database * 1000
    where.latex(
        rf"T_{{avg}} = {h:.2f} \times {tc:.3f} + {1 - h:.2f} \times ({tc:.3f} + {td:.3f}) "
        rf"= {counts.t_avg_formula * 1000:.3f}\ \text{{ms}}"
    )
    where.caption(
        f"T_cache = {tc:.3f} ms (mean Redis GET), T_database = {td:.3f} ms (mean database load), "
        f"both measured. The measured mean read took **{counts.t_avg_measured * 1000:.3f} ms**: a miss "
        "also pays the store (a compare-and-set script) and the JSON work, and failed reads are not in the formula."
    )


def key_states(states: tuple[KeyState, ...]) -> None:
    for key_state in states:
        st.code(key_state.key, language=None)
        if key_state.tombstone:
            st.caption(
                f"A write's tombstone, gone in {key_state.ttl_seconds} s: the next read misses, loads the "
                "row and replaces it (a reader that loaded before the write cannot: its store "
                "expects what its own GET saw)."
            )
        elif key_state.raw is None:
            st.caption("Not in Redis: the next read of it is a miss.")
        else:
            base = 30 if key_state.raw == "null" else 300
            st.caption(f"Expires in {key_state.ttl_seconds} s (a {base} s TTL with ±10% jitter). Stored as:")
            st.code(key_state.raw, language="json", wrap_lines=True)


def traffic_figure(traffic: TrafficResult) -> str:
    """The key figure the learner's progress keeps: hit ratio and p50, with and without the cache."""
    without = f", {traffic.p50_database_ms:.2f} ms from the database alone" if traffic.database_ms else ""
    return (f"{len(traffic.reads)} reads: hit ratio {traffic.counts.hit_ratio:.2f}, p50 "
            f"{traffic.p50_cached_ms:.2f} ms through the cache{without}")


def traffic_result(traffic: TrafficResult, *, in_process: bool = False) -> None:
    counts(st, traffic.counts)
    if traffic.database_ms:
        cached, alone = traffic.p50_cached_ms, traffic.p50_database_ms
        loads = f"{traffic.counts.db_loads} of {len(traffic.reads)}"
        alone_col, cached_col, why_col = st.columns([1, 1, 3])
        alone_col.metric("p50 read, database alone (ms)", f"{alone:.3f}")
        cached_col.metric("p50 read, through the cache (ms)", f"{cached:.3f}")
        where = "the in-process fakeredis" if in_process else "Redis"
        if cached < alone:
            why_col.caption(f"A hit is one GET from {where}; a database read opens a session, sends a SELECT and "
                            f"builds an ORM object. And only {loads} reads reached the database.")
        else:
            why_col.caption(f"Here a read through the cache was not faster: a hit is a round trip to {where}, and "
                            f"this database answered as fast. The gain is the load taken off it: {loads} reads reached it.")
    formula(st, traffic.counts)
    after = traffic.first_read_after_update
    if traffic.updated_at_read is not None:
        if after is None:
            st.caption(f"Updated the hottest user after read {traffic.updated_at_read}; it was not read again.")
        else:
            st.markdown(
                f"After read {traffic.updated_at_read} the hottest user's years of experience went from "
                f"{traffic.old_years:g} to {traffic.new_years:g}. Their next read was a "
                f"**{after.outcome.upper()}** returning **{after.value.years_experience:g}**."
            )
    if traffic.server is None:
        st.caption(
            "Redis's own counters are not available here: the embedded fakeredis keeps no server "
            "statistics (or Redis did not answer)."
        )
    else:
        write = f", and **{traffic.invalidated}** for the midway write's invalidation (SET … GET)" if traffic.invalidated else ""
        st.markdown(
            f"Redis's own counters (INFO keyspace_hits + keyspace_misses) rose by **{sum(traffic.server)}**. "
            f"The cache sent **{traffic.counts.requests}** GETs (one per read), one more GET inside each of its "
            f"**{traffic.stores}** stores{write}: **{traffic.key_lookups}** key lookups."
        )
        st.caption(
            "Redis counts every key lookup by every client, and reading a tombstone is a hit for "
            "Redis but a miss for the cache, so only the totals compare. They agree when this "
            "experiment is the only thing reading that Redis; other learners' reads add to Redis's."
        )
    frame = pd.DataFrame(asdict(read) for read in traffic.reads)
    points = alt.Chart(frame).mark_circle(size=18).encode(
        x=alt.X("number:Q", title="read"),
        y=alt.Y("ms:Q", title="latency (ms, log scale)", scale=alt.Scale(type="log")),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=["hit", "miss", "error"], range=["#2ca02c", "#1f77b4", "#d62728"])),
        tooltip=["number", "user_rank", "outcome", alt.Tooltip("ms:Q", format=".3f")],
    )
    layers = [points]
    if traffic.updated_at_read is not None:
        rule = pd.DataFrame({"number": [traffic.updated_at_read + 0.5]})
        layers.append(alt.Chart(rule).mark_rule(strokeDash=[4, 4]).encode(x="number:Q"))
    st.altair_chart(alt.layer(*layers).properties(height=220), width="stretch")
    st.caption(
        "The traffic users are shared by everyone on this server; concurrent experiments warm each "
        "other's cache. Single flight, the cooldown and the counters are per server process."
    )
