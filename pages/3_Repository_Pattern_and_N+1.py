import pandas as pd
import streamlit as st

import ui
from labbench import loading
from ui import checks, widgets
from ui.views import cache_views, exercise_views
from ui.views import repository_views as views

ui.page("3. Repository Pattern & N+1")
st.title("3. The Repository Pattern and the N+1 Problem")
st.markdown(
    "Alex's team page lists each user with their AI-R scores. He keeps its queries out of the page, in a "
    "**repository**: data access behind a few methods, on a session the caller passes in."
)
ui.require_initialized()
db = ui.database()
state = st.session_state
state.setdefault("n1_cohort_tag", loading.new_cohort_tag())

st.subheader("The minimal pattern")
code_col, run_col = st.columns([13, 7])
code_col.code(views.minimal_code(), language="python")
with run_col:
    st.markdown(
        "It never commits: the caller decides what one transaction covers (section 5 needs a score and its "
        "event in one commit). Set up a team of your own through it: the caller adds every user and score "
        "with `add` and commits once; setting it up again replaces it."
    )
    size, per_user = st.columns(2)
    users = size.number_input("Users", 1, loading.MAX_COHORT_USERS, 20, key="n1_users")
    scores_per_user = per_user.number_input("Scores per user", 1, loading.MAX_SCORES_PER_USER, 3, key="n1_scores")
    if st.button("Set up my cohort", key="n1_setup"):
        with ui.errors_shown():
            ui.remember_made(n1_cohort_ids=ui.run_showing(lambda report: loading.create_cohort(
                db, tag=state.n1_cohort_tag, users=users, scores_per_user=scores_per_user, report=report,
            ), label=f"Adding {users} users", about=max(1, users / 200)))
            state.pop("n1_runs", None)
    if ids := state.get("n1_cohort_ids"):
        st.caption(f"Your cohort: {len(ids)} users, emails n1-{state.n1_cohort_tag}-…@{loading.COHORT_DOMAIN}")

st.subheader("Predict, then run")
st.markdown("The team page calls `list_with_scores` with your cohort's IDs. How many statements will it send?")
guess_col, go_col = st.columns([1, 2])
guess = guess_col.number_input("Your prediction: statements", 0, 100_000, None, key="n1_guess")
if go_col.button("Run the team page", key="n1_list", disabled=not ids):
    if guess is None:
        guess_col.error("Enter your prediction first.")
    else:
        with ui.errors_shown():
            run = ui.run_showing(lambda report: loading.load_with_scores(
                db, strategy="lazy", user_ids=ids, report=report), label="The team page", about=max(1, len(ids) / 500))
            state.n1_list_runs = [*state.get("n1_list_runs", []), (guess, run)]

exercise_views.panel("latest-scores")

st.subheader("Break it: the N+1 at scale")
st.markdown(
    "Each of those statements waits for its answer before the next is sent, so the page's time grows "
    "with the team. Set up 200 users, then 1000, and run the team page again: each run is kept below."
)
views.list_runs(state.get("n1_list_runs", []))

st.subheader("The hardening: selectinload")
st.code(views.selectin_diff(), language="diff")
st.markdown(
    "`selectinload(User.scores)` loads the listed users' scores with one more `SELECT … WHERE user_id IN (…)`: "
    f"2 statements, up to {loading.SELECTIN_CHUNK} users. Past that it sends one `IN` per "
    f"{loading.SELECTIN_CHUNK} IDs (SQLAlchemy 2.1's `_SelectInLoader._chunksize`): 1000 users take 3."
)
if st.button("Compare the three strategies", key="n1_compare", disabled=not ids):
    with ui.errors_shown():
        state.n1_runs = ui.run_showing(lambda report: loading.compare_strategies(db, user_ids=ids, report=report),
                                       label="Comparing lazy, select-in and joined, 5 runs each",
                                       about=max(1, len(ids) / 100), timeout=120)
        ui.mark_done("repository")
        ui.remember_figure("repository", "statements", views.figure(state.n1_runs))
if runs := state.get("n1_runs"):
    views.comparison(runs)

st.subheader("Going further")
joined, bench, one, fake, lazy = st.tabs(
    ["selectin or joined?", "Query workbench", "One user, lazy and eager", "The interface and its fake",
     "Lazy loads in async code"], key="n1_further")
with joined:
    st.markdown(
        "`joinedload` sends one statement, a LEFT OUTER JOIN, but repeats every user's columns on each of "
        "their score rows (hence `.unique()`); `selectinload` sends each row once, which is why SQLAlchemy's "
        "documentation suggests it for collections. For a many-to-one (a score's user), a join is the usual choice."
    )
    with st.expander("What else the connection carries"):
        st.markdown(views.CONNECTION_NOTE)
with bench:
    st.markdown(
        "Choose a filter, an order, a limit and a loader for each relationship of `User`; the workbench "
        "builds the `select()` from your choices (nothing you type runs as code: the value is a bound "
        "parameter), shows its SQL, runs it in a session that is never committed and lists every statement "
        "sent. Predict the count of data statements before you run it. The rows are every learner's users."
    )
    views.workbench_form(db)
with one:
    st.markdown("The spec's buttons: add three scores to a user, then fetch them lazily or eagerly.")
    score_user_id = st.text_input("User ID to add scores for", value=state.user_alex_id or "", key="n1_user_id_input")
    if st.button("Add 3 Sample Scores for User", key="add_scores"):
        with ui.errors_shown():
            scores = ui.run(loading.add_sample_scores(db, user_id=score_user_id))
            st.success(f"Added {len(scores)} scores (AI-R {', '.join(f'{s.air_score:.2f}' for s in scores)}) in one commit.")
            cache_views.queued(st, ui.forget_cached_latest_score(scores[0].user_id))  # section 4 must not serve the old one
    fetch_id = st.text_input("User ID to fetch", value=state.user_alex_id or "", key="fetch_user_id_n1")
    for column, strategy, label in zip(
        st.columns(2), ("lazy", "eager"), ("Fetch User & Scores (lazy)", "Fetch User & Scores (Eager Loading)"),
        strict=True,
    ):
        with column:
            if st.button(label, key=f"fetch_{strategy}"):
                state.pop(f"n1_one_{strategy}", None)
                with ui.errors_shown():
                    state[f"n1_one_{strategy}"] = ui.run(loading.load_one_user(db, user_id=fetch_id, strategy=strategy))
            if (run := state.get(f"n1_one_{strategy}")) is not None:
                user = run.users[0]
                st.markdown(f"**{widgets.escape_markdown(user.name)}** · {widgets.escape_markdown(user.email)}")
                views.run_figures(run)
                if user.scores:
                    st.dataframe(pd.DataFrame(list(user.scores)), hide_index=True)
                else:
                    st.caption("No scores yet: add some above.")
    st.caption("For one user both take two statements: N + 1 with N = 1.")
with fake:
    views.repository_code()
with lazy:
    views.lazy_load_errors(db)

ui.knowledge_check("repository", checks.REPOSITORY)
