import streamlit as st

import ui
from labbench import cache_failures, cache_inspect
from labbench.cache_comparison import Workload, compare_strategies
from labbench.cache_traffic import ensure_latest_score, run_traffic
from labbench.redis_structures import lab_structures
from source import CachedUserRepository, CacheStats, config
from source.outbox import stream_key
from ui import checks
from ui.views import cache_arc_views as arc
from ui.views import cache_compare_views, cache_views, exercise_views

ui.page("4. Caching with Redis")
st.title("4. Optimizing Data Access with Redis Caching")
st.markdown(
    "Every dashboard load reads a user's row and latest AI-R score: hot data that rarely changes. "
    "Alex puts Redis in front of the database with **cache-aside**: read Redis first; on a miss, "
    "read the database and store the row in Redis with a TTL; after a write, remove the stale key."
)
ui.require_initialized()
state = st.session_state
jane_id = state.user_jane_id
if jane_id is None:
    st.info("The sample users are missing: initialise them in section 2.")
    st.stop()
state.setdefault("cache_my_stats", CacheStats())
state.setdefault("cache_tag", cache_failures.new_tag())
db, target, prefix = ui.database(), ui.redis_target(), config.redis_prefix()
mine = {"prefix": prefix, "tag": state.cache_tag}
fault = state.get("cache_fault", "none")
in_process = ui.redis_cache_target(fault).kind == "embedded"
writer = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache())  # writes: the lab's Redis
if not state.get("cache_demo_ready"):
    with ui.errors_shown():
        ui.run(ensure_latest_score(writer, user_id=jane_id))
        state.cache_demo_ready = True

st.subheader("The problem, measured")
st.markdown(
    "A dashboard's reads are skewed: a few users are read far more than the rest (rank $r$ is "
    "read in proportion to $1/r^s$). The run reads the same users straight from the database, then "
    "through the lab's cache; halfway, the hottest user is updated."
)
reads_col, users_col, skew_col = st.columns(3)
reads = reads_col.slider("Reads", 100, 2000, 500, step=100, key="cache_reads")
users = users_col.slider("Users", 10, 200, 50, step=10, key="cache_users")
skew = skew_col.slider("Skew s", 0.0, 2.0, 1.1, step=0.1, key="cache_skew")
cold_col, update_col, run_col = st.columns([3, 3, 2])
cold = cold_col.checkbox("Start cold (invalidate these users' keys first)", value=True, key="cache_cold")
update = update_col.checkbox("Update the hottest user halfway through", value=True, key="cache_update")
if run_col.button("Run the Traffic", key="cache_run_traffic"):
    with ui.errors_shown():
        state.cache_traffic = ui.run_showing(lambda report: run_traffic(
            sessions=db.sessions, cache=ui.redis_cache(fault), users=users, reads=reads, skew=skew,
            start_cold=cold, update_midway=update, writes_to=ui.redis_cache(), report=report,
        ), label=f"Reading {reads} times without, then with the cache", about=reads / 150, timeout=120)
        ui.mark_done("cache")
        ui.remember_figure("cache", "traffic", cache_views.traffic_figure(state.cache_traffic))
if (traffic := state.get("cache_traffic")) is not None:
    cache_views.traffic_result(traffic, in_process=in_process)

st.subheader("The minimal pattern")
code_col, run_col = st.columns([13, 7])
code_col.code(arc.minimal_code(), language="python")
with run_col:
    st.markdown("`source/cache_aside.py` without its imports: a plain `redis.asyncio` client and a session "
                "factory. Run it on a row and keys of your own: read, read, rename, read.")
    if st.button("Run the minimal version", key="cache_minimal_run"):
        with ui.errors_shown():
            state.cache_minimal = ui.run_showing(lambda report: cache_failures.run_minimal(
                db, target=target, report=report, **mine), label="Running CacheAside on your own key", about=1)
if (steps := state.get("cache_minimal")) is not None:
    arc.minimal_run(steps)

