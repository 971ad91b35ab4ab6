"""Section 2's arc, drawn: what a connection costs; the minimal engine run as sequential and as
concurrent lookups after the learner's prediction; a pooled connection the server ends, under the
minimal engine and the hardened one, with the diff between them. Each result stays in session state
until the learner runs it again."""

from __future__ import annotations

import inspect
import math

import streamlit as st

import ui
from labbench import connections
from source import database, database_minimal
from source.database import Database
from ui import forms, widgets


def connection_cost(db: Database) -> None:
    if st.button("Time 10 new connections, then 10 queries on one open connection", key="conn_cost"):
        with ui.errors_shown():
            st.session_state.conn_cost_result = ui.run(connections.connection_cost(db))
    cost = st.session_state.get("conn_cost_result")
    if cost is None:
        return
    widgets.metric_row([("A new connection + SELECT 1 (median)", f"{cost.connect_p50:.2f} ms"),
                        ("SELECT 1 on an open one (median)", f"{cost.reuse_p50:.2f} ms"),
                        ("Ratio", f"{cost.connect_p50 / cost.reuse_p50:,.0f}×")])
    where = ("the file opened, its settings applied and a thread started for the driver" if db.backend == "sqlite"
             else "a connect, a login and a new server process")
    st.caption(f"Measured now on {db.label}, each new connection {where}.")


def minimal_pattern() -> None:
    # class_source, not inspect.getsource: for a class, inspect parses the module (see class_source)
    st.code(widgets.class_source(database_minimal.Database)[1] + "\n\n" + inspect.getsource(database_minimal.find_user),
            language="python")


def lookups(db: Database, *, ready: bool) -> None:
    """Predict, then run: the same lookups one after another, then as concurrent tasks (of the sample
    users: `ready` says they exist)."""
    form = forms.Form("lookups_form")
    with st.form(form.key):
        left, middle, right = st.columns(3)
        count = left.number_input("Lookups", value=20, step=1, key="lookups_n")
        form.slot("lookups", left)
        wait = middle.number_input("Each waits in the database (ms)", value=20, step=5, key="lookups_wait")
        form.slot("wait_ms", middle)
        guess = right.number_input("Your prediction: ms for all of them, concurrently", value=None, step=10,
                                   key="lookups_guess")
        form.slot("guess", right)
        run = st.form_submit_button("Run them one after another, then concurrently", key="lookups_run",
                                    disabled=not ready)
    if run:
        form.start()
        count = form.within("lookups", count, "Lookups", 1, connections.MAX_LOOKUPS, whole=True)
        wait = form.within("wait_ms", wait, "The wait", 0, connections.MAX_WAIT_MS)
        guess = form.within("guess", guess, "Your prediction (ms)", 0, 1_000_000)
        if form.ok:
            with form.action():
                about = max(1.0, count * wait / 1000 * 1.3)
                result = ui.run_showing(
                    lambda report: connections.sequential_vs_concurrent(db, lookups=count, wait_ms=wait,
                                                                         report=report),
                    label=f"Running {count} lookups twice", about=about, timeout=60)
                st.session_state.lookups = (result, guess)
                ui.remember_figure("pooling", "await", f"{result.lookups} lookups in "
                                   f"{result.concurrent_s * 1000:,.0f} ms as concurrent tasks, "
                                   f"{result.sequential_s * 1000:,.0f} ms one after another")
    if shown := st.session_state.get("lookups"):
        _lookups_result(*shown)


def _lookups_result(result: connections.Lookups, guess: float) -> None:
    sequential, concurrent = result.sequential_s * 1000, result.concurrent_s * 1000
    widgets.metric_row([("One after another", f"{sequential:,.0f} ms"), ("Concurrently", f"{concurrent:,.0f} ms"),
                        ("Your prediction", f"{guess:,.0f} ms"),
                        ("Connections at once", result.peak_connections)])
    off = "about right" if 0.7 <= guess / concurrent <= 1.4 else ("too low" if guess < concurrent else "too high")
    if result.speedup >= 1:
        waves = math.ceil(result.lookups / max(result.peak_connections, 1))
        st.markdown(
            f"Your prediction was {off}. `await` let one thread wait for {result.peak_connections} lookups at once: "
            f"{result.speedup:.1f}× faster. The pool caps it: {result.lookups} lookups on at most "
            f"{result.peak_connections} connections go in {waves} wave{'s' if waves != 1 else ''} of at least "
            f"{result.wait_ms:g} ms each."
        )
    else:
        st.markdown(
            f"Your prediction was {off}. Concurrently was slower here ({result.speedup:.1f}×): with "
            f"{result.wait_ms:g} ms of waiting, a lookup is mostly Python work (SQLAlchemy and the driver), which "
            f"the one event loop does one at a time, and the tasks opened {result.peak_connections} connections "
            "where one after another reused one. `await` pays where a task waits."
        )


def drop(db: Database, *, hardened: bool, ready: bool) -> None:
    """A pooled connection the server ended, under one engine (its requests look up a sample user:
    `ready` says they exist); the result stays."""
    name = "hardened" if hardened else "minimal"
    label = f"End the {name} engine's idle connections on the server, then send 3 requests"
    if st.button(label, key=f"drop_{name}", disabled=db.backend != "postgresql" or not ready):
        with ui.errors_shown():
            st.session_state[f"drop_{name}_result"] = ui.run(connections.drop_connections(db, hardened=hardened))
    if db.backend != "postgresql":
        if not hardened:
            st.info("A SQLite file is opened inside this process: no server can end its connections, so this "
                    "failure needs PostgreSQL (set `DATABASE_URL`; the embedded PostgreSQL also shows it).")
        return
    if run := st.session_state.get(f"drop_{name}_result"):
        lines = [f"{n}. {'ok' if outcome == 'ok' else 'failed: ' + outcome}" for n, outcome in
                 enumerate(run.outcomes, start=1)]
        st.markdown(f"**{name}**: the server ended {run.ended} connection(s); the requests after that:")
        st.code("\n".join(lines), language=None, wrap_lines=True)
        st.caption(f"The pool opened {run.opened_again} new connection(s) meanwhile. "
                   + ("The first request was handed a dead connection and failed; SQLAlchemy then threw the "
                      "pool's older connections away, so the next ones connected afresh."
                      if run.failed else "The pre-ping found each dead connection at checkout and replaced it "
                      "before the request used it."))


def hardening_diff() -> None:
    """The engine's creation, minimal against hardened (the rest of Database.__init__ names the
    backend and sets SQLite up)."""
    minimal = inspect.getsource(database_minimal.Database.__init__)
    hardened = inspect.getsource(database.Database.__init__)
    widgets.show_diff(widgets.lines_from(minimal, "# A pool", "create_async_engine("),
                      widgets.lines_from(hardened, "# pre-ping", "create_async_engine("),
                      before="source/database_minimal.py", after="source/database.py")
