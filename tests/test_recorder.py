"""The statement recorder shows everything sent on the connection: data statements, transaction
control and the pool's pre-ping, and on PostgreSQL its count agrees with the wire."""

from __future__ import annotations

import asyncio
import struct
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from labbench.recorder import record
from source import Database, DuplicateEmail, User, UserRepository, run_db_setup_and_create_user


def kinds(log) -> list[tuple[str, str]]:
    return [(entry.kind, entry.sql.split(";")[0].split()[0] if entry.sql.strip(" ;") else ";") for entry in log.sent]


async def count_users(db: Database, *, begin: bool) -> int:
    if begin:
        async with db.sessions.begin() as session:
            return await session.scalar(select(func.count()).select_from(User))
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(User))


async def test_a_session_shows_its_ping_begin_statement_and_end(db):
    await run_db_setup_and_create_user(db)
    with record(db) as read:
        await count_users(db, begin=False)
    with record(db) as write:
        await count_users(db, begin=True)
    ping = "BEGIN" if db.backend == "postgresql" else "SELECT"
    assert kinds(read) == [("ping", ping), ("transaction", "BEGIN"), ("data", "SELECT"), ("transaction", "ROLLBACK")]
    assert kinds(write) == [("ping", ping), ("transaction", "BEGIN"), ("data", "SELECT"), ("transaction", "COMMIT")]
    assert read.count == write.count == 1  # the headline stays the data statements
    assert read.commands == (6 if db.backend == "postgresql" else 4)  # asyncpg's ping is BEGIN; ; ROLLBACK


async def test_a_failed_transaction_shows_the_rollback_it_sent(db):
    await run_db_setup_and_create_user(db)
    with record(db) as log, pytest.raises(DuplicateEmail):
        async with db.sessions.begin() as session:
            await UserRepository(session).create(email="alex.smith@innovateai.com", name="Again")
    assert [kind for kind, _ in kinds(log)][-1:] == ["transaction"]
    assert log.sent[-1].sql == "ROLLBACK"
    assert not log.of_kind("transaction")[1:-1]  # BEGIN first, ROLLBACK last, nothing between


async def test_nothing_is_recorded_outside_a_block(db):
    await run_db_setup_and_create_user(db)
    with record(db) as log:
        pass
    await count_users(db, begin=True)
    assert log.sent == []


# --- the wire: a proxy that counts the PostgreSQL frontend's round trips ------------------------


class WireCounter:
    """Counts what clients send through it: each simple Query ('Q') and each Sync ('S', which ends an
    extended-protocol exchange) is one round trip to the server."""

    def __init__(self, delay: float = 0.0) -> None:
        self.round_trips = 0
        self.delay = delay  # seconds added to each round trip, before it reaches the server

    async def pump_counting(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Untyped start-up messages first (SSLRequest, then StartupMessage), then typed ones.
        while True:
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            body = await reader.readexactly(length - 4)
            writer.write(struct.pack("!I", length) + body)
            await writer.drain()
            if struct.unpack("!I", body[:4])[0] != 80877103:  # not an SSLRequest: start-up done
                break
        while True:
            kind = await reader.readexactly(1)
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            body = await reader.readexactly(length - 4)
            if kind in (b"Q", b"S"):
                self.round_trips += 1
                if self.delay:
                    await asyncio.sleep(self.delay)
            writer.write(kind + struct.pack("!I", length) + body)
            await writer.drain()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


@asynccontextmanager
async def wire_proxy(url, delay: float = 0.0):
    """A TCP proxy on 127.0.0.1 in front of the server at `url` (TCP, or the Unix socket that
    `?host=/folder` names, as the embedded PostgreSQL's URL does); `delay` seconds added to each
    round trip."""
    counter = WireCounter(delay)
    port, socket_folder = url.port or 5432, url.query.get("host")

    async def open_server():
        if socket_folder:
            return await asyncio.open_unix_connection(f"{socket_folder}/.s.PGSQL.{port}")
        return await asyncio.open_connection(url.host, port)

    async def handle(client_reader, client_writer):
        server_reader, server_writer = await open_server()
        pumps = [
            asyncio.ensure_future(counter.pump_counting(client_reader, server_writer)),
            asyncio.ensure_future(_pump(server_reader, client_writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        client_writer.close()
        server_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield counter, server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_on_postgresql_the_recorded_commands_match_the_round_trips_on_the_wire(db_url):
    url = make_url(db_url)
    async with wire_proxy(url) as (counter, port):
        db = Database(url.set(host="127.0.0.1", port=port, query={"ssl": "disable"}).render_as_string(False))
        try:
            await run_db_setup_and_create_user(db)
            for begin in (False, True, False, True):  # the first of each prepares its statements
                await count_users(db, begin=begin)
            for begin in (False, True):
                before = counter.round_trips
                with record(db) as log:
                    await count_users(db, begin=begin)
                await asyncio.sleep(0.05)  # the proxy has forwarded the last message
                assert counter.round_trips - before == log.commands == 6
        finally:
            await db.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_on_asyncpg_begin_gets_its_own_round_trip_time_not_the_first_statements(db_url):
    # asyncpg sends BEGIN inside the execute of a transaction's first statement: with 10 ms added to
    # every round trip, BEGIN's entry must show at least those 10 ms of its own.
    url, delay = make_url(db_url), 0.010
    async with wire_proxy(url, delay) as (_counter, port):
        db = Database(url.set(host="127.0.0.1", port=port, query={"ssl": "disable"}).render_as_string(False))
        try:
            await run_db_setup_and_create_user(db)
            await count_users(db, begin=True)  # prepares the statement on this connection
            with record(db) as log:
                await count_users(db, begin=True)
        finally:
            await db.dispose()
    begin, [statement] = log.of_kind("transaction")[0], log.statements
    assert begin.sql == "BEGIN" and begin.seconds >= delay
    assert statement.seconds >= delay  # its own round trip
