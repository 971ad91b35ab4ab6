"""Section 2's results, drawn: the app's pool, the pooling experiment (its form too), the atomicity
demo, and the "Going further" pieces."""

from __future__ import annotations

import inspect

import altair as alt
import pandas as pd
import streamlit as st

import ui
from labbench import pooling, server_connections
from labbench.pool_figures import pool_figures
from labbench.pooling import AtomicityResult, ExperimentResult, pool_settings
from labbench.shared_session import DemoResult
from source.database import Database
from ui import forms, widgets

# The experiment form's fields: (key, label, field, default, low, high, whole, step)
EXPERIMENT_FIELDS = (
    ("exp_clients", "Concurrent clients", "concurrency", pooling.PoolSettings.concurrency, 1,
     pooling.MAX_CONCURRENCY, True, 1),
    ("exp_per_client", "Requests per client", "requests_per_client", pooling.PoolSettings.requests_per_client, 1,
     pooling.MAX_REQUESTS_PER_CLIENT, True, 1),
    ("exp_pool_size", "pool_size", "pool_size", pooling.PoolSettings.pool_size, 1, pooling.MAX_POOL_SIZE, True, 1),
    ("exp_max_overflow", "max_overflow", "max_overflow", pooling.PoolSettings.max_overflow, 0, pooling.MAX_OVERFLOW,
     True, 1),
    ("exp_timeout", "pool_timeout (s)", "pool_timeout", pooling.PoolSettings.pool_timeout, 0.05,
     pooling.MAX_POOL_TIMEOUT_S, False, 0.05),
    ("exp_hold", "Hold time (ms)", "hold_ms", int(pooling.PoolSettings.hold_ms), 0, pooling.MAX_HOLD_MS, True, 1),
)


def experiment(db: Database) -> None:
    """The experiment's form (every bad field reported by its widget), its run with a status box,
    and its last result, which stays until the next run."""
    form = forms.Form("pool_experiment_form")
    with st.form(form.key):
        values, columns = {}, [column for column in st.columns(3) for _ in range(2)]
        for column, (key, label, field, default, _low, _high, _whole, step) in zip(columns, EXPERIMENT_FIELDS,
                                                                                  strict=True):
            values[field] = column.number_input(label, value=default, step=step, key=key)
            form.slot(field, column)
        run = st.form_submit_button("Run the experiment", key="exp_run")
    if run:
        form.start()
        checked = {field: form.within(field, values[field], label, low, high, whole=whole)
                   for _key, label, field, _default, low, high, whole, _step in EXPERIMENT_FIELDS}
        if form.ok:
            settings = pooling.PoolSettings(**checked)
            requests = settings.concurrency * settings.requests_per_client
            about = 1 + 2 * requests * (settings.hold_ms + 2) / 1000 / min(
                settings.concurrency, settings.pool_size + settings.max_overflow)
            with form.action():
                result = ui.run_showing(
                    lambda report: pooling.run_pool_experiment(db=db, settings=settings, report=report),
                    label=f"{requests} requests through a pool, then through NullPool", about=about, timeout=180)
                st.session_state.pool_experiment = result
                ui.mark_done("pooling")
                ui.remember_figure("pooling", "pool", f"{result.pooled.throughput:,.0f} requests/s through the pool "
                                   f"against {result.null_pool.throughput:,.0f} with a new connection per request")
    if result := st.session_state.get("pool_experiment"):
        experiment_result(result, db)


def formulas() -> None:
    st.markdown(
        "Of the $N_{\\text{max}}$ = `pool_size + max_overflow` connections the pool may hold, "
        "$N_{\\text{avail}}$ are free at any moment; a request that finds none waits up to "
        "`pool_timeout`, then raises `TimeoutError`. Throughput, the rate at which requests complete, is"
    )
    st.latex(r"\Theta = \frac{\text{number of requests}}{\text{total time}}")
    st.markdown(
        "and by Little's law a pool of $N_{\\text{max}}$ connections, each held for at least $t$, "
        "completes at most $N_{\\text{max}} / t$ requests per second, however many clients ask."
    )


