"""Section 4's arc, drawn: the minimal cache-aside's code and its run, the prediction, each failure
on the minimal version and on the hardened cache, and the lines of source/cache.py that answer it,
as a diff from the minimal version (taken from the source as it runs, so it cannot drift)."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable

import pandas as pd
import streamlit as st

import ui
from labbench import cache_failures
from source import cache, cache_aside
from source.cache import RedisCache
from source.cache_aside import CacheAside
from source.cached_repository import CachedUserRepository
from source.redis_setup import make_redis_client
from source.single_flight import SingleFlight
from ui import widgets

# Each failure's answer: (minimal function, a line of it, hardened function, the line that replaces it).
ANSWERS: dict[str, list[tuple[Callable, str, Callable, str]]] = {
    "stampede": [
        (CacheAside.get, "self.redis.get(key)", RedisCache.read_through, "await self._get(key)"),
        (CacheAside.get, "await load()", RedisCache.read_through, "self.flights.join("),
    ],
    "stale": [
        (CacheAside.get, "self.redis.set(", RedisCache.read_through, "self._store_if_unchanged("),
        (CacheAside.rename_user, "self.redis.delete(", CachedUserRepository.update_user, "self.after_write("),
    ],
    "hung": [
        (cache_failures.plain_client, "Redis.from_url(", cache.cache_client, "make_redis_client("),
        (CacheAside.get, "self.redis.get(key)", RedisCache.read_through, "await self._get(key)"),
    ],
}
# The hardening's own code, for the learner who wants to read it.
MECHANISMS: dict[str, list[Callable | str]] = {
    "stampede": [SingleFlight.join, RedisCache._get],
    "stale": [RedisCache._store_if_unchanged, RedisCache.invalidate, RedisCache._bury, "_STORE_IF_UNCHANGED"],
    "hung": [make_redis_client, RedisCache._call, RedisCache._failed],
}


def statement(function: Callable, needle: str) -> list[str]:
    """The lines of the statement in `function`'s source that contains `needle` (a call that spans
    several lines comes whole). Raises LookupError if the source has no such line."""
    lines = textwrap.dedent(inspect.getsource(function)).splitlines()
    for number, line in enumerate(lines):
        if needle in line:
            taken, depth = [], 0
            for more in lines[number:]:
                taken.append(more.strip())
                depth += more.count("(") - more.count(")")
                if depth <= 0:
                    return taken
    raise LookupError(f"{function.__qualname__} has no line with {needle!r}")


def answer_diff(failure: str) -> str:
    out = []
    for old_fn, old, new_fn, new in ANSWERS[failure]:
        out.append(f"@@ {old_fn.__qualname__} -> {new_fn.__qualname__}")
        out += [f"-{line}" for line in statement(old_fn, old)] + [f"+{line}" for line in statement(new_fn, new)]
    return "\n".join(out)


def whole_diff() -> str:
    return widgets.code_diff(inspect.getsource(CacheAside.get), inspect.getsource(RedisCache.read_through),
                             before="cache_aside.py", after="cache.py", context=1)


def minimal_code() -> str:
    text = inspect.getsource(cache_aside)
    return text[text.index("Sessions = "):]


def show_answer(failure: str) -> None:
    st.code(answer_diff(failure), language="diff")
    with st.expander("The hardening's own code"):
        for piece in MECHANISMS[failure]:
            if isinstance(piece, str):  # a script the cache sends to Redis
                st.code(f"-- {piece}, run by Redis{getattr(cache, piece)}", language="lua")
            else:
                st.code(textwrap.dedent(inspect.getsource(piece)), language="python")


# --- results -------------------------------------------------------------------------------------


def minimal_run(steps: list[cache_failures.Step]) -> None:
    st.dataframe(pd.DataFrame({
        "call": [s.call for s in steps],
        "database statements": [s.statements for s in steps],
        "ms": [round(s.ms, 2) for s in steps],
        "returned": [s.name or "" for s in steps],
    }), hide_index=True)
    miss, hit, write = steps[0], steps[1], steps[2]
    st.caption(
        f"The first read missed and loaded the row ({miss.ms:.2f} ms); the second was one GET from Redis "
        f"({hit.ms:.2f} ms). The write sent {write.statements} statements (the row's SELECT, its UPDATE), "
        "committed, then deleted the key, so the last read loaded v2. Your row and keys are gone again."
    )


def stampede(result: cache_failures.Stampede, *, predicted: int | None = None) -> None:
    said = "" if predicted is None else f"You predicted **{predicted}**. "
    where = "minimal version" if result.version == "minimal" else "hardened cache"
    st.markdown(
        f"{said}On the {where}, {result.readers} readers of one cold key made **{result.loads} database "
        f"load{'s' * (result.loads != 1)}** in {result.seconds * 1000:.0f} ms."
    )
    sent = ", ".join(f"{name} {count}" for name, count in sorted(result.commands.items()))
    if result.version == "minimal" and result.loads == result.readers:
        st.caption(f"Redis received: {sent}. Every reader's GET went out before any reader had stored the row, "
                   "so each found nothing, loaded the row and stored it.")
    elif result.version == "minimal":
        st.caption(f"Redis received: {sent}. {result.loads} readers' GETs went out before the first store and "
                   "each of them loaded and stored the row; the others' GETs came after it and hit.")
    else:
        first = (" Redis did not have the compare-and-set script yet: it answered the first EVALSHA with NOSCRIPT, "
                 "so the client sent SCRIPT LOAD, then EVALSHA again.") if "SCRIPT LOAD" in result.commands else ""
        st.caption(f"Redis received: {sent}. The readers shared one GET and one load; the reader that loaded "
                   f"stored the row with one EVALSHA (the compare-and-set script).{first}")


def race(result: cache_failures.Race) -> None:
    if result.version == "minimal":
        st.error(
            f"**Stale.** The database holds {result.database_has}, but the next read returned "
            f"**{result.next_read}** from Redis: the reader stored the row it loaded before the write, after "
            f"the write had deleted the key. It stays for the rest of its TTL: {result.ttl_seconds} s."
        )
    else:
        st.success(
            f"**Fresh.** The reader loaded {result.reader_got} and did not store it (its store found the write's "
            f"tombstone, not the empty key its GET saw). The next read missed and loaded **{result.next_read}**."
        )


def hung(result: cache_failures.Hung) -> None:
    if result.served is None:
        st.error(
            f"**The read failed after {result.seconds:.1f} s** with {result.error}: redis-py's default socket "
            "timeout is 5 s, and the minimal version has no fallback, so the dashboard request fails too."
        )
    else:
        st.success(
            f"**Served from the database in {result.seconds * 1000:.0f} ms** ({result.error} after the cache's "
            "50 ms budget). Redis is then skipped for 1 s, so the next reads do not wait at all."
        )


# --- the failure tabs ------------------------------------------------------------------------------

TAB_TEXT = {
    "stampede": "Above, each of the minimal version's readers loaded the row. The hardened cache lets "
                "concurrent readers of one key share one GET and one load (single flight).",
    "stale": "A reader misses and loads v1; a writer commits v2 and deletes the key; then the reader "
             "stores v1. Each has its own client and cache object: all they share is Redis and the database, "
             "as two app processes do. The hardened write leaves a *tombstone* (a marker value) in the key "
             "instead, and a reader stores only if the key still holds what its own GET saw.",
    "hung": "Redis accepts the connection and never answers. The minimal version waits for its client's "
            "timeout; the hardened cache gives each step 50 ms, then serves the read from the database.",
}
RUNS = {  # failure: (button on the minimal version, on the hardened cache, about how long the minimal takes)
    "stampede": (None, f"Run {cache_failures.READERS} readers on the hardened cache", 1),
    "stale": ("Race a write on the minimal version", "Race a write on the hardened cache", 1),
    "hung": ("Hang Redis under the minimal version", "Hang Redis under the hardened cache", 5),
}
DRAW = {"stampede": stampede, "stale": race, "hung": hung}


def _experiment(failure: str, version: str, *, db, target, mine: dict):
    if failure == "stampede":
        return lambda report: cache_failures.stampede(db, version=version, target=target, report=report, **mine)
    if failure == "stale":
        return lambda report: cache_failures.stale_set(db, version=version, target=target, report=report, **mine)
    return lambda report: cache_failures.hung(db, version=version, report=report, **mine)


def failure_tab(failure: str, *, db, target, mine: dict) -> None:
    """The failure on the minimal version, the diff that answers it, the same failure hardened."""
    state = st.session_state
    st.markdown(TAB_TEXT[failure])
    minimal_label, hardened_label, about = RUNS[failure]
    for version, label in (("minimal", minimal_label), ("hardened", hardened_label)):
        if version == "hardened":
            st.markdown("**The answer, as a diff from the minimal version**")
            show_answer(failure)
        key = f"cache_{failure}_{version}"
        if label is not None and st.button(label, key=key):
            with ui.errors_shown():
                state[f"{key}_result"] = ui.run_showing(_experiment(failure, version, db=db, target=target, mine=mine),
                                                        label=label, about=about if version == "minimal" else 1)
        if label is not None and (result := state.get(f"{key}_result")) is not None:
            DRAW[failure](result)  # (the stampede's minimal run is the prediction's, drawn above the tabs)
