from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st

import checks
import ui
from source import CachedUserRepository, CacheStats, Lookup
from source.cache import CacheCounts, ensure_latest_score, run_traffic

ui.page("4. Caching with Redis")
st.title("4. Optimizing Data Access with Redis Caching")
st.markdown(
    "Every dashboard load reads a user's profile and latest AI-R score: hot data that changes "
    "rarely. Alex puts Redis in front of the database with **cache-aside**: "
    "`CachedUserRepository` asks Redis first; on a miss it reads the database and stores the "
    "row as JSON with a TTL. A write commits, then deletes the keys it made stale. Redis is an "
    "optimisation, not a dependency: if it fails, reads go to the database (the cache *fails open*)."
)
st.latex(
    r"H = \frac{\text{hits}}{\text{requests}} \qquad "
    r"T_{avg} = H \cdot T_{cache} + (1 - H)\,(T_{cache} + T_{database})"
)
ui.require_initialized()
state = st.session_state
jane_id = state.user_jane_id
if jane_id is None:
    st.info("The sample users are missing: initialise them in section 2.")
    st.stop()
state.setdefault("cache_my_stats", CacheStats())

FAULTS = {
    "none": f"The lab's Redis ({ui.redis_target().label})",
    "refused": "Unreachable: refuses connections",
    "hung": "Unreachable: accepts, never answers",
}
fault = st.radio("Redis for your reads", list(FAULTS), format_func=FAULTS.get, horizontal=True, key="cache_fault")
st.caption(
    "The unreachable choices affect only your reads: everyone else keeps the lab's Redis. The "
    "client waits at most 50 ms and never retries; after a failure the cache skips Redis for 1 s, "
    "then tries again, so caching resumes by itself."
)
if fault != "none":
    st.warning(f"**Your reads use a Redis that {ui.redis_cache_target(fault).reason}.** They are served from the database.")
db = ui.database()
repo = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache(fault), stats=state.cache_my_stats)
if not state.get("cache_demo_ready"):
    with ui.errors_shown():
        ui.run(ensure_latest_score(repo, user_id=jane_id))
        state.cache_demo_ready = True


def show_lookup(where, lookup: Lookup) -> None:
    ms = lookup.seconds * 1000
    if lookup.outcome == "hit":
        where.success(f"**HIT** · {ms:.2f} ms, from Redis")
    elif lookup.outcome == "miss":
        shared = "" if lookup.loaded else " (shared another reader's load)"
        where.info(
            f"**MISS** · {ms:.2f} ms: Redis GET {lookup.cache_seconds * 1000:.2f} ms, database "
            f"{lookup.db_seconds * 1000:.2f} ms{shared}, then stored in Redis"
        )
    else:
        where.warning(f"**ERROR → served from the database** · {ms:.2f} ms (Redis: {lookup.error})")
    if lookup.value is None:
        where.caption("Not found in the database.")
    else:
        where.json(asdict(lookup.value))


def show_counts(where, counts: CacheCounts) -> None:
    cells = where.columns(5)
    for cell, (label, value) in zip(cells, (
        ("Hits", counts.hits), ("Misses", counts.misses), ("Errors", counts.errors),
        ("Database loads", counts.db_loads), ("Hit ratio H", f"{counts.hit_ratio:.2f}"),
    ), strict=True):
        cell.metric(label, value)


def show_formula(where, counts: CacheCounts) -> None:
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
        "also pays the SET and the JSON work, and failed reads are not in the formula."
    )


st.subheader("Fetch through the cache")
st.markdown(f"Demo user: **Jane Doe**, ID `{jane_id}`. Fetch twice: a MISS, then a HIT.")
user_col, score_col = st.columns(2)
if user_col.button("Fetch User (Cached)", key="cache_fetch_user"):
    with ui.errors_shown(user_col):
        state.cache_user_lookup = ui.run(repo.get_by_id_cached(jane_id))
        ui.mark_done("cache")
if score_col.button("Fetch Latest AIRScore (Cached)", key="cache_fetch_score"):
    with ui.errors_shown(score_col):
        state.cache_score_lookup = ui.run(repo.get_latest_score_cached(jane_id))
for column, name in ((user_col, "cache_user_lookup"), (score_col, "cache_score_lookup")):
    if (lookup := state.get(name)) is not None:
        show_lookup(column, lookup)

