"""One grading run, from the grader's side: the run's database and Redis, the sandboxed child, the
requests sent to it, and what is measured outside it (the database's log, the run's Redis, the
grader's clock).

    async with Run(exercise, cluster) as run:
        answer = await run.load(code)
        step = await run.step("lookup_all", user_ids=[...])   # answer + statements + seconds

Everything a run made is removed when the block ends, whatever happened in it: the child's whole
process tree (its cgroup, or its process group), the cgroup, the Redis server and its folder, and
the run's database and role. Leftovers of a process that died are swept at the next run.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from source.config import PROJECT_DIR

from . import private_redis, sandbox
from .cluster import ExerciseCluster, RunDatabase
from .serverlog import Seen, ServerLog

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 15.0  # the interpreter starts and imports SQLAlchemy, asyncpg and redis
OUTPUT_KEPT = 8192  # bytes of the code's printed output kept for the learner
CHILD_NICE = 10
SOCKETS = {"pg": "/run/pg", "redis": "/run/redis"}
log = logging.getLogger(__name__)


@dataclass
class Answer:
    """What the child answered to one request, and how long that took on the grader's clock."""

    ok: bool
    value: object = None
    error: dict | None = None  # {"type", "message", "where": {"line", "code"} | None}
    seconds: float = 0.0

    @property
    def error_text(self) -> str:
        return error_text(self.error) if self.error else ""


def error_text(error: dict) -> str:
    where = error.get("where")
    at = f" (line {where['line']}: {where['code']})" if isinstance(where, dict) else ""
    text = f"{error.get('type')}: {error.get('message')}{at}"
    if isinstance(error.get("during"), dict):
        text += f"; raised while handling {error_text(error['during'])}"
    return text


@dataclass
class Step:
    answer: Answer
    seen: Seen = field(default_factory=Seen)

    @property
    def seconds(self) -> float:
        return self.answer.seconds


class Stopped(Exception):
    """The child is gone: it died, broke a limit, or was stopped for not answering."""


_support: Path | None = None
_support_lock = threading.Lock()


def support_folder() -> Path:
    """What the sandbox mounts at /lab (read-only), made once per process: the driver, each
    exercise's ops module, and a copy of the lab's models (source/models.py: SQLAlchemy only)."""
    global _support
    with _support_lock:
        return _support or _make_support()


def _make_support() -> Path:
    global _support
    sweep_support()
    folder = Path(tempfile.mkdtemp(prefix=f"lab2-exercise-lab-{os.getpid()}-"))
    shutil.copy(HERE / "driver.py", folder / "driver.py")
    for ops in HERE.glob("*/child.py"):
        shutil.copy(ops, folder / f"{ops.parent.name}_ops.py")
    (folder / "source").mkdir()
    shutil.copy(PROJECT_DIR / "source" / "models.py", folder / "source" / "models.py")
    (folder / "source" / "__init__.py").write_text("from .models import *  # noqa: F403\n")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the sandbox's user, writable by none
    atexit.register(shutil.rmtree, folder, True)
    _support = folder
    return folder


def sweep_support() -> None:
    for folder in Path(tempfile.gettempdir()).glob("lab2-exercise-lab-*-*"):
        pid = folder.name.split("-")[3]
        if pid.isdigit() and not private_redis._alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


