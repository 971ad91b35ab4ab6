"""Streamlit's clear_cache message, sent by a crafted client over a served app's own websocket,
drops nothing that learners share: the event loop, the engine and the publisher are
process-wide (runtime.singletons), not st.cache_resource. With them in st.cache_resource, this
test's 5 clears took the server from 10 to 15 threads on SQLite and from 8 to 13 on PostgreSQL
(a new event loop thread per clear), and the page then showed a new, stopped publisher while
the first one kept running."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from streamlit.proto.BackMsg_pb2 import BackMsg

import ui
from harness.served import app_subprocess_env, served_app
from harness.wsclient import StreamlitClient

KEY = "room-key-19"
PAGE = "Eventing_Outbox_Pattern"
PUBLISHER_GATE = "Instructor key (starting or stopping the publisher)"
FAULT_GATE = "Instructor key (breaking the relay or retrying failed events)"
BROKER_DOWN = "The broker is down (the relay cannot connect)"


def threads(pid: int) -> int:
    """The server's thread count once it settles (a page run's thread ends just after the run)."""
    samples = []
    for _ in range(10):
        samples.append(len(os.listdir(f"/proc/{pid}/task")))
        time.sleep(0.1)
    return min(samples)


def connections(database_url: str) -> tuple[int, int]:
    """(connections to the app's PostgreSQL database, of them LISTENing relays); (0, 0) on SQLite."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return 0, 0

    async def count() -> tuple[int, int]:
        admin = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, database="postgres")
        try:
            await asyncio.sleep(0.5)  # let closed connections' backends exit
            rows = await admin.fetch("SELECT query FROM pg_stat_activity WHERE datname = $1", url.database)
        finally:
            await admin.close()
        return len(rows), sum(r["query"].upper().startswith("LISTEN") for r in rows)

    return asyncio.run(count())


def test_clear_cache_from_a_client_leaves_the_shared_resources_and_the_gates_alone(initialised, tmp_path):
    ui.run(ui.database().dispose())  # this test process holds no connection to the app's database
    env = app_subprocess_env({"LAB_INSTRUCTOR_KEY": KEY, **({"REDIS_URL": "fakeredis://"} if initialised == "embedded" else {})})
    with served_app(env, tmp_path) as app:
        instructor = StreamlitClient(app.url)
        try:
            page = instructor.run(PAGE)
            page = instructor.type(page, PUBLISHER_GATE, KEY)
            page = instructor.click(page, "Start publisher")
            page = instructor.type(page, FAULT_GATE, KEY)
            page = instructor.set_bool(page, BROKER_DOWN, True)
            page = instructor.run()
            assert "The relay's broker: **down**" in page.text() and ":green[● running]" in page.text()
            before = threads(app.process.pid), connections(env["DATABASE_URL"])

            for _ in range(5):
                clear = BackMsg()
                clear.clear_cache = True
                instructor.send(clear)
                page = instructor.run()
            after = threads(app.process.pid), connections(env["DATABASE_URL"])
            print(f"\nthreads, (connections, listening relays): before {before}, after 5 clears {after}")
            assert after == before
            # The same publisher, still running, with the same fault switches.
            assert ":green[● running]" in page.text() and "The relay's broker: **down**" in page.text()
            assert not page.exceptions

            learner = StreamlitClient(app.url)  # a new session, no key: the gates still hold
            try:
                theirs = learner.run(PAGE)
                assert not {"Start publisher", "Stop publisher", BROKER_DOWN, "Crash the relay after its next append",
                            "Retry failed events"} & set(theirs.widgets)
                assert "Store a score and its event" in theirs.widgets
            finally:
                learner.close()

            page = instructor.set_bool(page, BROKER_DOWN, False)
            page = instructor.click(page, "Stop publisher")
            assert ":gray[● stopped]" in page.text()
            stopped = threads(app.process.pid), connections(env["DATABASE_URL"])
            print(f"after Stop: {stopped}")
            assert stopped[0] < before[0]
            assert stopped[1][1] == 0  # no relay left listening
        finally:
            instructor.close()


@pytest.fixture(autouse=True)
def _stop_publisher():
    yield
    ui.publisher().stop()
