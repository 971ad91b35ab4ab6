"""The Streamlit glue, the layer above the lab bench: the one background event loop, the shared
resources, the sidebar and the error box. Pages import this package (and ui.widgets, the display
pieces; ui.gate, the instructor gate; ui.views, what each section draws from a result); it imports the
lab bench, the app's runtime and `source`, none of which knows anything of Streamlit.

Why one loop: asyncpg connections and redis.asyncio clients belong to the event loop that
created them. Streamlit reruns each page on a thread with no loop, so `asyncio.run` per
click would make a new loop each time and break every pooled connection on the next click.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import streamlit as st
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from streamlit.errors import StreamlitPageNotFoundError

import source
from labbench import lab_data, migrations, outbox_view, recorder
from labbench.faults import LabPublisher
from labbench.progress import Latest, Report
from labbench.unreachable_redis import unreachable_redis
from runtime.embedded_postgres import resolve_database
from runtime.singletons import process_wide
from source.redis_pool import PoolExhausted
from ui import gate, learner, number_inputs, widgets

T = TypeVar("T")
log = logging.getLogger("lab2")
number_inputs.install()  # NaN or ±inf from a crafted client resets a number input instead of crashing it

SECTIONS = [
    ("app.py", "Introduction"),
    ("pages/1_Data_Models.py", "1. Data Models"),
    ("pages/2_DB_Connectivity_and_Pooling.py", "2. DB Connectivity & Pooling"),
    ("pages/3_Repository_Pattern_and_N+1.py", "3. Repository Pattern & N+1"),
    ("pages/4_Caching_with_Redis.py", "4. Caching with Redis"),
    ("pages/5_Eventing_Outbox_Pattern.py", "5. Eventing (Outbox Pattern)"),
    ("pages/5b_Event_Design_Workbench.py", "5b. Event Table Design (Create)"),
    ("pages/6_Schema_Migrations.py", "6. Schema Migrations (Alembic)"),
    ("pages/7_Instructor.py", "7. Instructor"),
]

# What a learner's session carries from section to section.
SESSION_DEFAULTS: dict[str, Any] = {
    "db_initialized": False,
    "user_alex_id": None,
    "user_jane_id": None,
    "created_user_id": None,
}


# --- the event loop and the shared resources ---------------------------------------------
# Process-wide (runtime.singletons), not st.cache_resource: any browser may send Streamlit's
# clear_cache message, which would drop them and make a second loop, engine and publisher.


@process_wide
def event_loop() -> asyncio.AbstractEventLoop:
    """One loop per process, on a daemon thread, for every session."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="lab2-event-loop", daemon=True).start()
    return loop


class BackendTimeout(Exception):
    pass


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a coroutine on the shared loop and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(coro, event_loop())
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise BackendTimeout(f"no answer within {timeout:g} s") from None


def run_showing(
    make: Callable[[Report], Coroutine[Any, Any, T]], *, label: str, about: float, timeout: float = 60.0
) -> T:
    """Run `make(report)` on the shared loop while a status box says what it does, about how long it
    takes, and where it is (each `report(what, fraction)` the experiment makes). The box stays after
    the run, collapsed, with the time it took, so the learner (and a page test) can see it ran."""
    latest = Latest()
    started = time.monotonic()
    future = asyncio.run_coroutine_threadsafe(make(latest), event_loop())
    with st.status(f"{label} (about {about:.0f} s)…", expanded=True) as box:
        step, bar, shown = st.empty(), st.progress(0.0), None
        while True:
            try:
                result = future.result(0.2)
                break
            except TimeoutError:
                if time.monotonic() - started > timeout:
                    future.cancel()
                    box.update(label=f"{label}: no answer within {timeout:g} s", state="error", expanded=False)
                    raise BackendTimeout(f"no answer within {timeout:g} s") from None
            except BaseException:
                box.update(label=f"{label}: failed", state="error", expanded=False)
                raise
            if (now := latest.read()) is not None and now != shown:
                shown, (what, fraction) = now, now
                step.caption(what)
                if fraction is not None:
                    bar.progress(min(max(fraction, 0.0), 1.0))
        bar.progress(1.0)
        box.update(label=f"{label}: done in {time.monotonic() - started:.1f} s", state="complete", expanded=False)
    return result