st.subheader("Keep the cache true")
st.markdown(
    "A write commits first, then deletes the keys it changed; the next read misses and caches "
    "the new row. (Deleting before the commit would let a reader cache the old row again.)"
)
invalidate_col, write_col = st.columns(2)
if invalidate_col.button("Invalidate Cache for this User", key="cache_invalidate"):
    with ui.errors_shown(invalidate_col):
        done = ui.run(repo.invalidate_user_cache(jane_id))
        if done.deleted is None:
            invalidate_col.warning(f"Redis did not answer ({done.error}): the delete is queued for when it does.")
        else:
            invalidate_col.success(f"Deleted {done.deleted} of {len(done.keys)} keys.")
if write_col.button("Add a New AIRScore for Jane (a write)", key="cache_add_score"):
    with ui.errors_shown(write_col):
        score, done = ui.run(repo.add_score(jane_id, occupation_code="15-2051"))
        queued = " (Redis did not answer: the delete is queued)" if done.deleted is None else ""
        write_col.success(
            f"Committed a score of {score.air_score:.2f}, then deleted the cached latest score{queued}. "
            "The next fetch is a MISS with the new score."
        )

st.subheader("What Redis holds")
st.caption("Read from the lab's Redis, whichever Redis your reads use above.")
with ui.errors_shown():
    inspect = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache())
    for key_state in ui.run(inspect.inspect_user_cache(jane_id)):
        st.code(key_state.key, language=None)
        if key_state.raw is None:
            st.caption("Not in Redis: the next read of it is a miss.")
        else:
            st.caption(f"Expires in {key_state.ttl_seconds} s (a 300 s TTL with ±10% jitter). Stored as:")
            st.code(key_state.raw, language="json", wrap_lines=True)

st.subheader("Traffic experiment")
st.markdown(
    "Real traffic is skewed: a few users are read far more than the rest. Each read below picks "
    "one of the traffic users with probability proportional to $1/r^s$ for rank $r$ ($s = 0$ is "
    "uniform, $s = 1$ is Zipf's law), through the same cache. Halfway through, the hottest user "
    "is updated: watch the next read of that user miss and return the new value."
)
reads_col, users_col, skew_col = st.columns(3)
reads = reads_col.slider("Reads", 100, 2000, 500, step=100, key="cache_reads")
users = users_col.slider("Users", 10, 200, 50, step=10, key="cache_users")
skew = skew_col.slider("Skew s", 0.0, 2.0, 1.1, step=0.1, key="cache_skew")
cold = st.checkbox("Start cold (delete these users' keys first)", value=True, key="cache_cold")
update = st.checkbox("Update the hottest user halfway through", value=True, key="cache_update")
if st.button("Run the Traffic", key="cache_run_traffic"):
    with ui.errors_shown():
        state.cache_traffic = ui.run(
            run_traffic(
                sessions=db.sessions, cache=ui.redis_cache(fault), users=users, reads=reads, skew=skew,
                start_cold=cold, update_midway=update,
            ),
            timeout=120,
        )
        ui.mark_done("cache")
if (traffic := state.get("cache_traffic")) is not None:
    show_counts(st, traffic.counts)
    show_formula(st, traffic.counts)
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
        st.dataframe(
            pd.DataFrame({
                "": ["hits", "misses"],
                "cache layer (this experiment)": [traffic.counts.hits, traffic.counts.misses],
                "Redis INFO keyspace_hits / keyspace_misses (change)": list(traffic.server),
            }),
            hide_index=True,
        )
        st.caption(
            "Redis counts every client's reads. The two columns agree when this experiment is the only "
            "thing reading that Redis; other learners' reads at the same time add to Redis's column."
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
    st.altair_chart(alt.layer(*layers), width="stretch")
    st.caption(
        "The traffic users are shared by everyone on this server; concurrent experiments warm each "
        "other's cache. Single flight, the cooldown and the counters are per server process."
    )

st.subheader("Counters: yours and the server's")
if st.button("Reset my counters", key="cache_reset_mine"):
    state.cache_my_stats.reset()
mine, everyone = state.cache_my_stats.snapshot(), ui.cache_stats().snapshot()
st.markdown("**Your reads** (the fetch buttons above, this browser session):")
show_counts(st, mine)
show_formula(st, mine)
st.markdown("**All reads in this server process** (every learner on this server, traffic experiments included):")
show_counts(st, everyone)

st.markdown(
    "Alex's `CachedUserRepository` now takes the hot reads off the database, reports every hit "
    "and miss from the cache layer itself, keeps the cache true on writes, and keeps serving when "
    "Redis does not."
)
ui.knowledge_check("cache", checks.CACHE)
