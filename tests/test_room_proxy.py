"""Two app processes behind nginx (deploy/nginx-lab2.conf, through harness/proxy.py), sharing one
PostgreSQL and one Redis: the room harness walks every section through the proxy, each learner
stays on the process the round robin gave it, both processes serve learners, and the database
holds exactly what the learners made across both.

The pairs: PostgreSQL + Redis servers, and the embedded PostgreSQL that both processes start or
adopt in one data folder (LAB_DATA_DIR) + the Redis server. Not the embedded Redis: fakeredis is
one in-memory server per process, so two processes would have two caches (one process's
invalidation never reaches the other's) and two streams. Not the SQLite file either: it would be
shared, but the README's room uses PostgreSQL, and SQLite lets one connection write at a time."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis
import websockets
from conftest import REQUIRE_BACKENDS, need  # (as "conftest", the module pytest loaded: one embedded server)

from harness import room
from harness.proxy import COOKIE, NAMES, nginx, proxied
from harness.served import app_subprocess_env, served_app
from runtime.embedded_postgres import EmbeddedPostgres, postmasters
from runtime.scratch import create_postgres_database, drop_postgres_database

REDIS_LATE = ("did not answer: TimeoutError",)  # as in tests/test_room.py: a busy machine's Redis
LEARNERS = 6


@pytest.fixture
def nginx_binary() -> str:
    found = nginx()
    if found is None:
        reason = "nginx is not installed (apt-get install nginx): the two-process room needs it"
        if REQUIRE_BACKENDS:
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(params=["servers", "embedded-postgresql+redis"])
def two_process_env(request, key_prefix):
    """(environment of both app processes, the database URL they share)."""
    redis_url = need("LAB_TEST_REDIS_URL")
    env = app_subprocess_env({"REDIS_URL": redis_url, "LAB_REDIS_PREFIX": key_prefix})
    data_dir = None
    if request.param == "servers":
        admin_url = need("LAB_TEST_DATABASE_URL")
        db_url = env["DATABASE_URL"] = asyncio.run(create_postgres_database(admin_url))
    else:  # no DATABASE_URL: each process starts, or adopts, the server of one data folder
        env.pop("DATABASE_URL", None)
        data_dir = Path(tempfile.mkdtemp(prefix="lab2-2p-"))
        env["LAB_DATA_DIR"] = str(data_dir)
        db_url = EmbeddedPostgres(data_dir).url()
    try:
        yield env, db_url
    finally:
        if data_dir is None:
            asyncio.run(drop_postgres_database(admin_url, db_url))
        else:
            left = postmasters(data_dir / "pg")
            if left:
                EmbeddedPostgres(data_dir).stop()
            shutil.rmtree(data_dir, ignore_errors=True)
            assert not left, "the last app process to exit did not stop the embedded PostgreSQL"
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{key_prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def get(url: str, cookie: str | None = None) -> tuple[int, str]:
    """A GET with this stickiness cookie; (status, the stickiness cookie nginx set or "")."""
    request = urllib.request.Request(url, headers={"Cookie": f"{COOKIE}={cookie}"} if cookie else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        sticky = [c for c in response.headers.get_all("Set-Cookie") or () if c.startswith(f"{COOKIE}=")]
        return response.status, sticky[0].split(";")[0].removeprefix(f"{COOKIE}=") if sticky else ""


def test_a_room_on_two_processes_behind_nginx_stays_sticky_and_leaves_an_exact_database(
        nginx_binary, two_process_env, tmp_path):
    env, db_url = two_process_env
    with served_app(env, tmp_path) as one, served_app(env, tmp_path) as two, \
            proxied([one.url, two.url], tmp_path / "nginx") as proxy:
        run = asyncio.run(room.run_room(proxy.url, learners=LEARNERS, think=(0.0, 0.2), timeout=180,
                                        tolerate=REDIS_LATE))
        websockets = proxy.websockets_by_app(expected=LEARNERS)
        # (while the apps run: the embedded server stops when the last of them exits)
        mismatches = asyncio.run(room.check_database(db_url, run.walked))
        if "LAB_DATA_DIR" in env:  # both processes on the one server of the folder (none fell back to SQLite)
            assert len(postmasters(Path(env["LAB_DATA_DIR"]) / "pg")) == 1
            assert not list(Path(env["LAB_DATA_DIR"]).glob("*.db"))
        requests = proxy.requests()
        # a cookie naming no process is treated as none: the round robin picks one and says which
        assert get(proxy.url + "/_stcore/health", "127.0.0.1:22")[1] in NAMES
        # a process that is down: its browsers go to the other (nginx's backup server)
        one.process.terminate()
        one.process.wait(30)
        assert get(proxy.url + "/_stcore/health", "app1") == (200, "")
        [failover] = proxy.logged(lambda r: r.cookie == "app1" and "health" in r.request)
        assert failover.answered_by == proxy.apps["app2"] and proxy.apps["app1"] in failover.upstream
    run.check()
    assert all(click.ok for click in run.clicks) and len(run.clicks) >= LEARNERS * 17  # see test_room.py
    assert mismatches == []

    # every learner got a cookie naming one process, and both processes got learners
    routed = Counter(me.cookies.get(COOKIE) for me in run.walked)
    print(f"\nlearners per process (cookie): {dict(routed)}; websockets per process (nginx's log): {dict(websockets)}")
    assert set(routed) == set(NAMES)
    # each learner's websocket (all of its clicks) went to the process its cookie names
    assert websockets == routed
    learner_requests = [r for r in requests if r.cookie]
    assert learner_requests and all(r.answered_by == proxy.apps[r.cookie] for r in learner_requests)
    assert all(r.cookie for r in requests if r.websocket)
    # nginx set the cookie only on a cookieless request, naming the process that answered it
    for r in requests:
        if r.sticky_cookie:
            assert not r.cookie and r.sticky_cookie.startswith(f"{COOKIE}=")
            assert proxy.apps[r.sticky_cookie.split(";")[0].split("=")[1]] == r.answered_by
    assert all(r.sticky_cookie for r in requests if not r.cookie and r.status == 200)


class FromAddress(room.Session):
    """A learner's websocket from another loopback address, with the stickiness cookie given."""

    def __init__(self, url: str, number: int, *, address: str, app: str) -> None:
        super().__init__(url, number, timeout=60)
        self.address, self.app = address, app

    async def __aenter__(self) -> FromAddress:
        self._ws = await websockets.connect(
            self.ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=self.timeout, ping_interval=None,
            additional_headers={"Origin": self.url, "Cookie": f"{COOKIE}={self.app}"}, local_addr=(self.address, 0))
        self._reader = asyncio.create_task(self._read())
        return self