@process_wide
def database() -> source.Database:
    """The app's database. Creating it connects to nothing; connections open on first use,
    on the shared loop, and stay in its pool."""
    choice = resolve_database()  # DATABASE_URL, else the embedded PostgreSQL (SQLite when it cannot start)
    # The process id in the name tells this app's connections in pg_stat_activity from another app process's.
    return source.Database(choice.url, label=choice.label, application_name=f"lab2-app-{os.getpid()}")


@process_wide
def redis_target() -> source.RedisTarget:
    return source.resolve_redis()


@dataclass(frozen=True)
class _Held:
    """A box for an awaitable client, so that no caller awaits the cached value by mistake."""

    value: Any


@process_wide
def _redis_client() -> _Held:
    target = redis_target()

    async def make():
        return source.make_redis_client(target)

    return _Held(run(make()))


def redis_client():
    """The cache's Redis client, created on the shared loop (it belongs to that loop)."""
    return _redis_client().value


@process_wide
def _inspect_client() -> _Held:
    target = redis_target()

    async def make():
        return source.make_redis_client(target, timeout=2.0)

    return _Held(run(make()))


def inspect_client():
    """A Redis client for the pages' own reads (the stream's XPENDING, XINFO and dead letters,
    the cache's keys as Redis holds them): the cache's client fails open after 50 ms, too short
    for these on a busy server."""
    return _inspect_client().value


@process_wide
def cache_stats() -> source.CacheStats:
    """Counters of every cached read this server process serves, whichever learner asked."""
    return source.CacheStats()


@process_wide
def _redis_cache(fault: str) -> _Held:
    target, stats = redis_target(), cache_stats()

    async def make():
        unreachable = None
        if fault != "none":  # the hung server runs on this loop, so it is made here
            unreachable = await unreachable_redis(fault)
        client = source.cache.cache_client(unreachable.target if unreachable else target)
        return source.RedisCache(client, stats=stats), unreachable

    return _Held(run(make()))


def redis_cache(fault: str = "none") -> source.RedisCache:
    """The process's read-through cache: one per process, so every session shares its counters,
    its in-flight loads and its memory of a failed Redis. fault="refused" or "hung" gives one
    whose Redis is unreachable, to watch the cache fail open without stopping anyone's Redis."""
    return _redis_cache(fault).value[0]


def redis_cache_target(fault: str) -> source.RedisTarget:
    held = _redis_cache(fault).value[1]
    return held.target if held else redis_target()


_publishers: list[LabPublisher] = []  # every publisher made in this process, so that reset stops them


@process_wide
def publisher() -> LabPublisher:
    """The process's outbox publisher, shared by every session; made stopped. Its thread has its
    own loop, engine and Redis clients, so nothing of the shared loop's is handed to it."""
    made = LabPublisher(
        database_url=resolve_database().url, redis_target=redis_target(), stream=source.outbox.stream_key()
    )
    _publishers.append(made)
    return made


def outbox_overview() -> outbox_view.OutboxOverview:
    """Section 5's figures and tables, read now from the database and the stream."""
    return run(outbox_view.outbox_overview(db=database(), redis_client=redis_client(), stream=publisher().stream))


def reset_lab_data() -> lab_data.ResetReport:
    """Every learner's data back to the start (section 2's reset): the lab's rows, its Redis
    keys, and the process's cache counters."""
    try:
        report = run(lab_data.reset_lab_data(database(), redis_client(), prefix=source.redis_prefix()), timeout=60)
    except lab_data.ResetIncomplete as stopped:
        backend_status.clear()
        raise source.LabError(_reset_incomplete(stopped)) from stopped
    cache_stats().reset()
    backend_status.clear()
    return report


def _reset_incomplete(stopped: lab_data.ResetIncomplete) -> str:
    """What a reset that stopped part-way did and did not do, backend by backend."""
    log.warning("reset stopped part-way", exc_info=stopped.cause)
    cause = error_message(stopped.cause)
    keys = f"deleted {stopped.keys_deleted} Redis key(s) under the lab's prefix"
    if isinstance(stopped.cause, redis.RedisError):
        return (f"The reset stopped part-way: {cause} Done: {keys} before that. Not done: no database row "
                "was deleted. Reset again once Redis answers.")
    if stopped.rows_deleted is None:
        return (f"The reset stopped part-way: {cause} Done: {keys}. Not done: no database row was deleted "
                "(its transaction did not commit). Reset again once the database answers.")
    rows = ", ".join(f"{n} {table}" for table, n in stopped.rows_deleted.items() if n) or "no rows"
    return (f"The reset stopped part-way: {cause} Done: {keys}, and deleted {rows}. Not done: restoring "
            "Alex and Jane may be unfinished; Initialize in section 2 restores them.")


