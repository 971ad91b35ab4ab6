import pandas as pd
import streamlit as st

import ui
from labbench import loading
from ui import checks, widgets
from ui.views import cache_views, exercise_views, repository_views

ui.page("3. Repository Pattern & N+1")
st.title("3. The Repository Pattern and the N+1 Problem")
st.markdown(
    "Alex keeps queries out of the service layer: `UserRepository` takes a session, offers "
    "methods such as `get_by_id` and `get_user_with_scores_eager`, and never commits, so the "
    "caller decides what one transaction covers. Its load methods are also where the classic ORM "
    "trap is decided: load $N$ users, then touch each user's scores, and a lazy relationship sends "
    "$1 + N$ statements. `selectinload` needs $2$ for up to 500 users (it sends one `IN` list per 500), "
    "`joinedload` $1$."
)
ui.require_initialized()
db = ui.database()
state = st.session_state
state.setdefault("n1_cohort_tag", loading.new_cohort_tag())


def show_run(run: loading.LoadRun) -> None:
    """One strategy's measured result: statements, time, data."""
    widgets.show_statements(run.log, label="Statements sent")
    runs = f"median of {run.runs} runs" if run.runs > 1 else "one run"
    loaded = f"{len(run.users)} user{'s' * (len(run.users) != 1)}, {run.score_count} scores loaded"
    st.caption(f"{run.seconds * 1000:.1f} ms, session open to data in hand ({runs}) · {loaded}")


st.subheader("The repository, its interface and its fake")
repository_views.repository_code()

st.subheader("Add sample scores")
score_user_id = st.text_input("User ID to add scores for", value=state.user_alex_id or "", key="n1_user_id_input")
if st.button("Add 3 Sample Scores for User", key="add_scores"):
    with ui.errors_shown():
        scores = ui.run(loading.add_sample_scores(db, user_id=score_user_id))
        st.success(f"Added {len(scores)} scores (AI-R {', '.join(f'{s.air_score:.2f}' for s in scores)}) in one commit.")
        cache_views.queued(st, ui.forget_cached_latest_score(scores[0].user_id))  # section 4 must not serve the old one

st.subheader("One user: lazy versus eager")
st.markdown(
    "The lazy path gets the user, then awaits `user.awaitable_attrs.scores`; the eager path is "
    "`get_user_with_scores_eager`, a `selectinload`. For one user both take two statements: "
    "$N + 1$ with $N = 1$. The difference appears with many users, below."
)
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
            show_run(run)
            if user.scores:
                st.dataframe(pd.DataFrame(list(user.scores)), hide_index=True)
            else:
                st.caption("No scores yet: add some above.")

st.subheader("Many users: the N+1 at scale")
st.markdown(
    "Set up a cohort of your own (its emails carry a tag of this session, and setting it up again "
    "replaces it), then load it by each strategy. Every count below is the statements recorded "
    "while that strategy ran; the time is the median of five runs, each in a fresh session."
)
size, per_user = st.columns(2)
users = size.number_input("Users", 1, loading.MAX_COHORT_USERS, 20, key="n1_users")
scores_per_user = per_user.number_input("Scores per user", 1, loading.MAX_SCORES_PER_USER, 3, key="n1_scores")
if st.button("Set up my cohort", key="n1_setup"):
    with ui.errors_shown():
        ui.remember_made(n1_cohort_ids=ui.run(
            loading.create_cohort(db, tag=state.n1_cohort_tag, users=users, scores_per_user=scores_per_user)
        ))
        state.pop("n1_runs", None)
if ids := state.get("n1_cohort_ids"):
    st.caption(f"Your cohort: {len(ids)} users, emails n1-{state.n1_cohort_tag}-…@{loading.COHORT_DOMAIN}")
if st.button("Compare the three strategies", key="n1_compare", disabled=not ids):
    with ui.errors_shown():
        state.n1_runs = ui.run(loading.compare_strategies(db, user_ids=ids), timeout=120)
        ui.mark_done("repository")
if runs := state.get("n1_runs"):
    for column, run in zip(st.columns(len(runs)), runs, strict=True):
        with column:
            st.markdown(f"**{run.strategy}**")
            show_run(run)
    if all(run.users == runs[0].users for run in runs):
        st.success(f"All three returned the same {len(runs[0].users)} users and {runs[0].score_count} scores.")
    else:
        st.error("The strategies returned different data.")
    frame = pd.DataFrame(
        {"strategy": run.strategy, "data statements": run.log.count, "commands in all": run.log.commands,
         "median ms": run.seconds * 1000}
        for run in runs
    )
    left, right = st.columns(2)
    left.bar_chart(frame, x="strategy", y=["data statements", "commands in all"], sort=False, stack=False)
    right.bar_chart(frame, x="strategy", y="median ms", sort=False)
    by_name = {run.strategy: run.log for run in runs}
    joined, selectin = by_name.get("joined"), by_name.get("selectin")
    st.markdown(
        "The lazy strategy sends one more statement per user, and each waits for its answer; on a "
        "networked PostgreSQL each one costs latency. `joinedload` sends one statement but repeats "
        "every user's columns on each of their score rows (hence `.unique()`); `selectinload` sends each "
        "row once, which is why SQLAlchemy's documentation suggests it for collections."
    )
    if joined and selectin:
        st.caption(
            f"Counted above: joined {joined.count} vs select-in {selectin.count} data statements, but "
            f"{joined.commands} vs {selectin.commands} commands in all, since each session also sends "
            "its BEGIN, its COMMIT or ROLLBACK and the pool's pre-ping."
        )

st.subheader("Query workbench: compose a query, see what it sends")
st.markdown(
    "Choose a filter, an order, a limit and a loader for each relationship of `User`; the workbench "
    "builds the `select()` from your choices (nothing you type runs as code: the value is a bound "
    "parameter), shows its SQL, runs it in a session that is never committed and lists every statement sent. Predict "
    "the count of data statements before you run it. The rows are every learner's users on this server."
)
repository_views.workbench_form(db)

st.subheader("Why not just read user.scores?")
st.markdown(
    "In synchronous SQLAlchemy, reading an unloaded `user.scores` quietly sends a query: the "
    "hidden N+1. An async session cannot do I/O inside a plain attribute access, so the same line "
    "raises. `raiseload(User.scores)` (or `lazy=\"raise\"` on the relationship) makes the rule "
    "explicit: any access that was not loaded up front fails loudly, in tests, before production."
)
for column, action, label in zip(
    st.columns(2), (loading.plain_lazy_load, loading.raiseload_access),
    ("Read user.scores without await", "Read it under raiseload(User.scores)"), strict=True,
):
    with column:
        key = f"n1_{action.__name__}"
        if st.button(label, key=key):
            with ui.errors_shown():
                state[f"{key}_caught"] = ui.run(action(db, user_id=state.user_alex_id or ""))
        if (caught := state.get(f"{key}_caught")) is not None:
            st.markdown("SQLAlchemy raised:")
            st.code(caught.exception + (f"\n  caused by {caught.cause}" if caught.cause else ""), language=None)
            st.code(caught.message, language=None, wrap_lines=True)
            if caught.cause:
                st.caption(
                    "The driver failed inside execute, so SQLAlchemy wrapped MissingGreenlet in a "
                    "StatementError with the statement it could not run (asyncpg fails earlier and "
                    "raises MissingGreenlet itself):"
                )
                st.code(caught.sql, language="sql", wrap_lines=True)

exercise_views.panel("latest-scores")
ui.knowledge_check("repository", checks.REPOSITORY)