def engine_and_sessions(db: Database) -> None:
    """The answer key's engine and session factory, and the settings the app's pool has now."""
    st.markdown(
        "`create_async_engine` makes the engine: a connection pool and a dialect, and no connection "
        "yet (the first one opens on first use). `async_sessionmaker` makes the session factory. A "
        "request takes its own session, `async with db.sessions() as session:` (closed at the end, "
        "its connection back in the pool) or `async with db.sessions.begin() as session:` (committed "
        "at the end, rolled back on an exception). A session is not safe to share between tasks "
        "running at the same time: one session per task."
    )
    with st.expander("The code: `Database.__init__` (source/database.py)"):
        st.code(inspect.getsource(Database.__init__), language="python")
    st.markdown("**The app's pool settings, read from its engine now**")
    st.dataframe(pd.DataFrame(pool_settings(db)).astype(str), hide_index=True, width="stretch")


def app_pool(db: Database) -> None:
    """The app's own pool as this page runs, and (on PostgreSQL) the server's list of its connections."""
    figures = pool_figures(db)
    widgets.metric_row([
        ("Open", figures.open), ("Checked out", figures.checked_out), ("Idle in the pool", figures.idle),
        ("Overflow in use", f"{figures.in_use_beyond_pool_size} of {figures.max_overflow}"),
    ])
    st.caption(
        f"Read from the app's pool as this page ran. Open = checked out + idle; the pool keeps up to "
        f"pool_size = {figures.pool_size} idle, and overflow in use counts checkouts beyond pool_size. "
        f"N_avail = pool_size + max_overflow − checked out = {figures.limit} − {figures.checked_out} = "
        f"{figures.limit - figures.checked_out}. Every learner on this server shares this pool."
    )
    if db.application_name is None:
        st.caption("A SQLite file has no server that lists connections: these figures are the pool's alone.")
        return
    view = None
    with ui.errors_shown():
        view = ui.run(server_connections.app_connections(db))
    if view is None:
        return
    widgets.metric_row([
        ("PostgreSQL: open", view.open), ("PostgreSQL: in a transaction or running", view.busy),
        ("PostgreSQL: idle", view.idle),
    ], columns=4)
    st.caption(
        f"PostgreSQL's own count: the rows of `pg_stat_activity` with application_name `{view.application_name}` "
        "(this app process's engine logs in under it), read a moment later on a connection of its own. A "
        "connection checked out but not yet in a transaction is idle to PostgreSQL; another learner's "
        "request between the two reads can make them differ."
    )


def shared_session_demo(results: tuple[DemoResult, ...]) -> None:
    """What each task got, for two tasks sharing a session (cold, warm) and a session per task."""
    for result in results:
        st.markdown(f"**{result.mode}**: users written {result.users_written} of 2")
        st.dataframe(pd.DataFrame(
            {"task": o.task, "returned": "yes" if o.succeeded else f"raised {o.error_class}",
             "its user is in the database": "yes" if o.row_written else "no"}
            for o in result.outcomes
        ), hide_index=True, width="stretch")
        for failed in (o for o in result.outcomes if not o.succeeded):
            st.code(f"{failed.task}: {failed.error_class}: {failed.error_message}", language=None, wrap_lines=True)
    st.caption(
        "The errors are SQLAlchemy's own, raised in the second task. On a session that already held its "
        "connection the first task's commit wrote the second task's user too, though the second task "
        "raised. The demo's users (emails under example.invalid) are deleted again."
    )