def forget_cached_latest_score(user_id: str) -> source.cache.Invalidation:
    """After a score is committed outside section 4's repository (section 3's sample scores,
    section 5's score): the cached repository decides what it made stale and invalidates it on
    the lab's Redis."""
    users = source.CachedUserRepository(sessions=database().sessions, cache=redis_cache())
    return run(users.after_write("score", user_id))


def reset_resources() -> None:
    """Forget the shared resources so the next rerun builds them from the environment again
    (tests switch backends this way); stops the publisher thread. The event loop itself stays."""
    while _publishers:
        _publishers.pop().stop()
    # Close the old engine's connections on the loop they belong to, not later in a GC pass.
    run(database().dispose(), timeout=10)
    for cached in (database, redis_target, _redis_client, _inspect_client, backend_status, cache_stats, _redis_cache,
                   publisher):
        cached.clear()


# --- status of the backends (sidebar and banners) ------------------------------------------


@dataclass(frozen=True)
class BackendStatus:
    database_ok: bool  # False only when the database refused or failed, not when it was slow
    database_busy: bool  # no answer within the check's time: busy, so the schema was not read
    schema_revision: str | None
    redis_ok: bool


@st.cache_data(ttl=3, show_spinner=False)
def backend_status() -> BackendStatus:
    """Measured now (cached for 3 s so that a full room does not ping on every rerun)."""
    db, client = database(), redis_client()

    async def check() -> BackendStatus:
        revision, database_ok, busy = None, True, False
        try:
            revision = await asyncio.wait_for(db.current_revision(), 3)
        except TimeoutError:
            busy = True  # a saturated pool or loop is not an unreachable server
        except Exception:
            database_ok = False
        try:
            redis_ok = bool(await asyncio.wait_for(client.ping(), 1))
        except Exception:
            redis_ok = False
        return BackendStatus(database_ok, busy, revision, redis_ok)

    return run(check(), timeout=10)


# --- page set-up ---------------------------------------------------------------------------


def page(title: str, icon: str = "🗄️") -> None:
    """Every page calls this first: page config, session defaults, sidebar, banners."""
    st.set_page_config(page_title=f"{title} · Lab 2", page_icon=icon, layout="wide")
    widgets.start_run(title)
    for key, value in SESSION_DEFAULTS.items():
        st.session_state.setdefault(key, value)
    status = backend_status()
    if status.schema_revision is not None:
        st.session_state.db_initialized = True
    why_not = _progress_storable(status)
    learner.resume(database(), run, storable=why_not is None, why_not=why_not or "")
    _sidebar(status)
    _banners(status)


def _progress_storable(status: BackendStatus) -> str | None:
    """None when learners' progress can be stored now, else why not (the sidebar shows it)."""
    where = "so your progress is kept in this browser tab only for now."
    if not status.database_ok:
        return f"The database is unreachable, {where}"
    if status.database_busy:
        return f"The database is busy, {where}"
    if status.schema_revision is None:
        return f"The schema is not initialised (section 2), {where}"
    if not migrations.stores_learners(status.schema_revision):
        return (f"The schema is at revision {status.schema_revision}, below {migrations.FIRST_REVISION}, which "
                f"stores learners' progress (section 6 upgrades it), {where}")
    return None


def mark_done(section: str) -> None:
    """The learner did the section's key action: in session state, and in their row."""
    widgets.mark_done(section)
    learner.save(database(), run)


def knowledge_check(section: str, questions) -> None:
    """The section's quiz (widgets.knowledge_check); answers that changed are saved to the learner's row."""
    widgets.knowledge_check(section, questions)
    learner.save(database(), run)


def remember_made(**ids: Any) -> None:
    """IDs the learner made that later pages use: in session state, and in their row."""
    learner.made(**ids)
    learner.save(database(), run)


def remember_figure(section: str, name: str, figure: str) -> None:
    """A key figure of this learner's own run, as the page showed it (e.g. "pool: 12 ms median
    wait"): kept with their progress, so the end of Alex's story can quote the learner's numbers."""
    figures = dict(st.session_state.get("key_figures") or {})
    figures[section] = {**figures.get(section, {}), name: figure}
    remember_made(key_figures=figures)


INITIALISE_ABOUT_S = 3  # set-up on a fresh database: migrations, then the sample users