async def at_section_6(session: room.Session) -> room.Session:
    await session.open()
    await session.go("6. Schema Migrations (Alembic)")
    return session


async def wrong_key(session: room.Session, guess: str) -> str:
    """A wrong instructor key in section 6's box: the error the page shows."""
    box = session.shown.widget("migrate_key")
    shown = await session.rerun(f"the wrong key {guess}", widgets=[room.state_of(box, guess)], allowed=("instructor key",))
    return next(error for error in shown.errors if "instructor key" in error)


async def guesses(url: str) -> list[str]:
    """Two wrong keys from 127.0.0.2 (a 2 s back-off for that session and address), then one from
    127.0.0.3 and one from a new session on 127.0.0.2; all on process app1."""
    sessions = [FromAddress(url, n, address=address, app="app1")
                for n, address in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.2"), 1)]
    for session in sessions:
        await session.__aenter__()
    try:
        first, other, same = await asyncio.gather(*(at_section_6(session) for session in sessions))
        shown = [await wrong_key(first, "guess-1")]
        await asyncio.sleep(1.2)  # past the first back-off (1 s)
        shown.append(await wrong_key(first, "guess-2"))
        shown.append(await wrong_key(other, "guess-3"))
        shown.append(await wrong_key(same, "guess-4"))
        return shown
    finally:
        for session in sessions:
            await session.__aexit__()


@pytest.mark.parametrize("two_process_env", ["servers"], indirect=True)
def test_behind_the_proxy_the_key_guard_backs_off_per_learner_address(nginx_binary, two_process_env, tmp_path):
    """nginx passes each learner's address (X-Forwarded-For) and the app believes it from the
    proxy: a wrong key from one address delays the next key from that address, not from another."""
    env, _ = two_process_env
    env["LAB_INSTRUCTOR_KEY"] = "the-right-key"
    with served_app(env, tmp_path) as one, served_app(env, tmp_path) as two, \
            proxied([one.url, two.url], tmp_path / "nginx") as proxy:
        first, second, other_address, same_address = asyncio.run(guesses(proxy.url))
        log = one.log()
    assert "That is not the instructor key. The next key is checked in 1 s" in first
    assert "That is not the instructor key. The next key is checked in 2 s" in second
    assert "That is not the instructor key. The next key is checked in 1 s" in other_address
    assert "Too many wrong instructor keys from this browser or address" in same_address
    assert "address 127.0.0.2" in log and "address 127.0.0.3" in log