def experiment_result(result: ExperimentResult, db: Database) -> None:
    runs = (result.pooled, result.null_pool)
    for column, run in zip(st.columns(2), runs, strict=True):
        with column:
            st.markdown(f"**{run.engine}**")
            st.latex(
                rf"\Theta = \frac{{{run.completed}}}{{{run.total_seconds:.3f}\,\text{{s}}}}"
                rf" = {run.throughput:,.0f}\ \text{{requests/s}}"
            )
            a, b, c = st.columns(3)
            a.metric("Median wait", f"{run.wait_p50_ms:.1f} ms", help="Time to acquire a connection")
            b.metric("Worst wait", f"{run.wait_max_ms:.1f} ms", help="Time to acquire a connection")
            c.metric("Peak checked out", run.peak_checked_out)
            a.metric("Connections opened", run.connections_opened)
            b.metric("Timeouts", run.timeouts)
            c.metric("Other failures", run.failures)
            if run.parallel_limit < result.settings.concurrency:
                st.caption(
                    f"At most {run.parallel_limit} ran at once: the server had only that many "
                    "connections to spare, and other learners need some too."
                )
    chart_data = pd.DataFrame(
        [{"engine": r.engine.split(" (")[0], "wait (ms)": w * 1000} for r in runs for w in r.waits]
    )
    throughput = pd.DataFrame([{"engine": r.engine.split(" (")[0], "requests/s": r.throughput} for r in runs])
    engine_axis = alt.X("engine:N", sort=["pooled", "NullPool"], axis=alt.Axis(labelAngle=0), title=None)
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(throughput, title="Throughput Θ").mark_bar().encode(x=engine_axis, y="requests/s:Q", color="engine:N"),
        width="stretch",
    )
    right.altair_chart(
        alt.Chart(chart_data, title="Time to acquire a connection, per request")
        .mark_boxplot(extent="min-max").encode(x=engine_axis, y="wait (ms):Q", color="engine:N"),
        width="stretch",
    )
    s = result.settings
    capacity = s.pool_size + s.max_overflow
    st.markdown(_why_waits(result))
    if result.pooled.connections_opened > capacity:
        st.caption(
            f"The pool opened {result.pooled.connections_opened} connections, more than its {capacity}: an "
            "overflow connection is closed when it comes back to a full pool and opened again for the "
            "next wave. `max_overflow` absorbs bursts; `pool_size` should cover the steady load."
        )
    if s.hold_ms:
        st.caption(
            f"A pool of {capacity} connections, each held at least {s.hold_ms:g} ms, cannot serve more "
            f"than {capacity} / {s.hold_ms / 1000:g} s = {capacity / (s.hold_ms / 1000):,.0f} requests/s "
            "(Little's law)."
        )
    if result.backend == "sqlite":
        st.info(
            "You are on a SQLite file. A connection here is the file opened inside this process: no "
            "network, no login, no server process. NullPool pays only for aiosqlite's thread per "
            "connection and the PRAGMAs run on connect, so the gap is small and one run can go "
            "either way. On PostgreSQL every new connection is a socket connect, authentication and "
            "a new server process, and the pool wins clearly: set `DATABASE_URL` to see it."
        )
    else:
        # The embedded server (and a DATABASE_URL with ?host=/folder) is reached over a Unix socket.
        connect = "a TCP handshake" if db.url.host else "a connect on the server's Unix socket (no TCP here)"
        st.info(
            f"On PostgreSQL every NullPool request pays for a new connection: {connect}, "
            "authentication and a new server process, which is CPU on both sides. The pool pays "
            "that once per connection and then reuses it."
        )


def atomicity(demo: AtomicityResult) -> None:
    st.error(f"The database refused the third write: {widgets.escape_markdown(demo.error)}")
    st.dataframe(
        pd.DataFrame(
            {"users": [demo.users_before, demo.users_during, demo.users_after],
             "air_scores": [demo.scores_before, demo.scores_during, demo.scores_after]},
            index=["before", "inside the transaction", "after the rollback"],
        )
    )
    st.success(f"Rows left behind by the failed transaction: **{demo.rows_left_behind}**.")
    st.caption("Counts are for the whole database, so another learner's writes can show up in them.")
    widgets.show_statements(demo.log, label="Statements the failed transaction sent")


def _why_waits(result: ExperimentResult) -> str:
    """One sentence from the run's own figures on why one side waited longer."""
    pooled, null = result.pooled, result.null_pool
    capacity = result.settings.pool_size + result.settings.max_overflow
    if pooled.wait_p50_ms > null.wait_p50_ms:
        return (f"**Why the pool waited longer here:** {pooled.queued} of {pooled.requests} requests found all "
                f"{capacity} of its connections busy and queued for one, while NullPool gave each of "
                f"{null.parallel_limit} clients a connection of its own at once ({null.connections_opened} opened, "
                "each paid for). Give the pool as many connections as clients and it wins both figures.")
    return (f"**Why the pool is faster:** a pooled request was handed a connection already open (median wait "
            f"{pooled.wait_p50_ms:.1f} ms, {pooled.queued} of {pooled.requests} requests queued), while every "
            f"NullPool request waited for a new one to open (median {null.wait_p50_ms:.1f} ms). Raise the clients "
            f"past {capacity} and watch the pooled side queue.")


def atomicity_action(db: Database) -> None:
    if st.button("Run a transaction that fails part-way", key="atomicity", disabled=not st.session_state.db_initialized):
        with ui.errors_shown():
            st.session_state.atomicity_result = ui.run(pooling.demonstrate_atomicity(db))
    if demo := st.session_state.get("atomicity_result"):
        atomicity(demo)