def run_then_rerun(make: Callable[[Report], Coroutine[Any, Any, T]], *, label: str, about: float, key: str,
                   then: Callable[[T], None] | None = None, timeout: float = 60.0) -> None:
    """run_showing, `then(result)`, then a rerun: for an action that changes what the page (or the
    sidebar) drew before it. show_kept(key) draws the finished status box again in the next run and
    returns the result."""
    started = time.monotonic()
    result = run_showing(make, label=label, about=about, timeout=timeout)
    if then is not None:
        then(result)
    st.session_state[f"kept_status_{key}"] = f"{label}: done in {time.monotonic() - started:.1f} s"
    st.session_state[f"kept_result_{key}"] = result
    st.rerun()


def show_kept(key: str) -> Any:
    """In the run right after run_then_rerun(key=key): its status box again, collapsed, and its result
    (None otherwise)."""
    if text := st.session_state.pop(f"kept_status_{key}", None):
        st.status(text, state="complete", expanded=False)
        return st.session_state.pop(f"kept_result_{key}", None)
    return None


def initialise(*, label: str, where: str = "first_use") -> None:
    """Schema to head and the sample users, showing each step, then a rerun (the sidebar, drawn
    before this, shows the new revision); show_initialised(where) draws its status box again."""

    def ready(users) -> None:
        alex, jane = users
        st.session_state.update(db_initialized=True, user_alex_id=alex.id, user_jane_id=jane.id)
        backend_status.clear()

    run_then_rerun(lambda report: lab_data.initialise(database(), report=report), label=label,
                   about=INITIALISE_ABOUT_S, key=f"initialised_{where}", then=ready)


def show_initialised(where: str = "first_use") -> bool:
    """True (and the finished status box drawn) in the run right after initialise(where=where)."""
    return show_kept(f"initialised_{where}") is not None


def ensure_initialized() -> bool:
    """True when the schema and the sample users exist, with their IDs in session state. On a
    learner's own server (no LAB_INSTRUCTOR_KEY) the first page that needs them sets them up, in
    any order; with a key set that is the instructor's to do, and this says so."""
    show_initialised()
    if not backend_status().database_ok:
        return False
    if st.session_state.db_initialized and st.session_state.user_alex_id is None:
        with errors_shown():
            alex, jane = run(lab_data.find_sample_users(database()))
            if alex is not None and jane is not None:
                st.session_state.user_alex_id, st.session_state.user_jane_id = alex.id, jane.id
    if st.session_state.db_initialized and st.session_state.user_alex_id is not None:
        return True
    if gate.instructor_key_set():
        st.info("The lab's database is not set up yet. On this shared server that is the instructor's to do "
                "(Initialize, in section 2 or on 7. Instructor): ask them, then reload this page.")
        return False
    with errors_shown():
        initialise(label="Setting up the database on first use: the schema, then Alex and Jane")
    return bool(st.session_state.db_initialized and st.session_state.user_alex_id)


def require_initialized() -> None:
    """Stop the page unless the schema and sample users exist (ensure_initialized sets them up
    where a learner may)."""
    if not ensure_initialized():
        st.stop()


def _sidebar(status: BackendStatus) -> None:
    db, target = database(), redis_target()
    with st.sidebar:
        st.markdown("### Lab 2: Data Architecture & Persistence")
        _navigation()
        st.markdown("**Database**")
        st.caption(f"{_dot(status.database_ok)} {db.label}")
        st.code(db.masked_url, language=None)
        if (choice := resolve_database()).kind != "url":
            st.caption(widgets.escape_markdown(choice.note))
        if status.database_busy:
            st.caption("Schema: not checked (the database is busy)")
        elif not status.database_ok:
            st.caption("Schema: unknown (database unreachable)")
        else:
            st.caption(
                f"Schema: revision {status.schema_revision}" if status.schema_revision
                else "Schema: not initialised (see section 2)"
            )
        st.markdown("**Redis**")
        st.caption(f"{_dot(status.redis_ok)} {target.label}: {target.reason}")
        _publisher_status()
        learner.sidebar(database(), run)


