"""The embedded PostgreSQL that the app runs when DATABASE_URL is unset (runtime/embedded_postgres.py):
started once per data folder, shared by a second process, adopted after its app was killed with
SIGKILL (no second postmaster), recovered from a stale postmaster.pid, stopped by the last process
to exit; and a data folder it cannot use gives the SQLite fallback with the reason, never a
traceback. Each test uses a folder of its own under tmp_path, never the project's data/."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from runtime import embedded_postgres
from runtime.embedded_postgres import EmbeddedPostgres, postmasters, resolve_database
from source import Database

PROJECT_DIR = Path(__file__).resolve().parent.parent

# One app process's use of the server: resolve the database as the app does, prove it answers,
# report, and keep using it until a line arrives on stdin (or the process is killed).
USER = """
import asyncio, json, sys
from pathlib import Path
from runtime import embedded_postgres as e
from source import Database

folder = Path(sys.argv[1])
choice = e.resolve_database(folder)
started = e.server(folder).started

async def backend_pid():
    db = Database(choice.url)
    try:
        async with db.engine.connect() as conn:
            return (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
    finally:
        await db.dispose()

report = {"kind": choice.kind, "note": choice.note, "url": choice.url}
if started:
    report.update(pid=started.postmaster_pid, reused=started.reused, orphan=started.orphan,
                  backend=asyncio.run(backend_pid()))
print(json.dumps(report), flush=True)
sys.stdin.readline()
"""


class AppProcess:
    def __init__(self, folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LAB_DATA_DIR")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", USER, str(folder)], cwd=PROJECT_DIR, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 90)
        if not ready:
            self.process.kill()
            raise AssertionError("the app process did not report within 90 s")
        line = self.process.stdout.readline()
        assert line, f"the app process exited: {self.process.stderr.read()}"
        self.report = json.loads(line)

    @property
    def embedded(self) -> dict:
        """The report of a process on the embedded server (failing with its note otherwise)."""
        assert self.report["kind"] == "embedded-postgres", self.report["note"]
        return self.report

    def exit(self) -> None:
        """Exit normally (atexit handlers run)."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.wait(60) == 0, self.process.stderr.read()
        assert "Traceback" not in self.process.stderr.read()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def gone_within(pgdata: Path, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while postmasters(pgdata):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def scratch_folder() -> Path:
    """A folder of a test's own directly under the temporary folder, not under tmp_path: as root
    the server runs as another user, who must traverse every folder above its cluster, and pytest
    takes /tmp/pytest-of-<user> back to mode 0700 whenever a pytest session starts."""
    return Path(tempfile.mkdtemp(prefix="lab2-ep-"))


@pytest.fixture
def folder():
    """A data folder of this test's own; any server left in it is stopped afterwards."""
    base = scratch_folder()
    yield base / "data"
    for pgdata in base.glob("**/pg"):
        for pid in postmasters(pgdata):
            os.kill(pid, signal.SIGTERM)
        gone_within(pgdata)
    if (base / "data").exists():
        make_writable(base / "data")
    shutil.rmtree(base, ignore_errors=True)


async def test_first_start_initialises_a_postgresql_18_that_the_app_uses_over_its_socket(folder):
    server = EmbeddedPostgres(folder)
    started = server.ensure_running()
    try:
        assert not started.reused and started.initdb_seconds is not None
        assert postmasters(server.pgdata) == [started.postmaster_pid]
        assert started.url == f"postgresql+asyncpg://postgres@/postgres?host={server.pgdata}"
        assert (server.pgdata / ".s.PGSQL.5432").is_socket()
        db = Database(started.url, label=server.label)
        try:
            await db.upgrade_to_head()
            async with db.engine.connect() as conn:
                version = (await conn.execute(text("SHOW server_version"))).scalar()
                listen = (await conn.execute(text("SHOW listen_addresses"))).scalar()
            assert version.startswith("18.")
            assert listen == ""  # no TCP port: nothing to clash with another server's port
            # Row locks as section 5's relay uses them: a second transaction skips the locked row.
            async with db.engine.begin() as conn:
                await conn.execute(text("CREATE TABLE probe (id int PRIMARY KEY)"))
                await conn.execute(text("INSERT INTO probe VALUES (1), (2)"))
            async with db.engine.connect() as holder, db.engine.connect() as other:
                await holder.execute(text("SELECT id FROM probe WHERE id = 1 FOR UPDATE"))
                free = (await other.execute(text("SELECT id FROM probe ORDER BY id FOR UPDATE SKIP LOCKED"))).scalars()
                assert list(free) == [2]
            assert db.label == f"embedded PostgreSQL 18, {folder / 'pg'}"
        finally:
            await db.dispose()
        assert server.stop() is True  # the only user: it stops the server
        assert gone_within(server.pgdata)
        # A warm start: the cluster is kept, no initdb.
        again = server.ensure_running()
        assert again.initdb_seconds is None and not again.reused
        assert again.postmaster_pid != started.postmaster_pid
    finally:
        server.stop()
    assert gone_within(server.pgdata)


def test_a_data_folder_too_deep_for_a_unix_socket_gets_its_socket_in_a_short_folder(folder):
    deep = folder / ("a-long-course-folder-name-" * 4) / "data"
    assert len(str(deep / "pg" / ".s.PGSQL.5432")) > embedded_postgres.SOCKET_PATH_MAX
    first = AppProcess(deep)
    try:
        host = first.embedded["url"].split("?host=")[1]
        assert Path(host).parent == Path(tempfile.gettempdir()).resolve() and Path(host).name.startswith("lab2-pg-")
        assert (Path(host) / ".s.PGSQL.5432").is_socket()
        assert first.embedded["backend"] > 0  # it answered over that socket
        second = AppProcess(deep)
        assert second.embedded["reused"] and second.embedded["url"] == first.embedded["url"]
        second.exit()
    finally:
        first.exit()
    assert gone_within(deep / "pg")
    assert not (Path(host) / ".s.PGSQL.5432").exists()  # the server removed its socket at shutdown
    shutil.rmtree(host, ignore_errors=True)


def test_without_database_url_the_app_resolves_to_the_embedded_server(folder, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("LAB_DATA_DIR", str(folder))
    choice = resolve_database()
    try:
        assert choice.kind == "embedded-postgres"
        assert choice.url.endswith(f"?host={folder / 'pg'}")
        assert choice.label == f"embedded PostgreSQL 18, {folder / 'pg'}"
        assert "No DATABASE_URL: started by this app" in choice.note
        monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///elsewhere.db")
        assert resolve_database().kind == "url"  # a URL always wins
    finally:
        embedded_postgres.server(folder).stop()
    assert gone_within(folder / "pg")


def test_a_second_process_uses_the_running_server_and_the_last_one_out_stops_it(folder):
    first = AppProcess(folder)
    assert first.embedded["kind"] == "embedded-postgres" and not first.embedded["reused"]
    second = AppProcess(folder)
    assert second.embedded["kind"] == "embedded-postgres"
    assert second.embedded["reused"] and not second.embedded["orphan"]
    assert second.embedded["pid"] == first.embedded["pid"]
    assert "shared with another app process" in second.embedded["note"]
    assert postmasters(folder / "pg") == [first.embedded["pid"]]
    first.exit()  # the one that started it leaves; the other still uses it
    assert postmasters(folder / "pg") == [first.embedded["pid"]]
    second.exit()
    assert gone_within(folder / "pg")


def test_an_app_killed_with_sigkill_leaves_a_server_the_next_start_adopts_without_a_second(folder):
    killed = AppProcess(folder)
    killed.kill()
    pid = killed.embedded["pid"]
    assert postmasters(folder / "pg") == [pid]  # pg_ctl detached it: it outlives the app
    next_start = AppProcess(folder)
    assert next_start.embedded["reused"] and next_start.embedded["orphan"]
    assert next_start.embedded["pid"] == pid
    assert "its app was killed" in next_start.embedded["note"]
    assert postmasters(folder / "pg") == [pid]
    next_start.exit()  # now the last user: it stops the adopted server
    assert gone_within(folder / "pg")


def test_a_stale_postmaster_pid_is_recovered(folder):
    # The server itself killed (a crash), then a pid file naming a live process that is no
    # PostgreSQL (its PID reused after a reboot): both times the next start starts it afresh.
    crashed = AppProcess(folder)
    os.kill(crashed.embedded["pid"], signal.SIGKILL)
    crashed.kill()
    assert gone_within(folder / "pg")
    after_crash = AppProcess(folder)
    assert after_crash.embedded["kind"] == "embedded-postgres" and not after_crash.embedded["reused"]
    after_crash.exit()
    assert gone_within(folder / "pg")

    impostor = subprocess.Popen(["sleep", "60"], user=embedded_postgres.ROOT_USER if os.geteuid() == 0 else None)
    try:
        pid_file = folder / "pg" / "postmaster.pid"
        pid_file.write_text(f"{impostor.pid}\n{folder / 'pg'}\n0\n5432\n{folder / 'pg'}\n\n0 0\nready\n")
        (folder / "pg" / ".s.PGSQL.5432.lock").write_text(f"{impostor.pid}\n{folder / 'pg'}\n0\n{folder / 'pg'}\n")
        recovered = AppProcess(folder)
        assert recovered.embedded["kind"] == "embedded-postgres", recovered.embedded["note"]
        assert not recovered.embedded["reused"] and recovered.embedded["pid"] != impostor.pid
        assert postmasters(folder / "pg") == [recovered.embedded["pid"]]
        recovered.exit()
    finally:
        impostor.kill()
        impostor.wait()
    assert gone_within(folder / "pg")


def make_unwritable(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # root writes through permission bits; not into an immutable folder
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:  # (chattr -i on a folder that is not immutable changes nothing)
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o755)


@pytest.fixture
def own_tempdir(folder, monkeypatch):
    """The temporary folder (where a fallback SQLite file goes) is one of this test's own."""
    where = folder.parent / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


async def test_an_unwritable_data_folder_gives_the_sqlite_fallback_with_the_reason(folder, own_tempdir):
    make_unwritable(folder)
    try:
        choice = resolve_database(folder)
        assert choice.kind == "sqlite-fallback"
        assert f"the data folder {folder} is not writable" in choice.note
        assert "Using the SQLite file" in choice.note and "Traceback" not in choice.note
        assert choice.url == f"sqlite+aiosqlite:///{own_tempdir / f'lab2-{os.getuid()}' / 'lab2.db'}"
        db = Database(choice.url)  # the fallback works: it lives in a writable temporary folder
        try:
            await db.upgrade_to_head()
            assert await db.current_revision() is not None
        finally:
            await db.dispose()
        assert postmasters(folder / "pg") == []
    finally:
        make_writable(folder)
        embedded_postgres.forget(folder)


def test_a_socket_clash_gives_the_sqlite_fallback_with_postgresql_s_reason(folder):
    # Another live process holds the lock of the socket the server would create: PostgreSQL
    # refuses to start; the app says so and runs on SQLite.
    first = AppProcess(folder)
    first.exit()
    assert gone_within(folder / "pg")
    # As root the server runs as its own user, and PostgreSQL takes a lock whose PID belongs to
    # another user (kill() answers EPERM) for stale: the holder runs as the server's user.
    other = subprocess.Popen(["sleep", "60"], user=embedded_postgres.ROOT_USER if os.geteuid() == 0 else None)
    try:
        (folder / "pg" / ".s.PGSQL.5432.lock").write_text(f"{other.pid}\n{folder / 'pg'}\n0\n{folder / 'pg'}\n")
        clash = AppProcess(folder)
        assert clash.report["kind"] == "sqlite-fallback"
        assert "Embedded PostgreSQL could not start: the server did not start:" in clash.report["note"]
        assert ".s.PGSQL.5432.lock" in clash.report["note"] and "already exists" in clash.report["note"]
        assert "Traceback" not in clash.report["note"]
        assert clash.report["url"] == f"sqlite+aiosqlite:///{folder / 'lab2.db'}"
        clash.exit()
        assert postmasters(folder / "pg") == []
    finally:
        other.kill()
        other.wait()


def open_app_on(folder, monkeypatch):
    """The Introduction, run with no DATABASE_URL and the data folder `folder`: the page and its
    sidebar's captions (markdown escapes removed)."""
    from streamlit.testing.v1 import AppTest

    import ui

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("LAB_DATA_DIR", str(folder))
    monkeypatch.setenv("REDIS_URL", "fakeredis://")
    ui.reset_resources()
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not at.exception
    return at, " ".join(c.value for c in at.sidebar.caption).replace("\\", "")


def test_the_sidebar_names_the_fallback_and_why_and_the_page_shows_no_traceback(folder, own_tempdir, monkeypatch):
    import ui

    make_unwritable(folder)
    try:
        at, captions = open_app_on(folder, monkeypatch)
        assert f"SQLite file {own_tempdir / f'lab2-{os.getuid()}' / 'lab2.db'}" in captions
        assert "Embedded PostgreSQL could not start" in captions and "is not writable" in captions
    finally:
        ui.reset_resources()
        make_writable(folder)
        embedded_postgres.forget(folder)


def test_the_sidebar_names_the_embedded_server(folder, monkeypatch):
    import ui

    try:
        at, captions = open_app_on(folder, monkeypatch)
        assert f"embedded PostgreSQL 18, {folder / 'pg'}" in captions
        assert "No DATABASE_URL: started by this app" in captions
        assert any(f"?host={folder / 'pg'}" in c.value for c in at.sidebar.code)
        # Section 2 names it too, and initialises it.
        from tests.pagekit import click, open_page, texts

        at = open_page("../pages/2_DB_Connectivity_and_Pooling.py")
        assert at.button(key="init_db").label == f"Initialize embedded PostgreSQL 18, {folder / 'pg'} & create sample users"
        at = click(at, "init_db")
        assert f"Schema migrated to head on embedded PostgreSQL 18, {folder / 'pg'}" in texts(at.success)
        for key, value in (("exp_clients", 4), ("exp_per_client", 2), ("exp_pool_size", 2), ("exp_max_overflow", 0)):
            at.number_input(key=key).set_value(value)
        at = click(at, "exp_run")
        assert not at.error
        assert "a connect on the server's Unix socket (no TCP here)" in texts(at.info)
        opened = [int(m.value) for m in at.metric if m.label == "Connections opened"]
        assert opened[1] == 8  # NullPool: one new server connection per request, on the socket
    finally:
        ui.reset_resources()
        embedded_postgres.server(folder).stop()
    assert gone_within(folder / "pg")


def page_text(app_url: str, *expected: str, timeout: float = 90) -> str:
    """The page as chromium draws it, once it shows all of `expected` (or the time is up)."""
    from playwright.sync_api import sync_playwright

    from harness.served import launch_browser

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            page = browser.new_page()
            page.goto(app_url)
            deadline = time.monotonic() + timeout
            while True:
                text = page.inner_text("body")
                if all(part in text for part in expected) or time.monotonic() > deadline:
                    assert "Traceback" not in text
                    return text
                time.sleep(0.2)
        finally:
            browser.close()


@pytest.mark.browser
def test_the_served_app_killed_with_sigkill_restarts_on_the_same_server_and_stops_it_at_exit(folder, tmp_path):
    from harness.served import CHROMIUM, app_subprocess_env, served_app

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: install it (apt-get install chromium) to run the browser tests")
    env = app_subprocess_env({"LAB_DATA_DIR": str(folder), "REDIS_URL": "fakeredis://"})
    env.pop("DATABASE_URL", None)
    socket_url = f"postgresql+asyncpg://postgres@/postgres?host={folder / 'pg'}"
    with served_app(env, tmp_path) as app:
        text = page_text(app.url, "No DATABASE_URL", socket_url)
        assert f"embedded PostgreSQL 18, {folder / 'pg'}" in text and socket_url in text
        assert "No DATABASE_URL: started by this app" in text
        [pid] = postmasters(folder / "pg")
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(10)
    assert postmasters(folder / "pg") == [pid]  # the killed app's server runs on
    with served_app(env, tmp_path) as app:
        text = page_text(app.url, "No DATABASE_URL", socket_url)
        assert socket_url in text and "its app was killed" in text
        assert postmasters(folder / "pg") == [pid]  # adopted: no second postmaster
        app.process.terminate()  # Streamlit's SIGTERM handler ends the process normally: atexit runs
        app.process.wait(30)
    assert gone_within(folder / "pg", 30), "the last app process did not stop its server at exit"


@pytest.mark.browser
def test_a_learner_walks_every_section_on_the_app_s_own_embedded_postgresql(folder, tmp_path):
    """The browser walk of tests/test_browser.py on the app's default database: no DATABASE_URL,
    so the served app runs on the embedded server of its data folder (this test joins it first, so
    that the database can be read once the app has exited), with the embedded Redis."""
    import asyncio

    from harness.browser_walk import check_database, serve_and_walk
    from harness.served import CHROMIUM, app_subprocess_env

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: install it (apt-get install chromium) to run the browser tests")
    env = app_subprocess_env({"LAB_DATA_DIR": str(folder), "REDIS_URL": "fakeredis://"})
    env.pop("DATABASE_URL", None)
    server = EmbeddedPostgres(folder)
    started = server.ensure_running()
    try:
        run = asyncio.run(serve_and_walk(env, tmp_path, sessions=1, alone=True, name="walk-app-default-embedded-pg"))
        assert not run.errors, "\n".join(run.errors) + f"\nserver log: {run.server_log}"
        [me] = run.walked
        assert me.outcomes == ["MISS", "HIT", "MISS"]
        assert me.statements == {"lazy": 21, "selectin": 2, "joined": 1}
        log = (tmp_path / next(p.name for p in tmp_path.glob("streamlit-*.log"))).read_text()
        assert "Traceback" not in log
        contents = asyncio.run(check_database(started.url, run.walked))
        assert contents.mismatches == [] and contents.jane_demo_scores == 1
        assert postmasters(server.pgdata) == [started.postmaster_pid]  # the app used this one server
    finally:
        server.stop()
    assert gone_within(server.pgdata)
