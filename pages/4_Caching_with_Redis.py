import streamlit as st

import ui
from labbench import cache_inspect
from labbench.cache_comparison import Workload, compare_strategies
from labbench.cache_traffic import ensure_latest_score, run_traffic
from labbench.redis_structures import lab_structures
from source import CachedUserRepository, CacheStats, config
from source.outbox import stream_key
from ui import checks
from ui.views import cache_compare_views, cache_views, exercise_views

ui.page("4. Caching with Redis")
st.title("4. Optimizing Data Access with Redis Caching")
st.markdown(
    "Every dashboard load reads a user's profile and latest AI-R score: hot data that changes "
    "rarely. Alex puts Redis in front of the database with **cache-aside**: "
    "`CachedUserRepository` asks Redis first; on a miss it reads the database and stores the "
    "row as JSON with a TTL. A write commits, then invalidates the keys it made stale. Redis is an "
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
st.caption(cache_views.FAULT_NOTE)
in_process = ui.redis_cache_target(fault).kind == "embedded"
if in_process:
    st.caption("Redis here is the embedded fakeredis: every timing on this page is in-process, with no network.")
if fault != "none":
    st.warning(f"**Your reads use a Redis that {ui.redis_cache_target(fault).reason}.** They are served from the database.")
db = ui.database()
repo = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache(fault), stats=state.cache_my_stats)
writer = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache())  # writes: the lab's Redis
if not state.get("cache_demo_ready"):
    with ui.errors_shown():
        ui.run(ensure_latest_score(writer, user_id=jane_id))
        state.cache_demo_ready = True


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
        cache_views.lookup(column, lookup, in_process=in_process)

st.subheader("Keep the cache true")
st.markdown(cache_views.KEEP_TRUE)
invalidate_col, write_col = st.columns(2)
if invalidate_col.button("Invalidate Cache for this User", key="cache_invalidate"):
    with ui.errors_shown(invalidate_col):
        done = ui.run(writer.invalidate_user_cache(jane_id))
        cache_views.invalidation(invalidate_col, done, f"Invalidated both keys ({done.removed} held a cached value).")
if write_col.button("Add a New AIRScore for Jane (a write)", key="cache_add_score"):
    with ui.errors_shown(write_col):
        score, done = ui.run(writer.add_score(jane_id, occupation_code="15-2051"))
        cache_views.invalidation(write_col, done, (
            f"Committed a score of {score.air_score:.2f}, then invalidated the cached latest score on the "
            "lab's Redis: the next read of it there, by anyone, misses and loads the new score."
        ))

st.subheader("What Redis holds")
st.caption("Read from the lab's Redis, whichever Redis your reads use above.")
with ui.errors_shown():
    lab_redis = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache())
    cache_views.key_states(ui.run(cache_inspect.inspect_user_cache(lab_redis, jane_id, client=ui.inspect_client())))

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
cold = st.checkbox("Start cold (invalidate these users' keys first)", value=True, key="cache_cold")
update = st.checkbox("Update the hottest user halfway through", value=True, key="cache_update")
if st.button("Run the Traffic", key="cache_run_traffic"):
    with ui.errors_shown():
        state.cache_traffic = ui.run(
            run_traffic(
                sessions=db.sessions, cache=ui.redis_cache(fault), users=users, reads=reads, skew=skew,
                start_cold=cold, update_midway=update, writes_to=ui.redis_cache(),
            ),
            timeout=120,
        )
        ui.mark_done("cache")
if (traffic := state.get("cache_traffic")) is not None:
    cache_views.traffic_result(traffic)

st.subheader("Compare caching strategies")
st.markdown(cache_compare_views.INTRO)
values, spots = cache_compare_views.controls()
if st.button("Compare the five strategies", key="cache_compare"):
    with ui.errors_shown(fields=spots):
        state.cache_compare_result = ui.run(compare_strategies(
            db=db, target=ui.redis_target(), prefix=config.redis_prefix(), workload=Workload(**values),
        ), timeout=240)
        ui.mark_done("cache")
if (rows := state.get("cache_compare_result")) is not None:
    cache_compare_views.results(rows, in_process=ui.redis_target().kind == "embedded")

with st.expander("Redis data structures: the lab's live keys"):
    if st.button("Show the keys as Redis reports them", key="cache_structures"):
        with ui.errors_shown():
            state.cache_structures_result = ui.run(lab_structures(
                sessions=db.sessions, repo=writer, client=ui.redis_client(), user_id=jane_id, stream=stream_key(),
            ))
    if (structures := state.get("cache_structures_result")) is not None:
        cache_compare_views.structures(structures)

st.subheader("Counters: yours and the server's")
if st.button("Reset my counters", key="cache_reset_mine"):
    state.cache_my_stats.reset()
mine, everyone = state.cache_my_stats.snapshot(), ui.cache_stats().snapshot()
st.markdown("**Your reads** (the fetch buttons above, this browser session):")
cache_views.counts(st, mine)
cache_views.formula(st, mine)
st.markdown(
    "**All reads in this server process** (every learner on this server, traffic experiments "
    "included; the strategy comparison keeps its own counts):"
)
cache_views.counts(st, everyone)

st.markdown(
    "Alex's `CachedUserRepository` now takes the hot reads off the database, reports every hit "
    "and miss from the cache layer itself, keeps the cache true on writes, and keeps serving when "
    "Redis does not."
)
exercise_views.panel("cache-aside")
ui.knowledge_check("cache", checks.CACHE)