def _publisher_status() -> None:
    # Read at each rerun. The app sets no timers in the browser: a timed fragment rerun that lands
    # as a click's run ends makes Streamlit (1.67) drop that run's output.
    figures = publisher().snapshot()
    st.markdown("**Outbox publisher**")
    if not figures.running:
        st.caption(":gray[● stopped]" + (f" · {figures.published} published before" if figures.published else ""))
        return
    last = f" · last batch {figures.last_batch_at:%H:%M:%S} UTC" if figures.last_batch_at else ""
    st.caption(f":green[● running] · {figures.published} published · {figures.failed} failed{last}")
    if figures.last_error and figures.last_error_at:
        st.caption(f"Last error at {figures.last_error_at:%H:%M:%S} UTC: {widgets.escape_markdown(figures.last_error)}")


def learner_params() -> dict[str, str] | None:
    """For links between pages: the learner's token stays in the URL."""
    me = learner.current()
    return {learner.QUERY_KEY: me.token} if me else None


def _navigation() -> None:
    """The sections with the spec's labels (Streamlit's own list would call the entry page "app")."""
    for path, label in SECTIONS:
        try:
            st.page_link(path, label=label, query_params=learner_params())
        except StreamlitPageNotFoundError:  # AppTest runs a page as its own entry point
            st.caption(label)


def _dot(ok: bool) -> str:
    return ":green[● up]" if ok else ":red[● down]"


def _banners(status: BackendStatus) -> None:
    if status.database_busy:
        st.info(f"The database ({database().label}) is busy: its status check took over 3 s.")
    if not status.database_ok:
        st.error(
            f"**Database unreachable: {database().label}.** Pages that read or write data will "
            "show an error until it is back; the explanations and code still work."
        )
    if not status.redis_ok:
        st.warning(
            f"**Redis is not answering ({redis_target().label}).** Cached reads fall back to the "
            "database; the outbox keeps events pending until Redis returns."
        )


# --- errors ------------------------------------------------------------------


def error_message(exc: BaseException) -> str:
    """What a learner sees for an exception: its domain message, or the backend that failed.
    Never a traceback, never a URL with credentials."""
    if isinstance(exc, source.LabError):
        return exc.message
    if isinstance(exc, PoolExhausted):
        return f"Redis ({redis_target().label}) was not asked. {exc}. Try again in a moment."
    if isinstance(exc, redis.TimeoutError):
        return (f"Redis ({redis_target().label}) did not answer: TimeoutError. An app process too busy to "
                "read the reply in time gets the same error.")
    if isinstance(exc, redis.RedisError):
        return f"Redis ({redis_target().label}) did not answer: {type(exc).__name__}."
    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        waited = source.database.SQLITE_BUSY_TIMEOUT_MS / 1000
        return (f"The database ({database().label}) is busy: SQLite lets one connection write at a "
                f"time, and other writes held it for over {waited:g} s. Try again in a moment.")
    if _refused_value(exc):  # it answered: the values were wrong, not the connection
        return f"The database ({database().label}) refused a value in the request; nothing was written."
    if isinstance(exc, (OperationalError, DBAPIError, ConnectionError, OSError)):
        return f"The database ({database().label}) is not reachable or refused the request."
    if isinstance(exc, BackendTimeout):
        return f"The operation timed out ({exc})."
    return f"Something went wrong ({type(exc).__name__}); details are in the server log."


def _refused_value(exc: BaseException) -> bool:
    """A data exception or a broken constraint: SQLAlchemy's DataError or IntegrityError, or on
    asyncpg (which maps some to its generic Error) SQLSTATE class 22 or 23, e.g. 22021 for NUL."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    return isinstance(exc, DBAPIError) and sqlstate[:2] in ("22", "23")


@contextmanager
def errors_shown(where: Any = st, *, fields: dict[str, Any] | None = None) -> Iterator[None]:
    """Run a page action; show any failure as a clear message instead of a traceback.
    `fields` maps a LabError's field (e.g. "email") to the container next to that widget."""
    try:
        yield
    except Exception as exc:  # the learner sees a message; the log keeps the details
        if _refused_value(exc):
            log.warning("the database refused a value: %s", str(getattr(exc, "orig", exc)).splitlines()[0][:200])
        elif not isinstance(exc, source.LabError):
            log.exception("page action failed")
        field = getattr(exc, "field", None)
        # Messages may quote what the learner typed: keep markdown in it inert.
        (fields or {}).get(field, where).error(widgets.escape_markdown(error_message(exc)))


def run_recorded(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> tuple[T, recorder.StatementLog]:
    """`run(coro)`, also returning the SQL statements it sent to the app's database."""
    db = database()

    async def recorded() -> tuple[T, recorder.StatementLog]:
        with recorder.record(db) as statements:
            return await coro, statements

    return run(recorded(), timeout)