st.subheader("Predict, then run")
st.markdown(
    f"{cache_failures.READERS} readers ask for one user at the same moment, and the user's key is cold "
    "(a deploy just emptied Redis, or the key expired). How many database loads will the minimal version make?"
)
guess_col, go_col = st.columns([1, 2])
guess = guess_col.number_input("Your prediction: database loads", 0, cache_failures.READERS, None, key="cache_guess")
if go_col.button(f"Run {cache_failures.READERS} readers on the minimal version", key="cache_stampede_minimal"):
    if guess is None:
        guess_col.error("Enter your prediction first.")
    else:
        with ui.errors_shown():
            state.cache_stampede_minimal_result = (guess, ui.run_showing(lambda report: cache_failures.stampede(
                db, version="minimal", target=target, report=report, **mine), label="Stampede", about=1))
if (shown := state.get("cache_stampede_minimal_result")) is not None:
    arc.stampede(shown[1], predicted=shown[0])

exercise_views.panel("cache-aside")

st.subheader("Break it, then harden it")
st.markdown(
    "Each tab runs a failure on the minimal version, then shows the lines of `source/cache.py` that "
    "answer it (a diff from the minimal version) and runs the same failure on the hardened cache."
)
for tab, failure in zip(st.tabs(["Stampede", "Stale set", "Redis hung"], key="cache_failures"), ("stampede", "stale", "hung"), strict=True):
    with tab:
        arc.failure_tab(failure, db=db, target=target, mine=mine)

st.subheader("The lab's cache, in use")
st.markdown(f"Demo user: **Jane Doe**, ID `{jane_id}`. Fetch twice: a MISS, then a HIT.")
repo = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache(fault), stats=state.cache_my_stats)
st.markdown("**Fetch through the cache**")
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
st.markdown("**Keep the cache true**")
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
mine_col, reset_col = st.columns([3, 1])
mine_col.markdown("**Your reads** (the fetch buttons above, this browser session):")
if reset_col.button("Reset my counters", key="cache_reset_mine"):
    state.cache_my_stats.reset()
cache_views.counts(st, state.cache_my_stats.snapshot())

st.subheader("Going further")
with st.expander("Redis unreachable for your reads: the cache fails open"):
    cache_views.fault_choice()
with st.expander("What Redis holds for Jane, and what a write leaves there"):
    with ui.errors_shown():
        lab_redis = CachedUserRepository(sessions=db.sessions, cache=ui.redis_cache())
        cache_views.key_states(ui.run(cache_inspect.inspect_user_cache(lab_redis, jane_id, client=ui.inspect_client())))
    st.markdown(cache_views.KEEP_TRUE)
with st.expander("Counters: the formula, and every learner's reads"):
    cache_views.counters(state.cache_my_stats.snapshot(), ui.cache_stats().snapshot())
with st.expander("The whole diff: CacheAside.get → RedisCache.read_through"):
    st.code(arc.whole_diff(), language="diff")
with st.expander("Compare five caching strategies (write-through, write-behind, …)"):
    st.markdown(cache_compare_views.INTRO)
    values, spots = cache_compare_views.controls()
    if st.button("Compare the five strategies", key="cache_compare"):
        with ui.errors_shown(fields=spots):
            state.cache_compare_result = ui.run_showing(lambda report: compare_strategies(
                db=db, target=target, prefix=prefix, workload=Workload(**values), report=report,
            ), label="Comparing the five strategies", about=20, timeout=240)
            ui.mark_done("cache")
    if (rows := state.get("cache_compare_result")) is not None:
        cache_compare_views.results(rows, in_process=target.kind == "embedded")
with st.expander("Redis data structures, run live"):
    if st.button("Show the structures as Redis reports them", key="cache_structures"):
        with ui.errors_shown():
            state.cache_structures_result = ui.run(lab_structures(
                sessions=db.sessions, repo=writer, client=ui.inspect_client(), user_id=jane_id, stream=stream_key(),
            ))
    if (structures := state.get("cache_structures_result")) is not None:
        cache_compare_views.structures(structures)

ui.knowledge_check("cache", checks.CACHE)
