"""Section 4's strategy comparison: its controls, and its results as a table and a chart."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from labbench.cache_comparison import LABELS, StrategyResult
from labbench.redis_structures import StructureRow

INTRO = (
    "The spec says *read-through*, the code *cache-aside*: in read-through the cache loads on a "
    "miss by itself; in cache-aside the application does, here by handing `read_through` its "
    "loader. The strategies below share that read and differ in what a write does: **cache-aside** "
    "invalidates after the commit, **TTL only** does nothing (a value can be stale until its TTL "
    "ends), **write-through** puts the new row in Redis after the commit, **refresh-ahead** "
    "invalidates and also reloads a hot value in the background when less than 20% of its TTL is "
    "left, **write-behind** writes to Redis only and a flusher copies the queued writes to the "
    "database every 0.2 s. One run sends the same operations through each, on the lab's Redis "
    "(whatever your reads use above), with concurrent readers: which wins depends on your numbers."
)
DEFAULTS = {"reads": 1000, "users": 50, "skew": 1.1, "writes_per_100": 10, "readers": 32, "ttl_seconds": 2}


def controls() -> tuple[dict, dict]:
    """Number inputs without bounds of their own: the experiment checks every value and a bad
    one gets its message under its input, with nothing run."""
    values, spots = {}, {}
    for column, (name, default) in zip(st.columns(len(DEFAULTS)), DEFAULTS.items(), strict=True):
        step = 0.1 if isinstance(default, float) else 1
        values[name] = column.number_input(LABELS[name], value=default, step=step, key=f"cache_cmp_{name}")
        spots[name] = column.empty()
    return values, spots


def results(rows: list[StrategyResult], *, in_process: bool) -> None:
    frame = pd.DataFrame({
        "strategy": [r.name for r in rows],
        "hit ratio": [round(r.hit_ratio, 3) for r in rows],
        "reads that loaded": [r.read_loads for r in rows],
        "failed open": [r.errors for r in rows],
        "DB statements (all)": [r.statements for r in rows],
        "stale reads": [r.stale_reads for r in rows],
        "newer than DB at start": [r.ahead_reads for r in rows],
        "p50 read (ms)": [round(r.p50_ms, 3) for r in rows],
        "p99 read (ms)": [round(r.p99_ms, 3) for r in rows],
        "Redis commands": [r.redis_commands for r in rows],
        "writes (failed)": [f"{r.writes} ({r.failed_writes})" for r in rows],
    })
    st.dataframe(frame, hide_index=True)
    behind = next((r for r in rows if r.unflushed_at_end is not None), None)
    if behind is not None:
        st.markdown(
            f"**Write-behind's loss window:** when the workload ended, **{behind.unflushed_at_end}** "
            "users' last acknowledged write was not yet in the database (read from the database, "
            "not from the queue). A Redis that lost its memory at that moment would have lost them "
            f"for good; the lab then flushed them, after which {behind.unflushed_after_flush} were missing."
        )
    long = frame.melt(id_vars="strategy", value_vars=["hit ratio", "stale reads", "reads that loaded", "p99 read (ms)"])
    chart = alt.Chart(long).mark_bar().encode(
        x=alt.X("strategy:N", title=None, sort=None),
        y=alt.Y("value:Q", title=None),
        color=alt.Color("strategy:N", legend=None),
        column=alt.Column("variable:N", title=None),
        tooltip=["strategy", "variable", "value"],
    ).resolve_scale(y="independent").properties(width=130, height=160)
    st.altair_chart(chart)
    st.caption(
        "Failed open: Redis did not answer within 50 ms (or was skipped during the 1 s after a "
        "failure, or every pooled connection stayed busy for 50 ms), so the read was served from the database. Stale: the read returned an older version of the row than the database held just before "
        "the read started (a second, uncounted connection reads it). Newer than the database: "
        "write-behind's reads of writes not yet flushed, or, for the others, a write that "
        "committed between that check and the read. Statements and Redis commands are counted as "
        "each strategy's own engine and client sent them; refresh-ahead's background loads and "
        "write-behind's flushes are in its statements."
        + (" Redis is the embedded fakeredis: timings are in-process, with no network." if in_process else "")
    )


def structures(rows: list[StructureRow]) -> None:
    st.dataframe(pd.DataFrame({
        "key": [r.key for r in rows],
        "TYPE": [r.type for r in rows],
        "OBJECT ENCODING": [r.encoding or "not reported" for r in rows],
        "TTL (s)": ["none" if r.ttl_seconds is None else str(r.ttl_seconds) for r in rows],
        "MEMORY USAGE (bytes)": ["not reported" if r.memory_bytes is None else str(r.memory_bytes) for r in rows],
        "content": [r.sample for r in rows],
    }), hide_index=True)
    for row in rows:
        if row.purpose:
            st.markdown(f"- **{row.type}**: {row.purpose}")
    if all(r.encoding is None for r in rows):
        st.caption("The embedded fakeredis implements neither OBJECT ENCODING nor MEMORY USAGE; a Redis server reports both.")
