"""2. Connections, measured: what a new one costs against a query on an open one; what `await` buys
(the same lookups one after another, then concurrently with a session per task); and what a pooled
connection that the server ended does to the next request, with the minimal engine
(source/database_minimal.py) and with the hardened one (source/database.py).

Each runs on throwaway engines of its own on the app's database, disposed afterwards."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from sqlalchemy import event, exc, func, select, text

from runtime.turns import POOL_EXPERIMENT, turn
from source import database_minimal
from source.database import Database
from source.errors import LabError
from source.models import User
from source.services import SAMPLE_USERS

from .progress import Report, silent

# --- what a connection costs --------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionCost:
    connect_ms: list[float]  # open a new connection, then SELECT 1 on it
    reuse_ms: list[float]  # SELECT 1 on a connection already open

    @property
    def connect_p50(self) -> float:
        return statistics.median(self.connect_ms)

    @property
    def reuse_p50(self) -> float:
        return statistics.median(self.reuse_ms)


async def connection_cost(db: Database, *, samples: int = 10) -> ConnectionCost:
    """Time `samples` new connections (each one SELECT 1, then closed) against `samples` SELECT 1
    on one open connection."""
    fresh, reused = Database(db.url, null_pool=True), Database(db.url)
    connect, reuse = [], []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            async with fresh.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                connect.append((time.perf_counter() - started) * 1000)
        async with reused.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # opened (and the statement prepared) before timing
            for _ in range(samples):
                started = time.perf_counter()
                await conn.execute(text("SELECT 1"))
                reuse.append((time.perf_counter() - started) * 1000)
    finally:
        await fresh.dispose()
        await reused.dispose()
    return ConnectionCost(connect, reuse)


# --- what await buys ----------------------------------------------------------------------

MAX_LOOKUPS = 100
MAX_WAIT_MS = 100


@dataclass(frozen=True)
class Lookups:
    lookups: int
    wait_ms: float  # what each lookup also waited in the database
    sequential_s: float
    concurrent_s: float
    peak_connections: int  # connections checked out at once, concurrently

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.concurrent_s if self.concurrent_s else 0.0


async def _lookup(sessions, email: str, wait_ms: float) -> None:
    """One task's lookup, in a session of its own; `wait_ms` stands for a slower query or a
    database farther away (PostgreSQL's pg_sleep; on SQLite a sleep function in the database call)."""
    async with sessions() as session:
        await session.scalar(select(User).where(User.email == email))
        if wait_ms:
            await session.execute(select(func.pg_sleep(wait_ms / 1000) if session.bind.dialect.name == "postgresql"
                                         else func.lab_sleep(wait_ms / 1000)))


async def sequential_vs_concurrent(db: Database, *, lookups: int = 20, wait_ms: float = 20,
                                   report: Report = silent) -> Lookups:
    """The same lookups, awaited one after another, then gathered as concurrent tasks, on a
    throwaway engine with the app's pool settings (5 kept idle, 10 more under load)."""
    if not (1 <= lookups <= MAX_LOOKUPS and 0 <= wait_ms <= MAX_WAIT_MS):
        raise LabError(f"Lookups go from 1 to {MAX_LOOKUPS}, the wait from 0 to {MAX_WAIT_MS} ms.")
    report("Waiting for any other learner's connection experiment to finish", 0.0)
    # Up to 15 connections at once: one such experiment at a time on the server (the pool experiment's turn).
    async with turn(db.sessions, POOL_EXPERIMENT):
        return await _timed_lookups(db, lookups, wait_ms, report)


async def _timed_lookups(db: Database, lookups: int, wait_ms: float, report: Report) -> Lookups:
    engine_db = Database(db.url)
    if engine_db.backend == "sqlite":
        event.listen(engine_db.engine.sync_engine, "connect",
                     lambda conn, _record: conn.create_function("lab_sleep", 1, time.sleep))
    emails = [row["email"] for row in SAMPLE_USERS]
    checked_out = peak = 0

    def on_checkout(*_args) -> None:
        nonlocal checked_out, peak
        checked_out += 1
        peak = max(peak, checked_out)

    def on_checkin(*_args) -> None:
        nonlocal checked_out
        checked_out -= 1

    try:
        report(f"{lookups} lookups, one after another", 0.05)
        await _lookup(engine_db.sessions, emails[0], 0)  # the first connection opens before timing
        started = time.perf_counter()
        for number in range(lookups):
            await _lookup(engine_db.sessions, emails[number % len(emails)], wait_ms)
        sequential = time.perf_counter() - started
        report(f"the same {lookups} lookups as concurrent tasks", 0.8)
        event.listen(engine_db.engine.sync_engine.pool, "checkout", on_checkout)
        event.listen(engine_db.engine.sync_engine.pool, "checkin", on_checkin)
        started = time.perf_counter()
        await asyncio.gather(*(_lookup(engine_db.sessions, emails[n % len(emails)], wait_ms) for n in range(lookups)))
        concurrent = time.perf_counter() - started
    finally:
        await engine_db.dispose()
    return Lookups(lookups, wait_ms, sequential, concurrent, peak)


# --- a pooled connection the server ended ---------------------------------------------------

REQUESTS_AFTER = 3


class NoServer(LabError):
    pass


@dataclass(frozen=True)
class DropRun:
    engine: str  # "minimal" or "hardened"
    ended: int  # the pool's idle connections the server ended
    outcomes: list[str]  # each request after that, in order: "ok" or the error it raised
    opened_again: int  # connections the pool opened after the drop

    @property
    def failed(self) -> int:
        return sum(outcome != "ok" for outcome in self.outcomes)


async def drop_connections(db: Database, *, hardened: bool) -> DropRun:
    """A throwaway engine serves three requests at once, so its pool keeps three idle connections.
    The server then ends them (pg_terminate_backend, as a restart, a failover or an idle-session
    timeout would), and the engine serves REQUESTS_AFTER requests, one after another."""
    if db.backend != "postgresql":
        raise NoServer("A SQLite file is opened inside this process: there is no server that could end a "
                       "connection. Set DATABASE_URL to a PostgreSQL server to see this failure.")
    async with turn(db.sessions, POOL_EXPERIMENT):
        return await _drop_and_request(db, hardened)


async def _drop_and_request(db: Database, hardened: bool) -> DropRun:
    engine_db = Database(db.url) if hardened else database_minimal.Database(db.url)
    pool = engine_db.engine.sync_engine.pool
    pids, opened = [], 0

    def on_connect(dbapi_connection, _record) -> None:
        nonlocal opened
        opened += 1
        pids.append(dbapi_connection.driver_connection.get_server_pid())

    event.listen(pool, "connect", on_connect)
    email = SAMPLE_USERS[0]["email"]
    try:
        await asyncio.gather(*(database_minimal.find_user(sessions=engine_db.sessions, email=email) for _ in range(3)))
        ended = await _end_backends(db, pids)
        opened, outcomes = 0, []
        for _ in range(REQUESTS_AFTER):
            try:
                await database_minimal.find_user(sessions=engine_db.sessions, email=email)
                outcomes.append("ok")
            except exc.DBAPIError as failed:
                outcomes.append(f"{type(failed).__name__}: {str(failed.orig).splitlines()[0][:160]}")
    finally:
        await engine_db.dispose()
    return DropRun("hardened" if hardened else "minimal", ended, outcomes, opened)


async def _end_backends(db: Database, pids: list[int]) -> int:
    """End these server processes and wait (up to 2 s each) until they are gone."""
    async with db.engine.connect() as conn:
        ended = 0
        for pid in pids:
            ended += bool(await conn.scalar(select(func.pg_terminate_backend(pid, 2000))))
        await conn.rollback()
    return ended