class Run:
    def __init__(self, exercise, cluster: ExerciseCluster, *, redis: str = "auto",
                 limits: sandbox.Limits | None = None) -> None:
        """redis: "server" (a private redis-server), "fakeredis" (inside the child: the grader
        cannot count its commands), or "auto" (a server where redis-server is installed)."""
        self.exercise = exercise
        self.cluster = cluster
        self.limits = limits or sandbox.Limits()
        caps = sandbox.capabilities()
        if redis == "auto":
            redis = "server" if caps.redis_server else "fakeredis"
        self.redis_mode = redis if exercise.uses_redis else None
        self.caps = caps
        self.database: RunDatabase | None = None
        self.redis: private_redis.PrivateRedis | None = None
        self.cgroup: sandbox.RunCgroup | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.stopped: str | None = None  # why the child is gone
        self.output = bytearray()
        self.output_bytes = 0
        self._admin = None
        self._admin_engine = None
        self._log: ServerLog | None = None
        self._reader: asyncio.Task | None = None
        self._work: str | None = None  # the working folder, without bubblewrap
        self.driver_pid: int | None = None  # the child's interpreter, found at its start (Linux)
        self.start_seconds = 0.0

    # --- set-up and clean-up --------------------------------------------------------------

    async def __aenter__(self) -> Run:
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.shield(self._close())

    async def _open(self) -> None:
        await self.cluster.ensure_ready()
        await asyncio.to_thread(_sweep_leftovers)
        self.database = await self.cluster.create_run()
        self._admin_engine = create_async_engine(self.cluster.admin_url(self.database.name), poolclass=NullPool,
                                                 isolation_level="AUTOCOMMIT")
        self._admin = await self._admin_engine.connect()
        self._log = ServerLog(self.cluster.server.pgdata)
        if self.redis_mode == "server":
            self.redis = private_redis.PrivateRedis()
            await self.redis.start()
        began = time.perf_counter()
        await self._spawn()
        ready = await self._receive(START_TIMEOUT)
        if not (isinstance(ready, dict) and ready.get("ready")):
            raise Stopped(self.stopped or "the sandbox did not start")
        self.start_seconds = time.perf_counter() - began
        self.driver_pid = _driver_pid(self.process.pid)
        await self._send({"ops": f"{self.exercise.package}_ops", "database_url": self._database_url(),
                          "redis": self._redis_settings(), **self.exercise.child_settings})
        await self.fence()  # the measuring starts here

    def _database_url(self) -> str:
        inside = SOCKETS["pg"] if self.caps.os_sandbox else self.cluster.socket_dir
        return self.database.url(inside)

    def _redis_settings(self) -> dict | None:
        if self.redis_mode == "server":
            inside = SOCKETS["redis"] if self.caps.os_sandbox else str(self.redis.socket_dir)
            return {"kind": "server", "socket": f"{inside}/redis.sock", "password": self.redis.password}
        return {"kind": "fakeredis"} if self.redis_mode == "fakeredis" else None

    async def _spawn(self) -> None:
        lab = support_folder()
        packages = sandbox.CHILD_PACKAGES + (sandbox.FAKEREDIS_PACKAGES if self.redis_mode == "fakeredis" else ())
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        if self.caps.os_sandbox:
            env |= {"HOME": "/work", "TMPDIR": "/work"}
            child = [str(sandbox.interpreter()), "-I", "-S", "-B", "/lab/driver.py", "/lab", "/site"]
            sockets = {SOCKETS["pg"]: self.cluster.socket_dir}
            if self.redis is not None:
                sockets[SOCKETS["redis"]] = self.redis.socket_dir
            argv = sandbox.bwrap_command(lab=lab, sockets=sockets, limits=self.limits,
                                         packages=sandbox.package_paths(packages), argv=child, env=env)
            cwd = None
        else:
            self._work = tempfile.mkdtemp(prefix=f"lab2-exercise-work-{os.getpid()}-")
            env |= {"HOME": self._work, "TMPDIR": self._work}
            site = {str(path.parent) for path in sandbox.package_paths(packages)}
            argv = [str(sandbox.interpreter()), "-I", "-S", "-B", str(lab / "driver.py"), str(lab), *sorted(site)]
            cwd = self._work
        cgroups: list[str] = []
        if self.caps.cgroup is not None:
            self.cgroup = sandbox.RunCgroup(self.caps.cgroup, f"{os.getpid()}-{self.database.name}", self.limits)
            cgroups = self.cgroup.procs_files
        plan = {"cgroups": cgroups, "nice": CHILD_NICE, "argv": argv,
                "rlimits": sandbox.rlimits(self.limits, cgroup=self.cgroup is not None)}
        self.process = await asyncio.create_subprocess_exec(
            str(sandbox.interpreter()), "-I", "-S", str(HERE / "launch.py"), json.dumps(plan),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=True, limit=4 * 2**20)
        self._reader = asyncio.create_task(self._keep_output())

    async def _keep_output(self) -> None:
        while chunk := await self.process.stderr.read(65536):
            self.output_bytes += len(chunk)
            room = OUTPUT_KEPT - len(self.output)
            if room > 0:
                self.output += chunk[:room]

    async def _close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.stdin.write(b'{"op": "exit"}\n')
                await asyncio.wait_for(self.process.wait(), 0.5)
            except (OSError, TimeoutError, ConnectionError):
                pass
        self._kill()
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                pass
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 1)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)
        if self.redis is not None:
            await self.redis.stop()
        if self._admin is not None:
            await self._admin.close()
        if self._admin_engine is not None:
            await self._admin_engine.dispose()
        if self.database is not None:
            try:
                await self.cluster.drop_run(self.database)
            except DBAPIError as error:  # left for the sweep: the learner still gets the results
                log.warning("could not drop the run's database %s: %s", self.database.name, error)
        if self._work:
            shutil.rmtree(self._work, ignore_errors=True)

    def _kill(self) -> None:
        """The child's whole tree: its cgroup where there is one, else its process group (and, in
        the sandbox, its PID namespace dies with its first process)."""
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if self.process is not None and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # --- talking to the child --------------------------------------------------------------

    async def _send(self, message: dict) -> None:
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            await self.process.stdin.drain()
        except (OSError, ConnectionError):
            raise Stopped(self._why_gone()) from None

    async def _receive(self, timeout: float):
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            limit = self._limit_reached()
            self._kill()
            self.stopped = f"no answer within {timeout:g} s" + (f" ({limit})" if limit else "") + ": the run was stopped"
            raise Stopped(self.stopped) from None
        except (ValueError, asyncio.LimitOverrunError):
            self._kill()
            self.stopped = "the child's answer was too long to read: the run was stopped"
            raise Stopped(self.stopped) from None
        if not line:
            try:
                await asyncio.wait_for(self.process.wait(), 2)
            except TimeoutError:
                self._kill()
            raise Stopped(self._why_gone())
        try:
            return json.loads(line)
        except ValueError:
            return None

    def _limit_reached(self) -> str | None:
        if self.cgroup is not None and self.cgroup.hit_memory_limit():
            return f"the code used all of its {self.limits.memory_bytes // 2**20} MB of memory"
        if self.cgroup is not None and self.cgroup.hit_process_limit():
            return f"the code reached its limit of {self.limits.processes} processes"
        return None

    def _why_gone(self) -> str:
        if self.stopped:
            return self.stopped
        code = self.process.returncode if self.process else None
        if (limit := self._limit_reached()) is not None:
            why = f"{limit} and was stopped"
        elif code is not None and code < 0:
            why = f"the child was stopped by signal {signal.Signals(-code).name}"
        else:
            why = f"the child exited (status {code})"
        self.stopped = why
        return why

    async def call(self, op: str, *, timeout: float | None = None, **args) -> Answer:
        """One request, timed on the grader's clock. Raises Stopped when the child is gone."""
        if self.stopped:
            raise Stopped(self.stopped)
        began = time.perf_counter()
        await self._send({"op": op, "args": args})
        raw = await self._receive(timeout or self.limits.step_seconds)
        seconds = time.perf_counter() - began
        if not isinstance(raw, dict) or "ok" not in raw:
            return Answer(False, error={"type": "protocol", "message": "an answer the grader cannot read",
                                        "where": None}, seconds=seconds)
        return Answer(bool(raw["ok"]), raw.get("value"), raw.get("error"), seconds)

    async def load(self, code: str) -> Answer:
        began = time.perf_counter()
        await self._send({"op": "load", "code": code})
        raw = await self._receive(self.limits.step_seconds)
        raw = raw if isinstance(raw, dict) else {"ok": False, "error": {"type": "protocol", "message": "?"}}
        return Answer(bool(raw.get("ok")), None, raw.get("error"), time.perf_counter() - began)

    async def fence(self) -> Seen:
        """What the run's role sent since the last fence, as the server logged it."""
        return await self._log.until_fence(self._admin, self.database.name)

    def cpu_wait(self) -> float | None:
        """Seconds the child's main thread has spent runnable but waiting for a CPU (its
        run_delay in /proc/<pid>/task/<pid>/schedstat); None where that cannot be read. Only that
        thread: threads the code starts to busy the machine add nothing here."""
        try:
            fields = Path(f"/proc/{self.driver_pid}/task/{self.driver_pid}/schedstat").read_text().split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError, TypeError):
            return None

    async def step(self, op: str, *, timeout: float | None = None, **args) -> Step:
        """A request, with what the database saw during it."""
        await self.fence()
        answer = await self.call(op, timeout=timeout, **args)
        return Step(answer, await self.fence())

    async def sql(self, statement, params: dict | None = None):
        """A statement on the run's database as the grader (not logged, not the child's)."""
        return await self._admin.execute(statement, params or {})

    def output_text(self) -> str:
        text = self.output.decode(errors="replace")
        if self.output_bytes > len(self.output):
            text += f"\n[... {self.output_bytes - len(self.output)} more bytes not kept]"
        return text


def _driver_pid(root: int) -> int | None:
    """The first Python interpreter in the child's tree (the driver; the code has not run yet)."""
    try:
        import psutil

        for process in [psutil.Process(root), *psutil.Process(root).children(recursive=True)]:
            if Path(process.exe()).resolve() == sandbox.interpreter():
                return process.pid
    except Exception:  # noqa: BLE001 - then no CPU-wait figure
        return None
    return None


def _sweep_leftovers() -> None:
    sandbox.sweep_cgroups()
    private_redis.sweep()
    for folder in Path(tempfile.gettempdir()).glob("lab2-exercise-work-*-*"):
        pid = folder.name.split("-")[3]
        if pid.isdigit() and not private_redis._alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)

