"""The sandboxed child, from the grader's side: start it (through launch.py, into its cgroup and,
where there is bubblewrap, its sandbox), send it requests, read its answers on the grader's clock,
keep the first few KB of what it prints, and kill its whole tree.

A child that dies, breaks a limit or does not answer in time raises Stopped, whose message says
which (the cgroup's counters tell a memory or process limit from a crash)."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from source.config import PROJECT_DIR

from . import sandbox

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 15.0  # the interpreter starts and imports SQLAlchemy, asyncpg and redis
OUTPUT_KEPT = 8192  # bytes of the code's printed output kept for the learner
CHILD_NICE = 10
WORK_PREFIX = "lab2-exercise-work-"
SUPPORT_PREFIX = "lab2-exercise-lab-"


class Stopped(Exception):
    """The child is gone: it died, broke a limit, or was stopped for not answering."""


@dataclass
class Answer:
    """What the child answered to one request, and how long that took on the grader's clock."""

    ok: bool
    value: object = None
    error: dict | None = None  # {"type", "message", "where": {"line", "code"} | None, "during": {...}}
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


class Child:
    def __init__(self, limits: sandbox.Limits) -> None:
        self.limits = limits
        self.process: asyncio.subprocess.Process | None = None
        self.cgroup: sandbox.RunCgroup | None = None
        self.stopped: str | None = None  # why the child is gone
        self.driver_pid: int | None = None  # its interpreter, found once it answered
        self.start_seconds = 0.0
        self._output = bytearray()
        self._output_bytes = 0
        self._reader: asyncio.Task | None = None
        self._work: str | None = None  # its working folder, without bubblewrap

    async def start(self, *, name: str, sockets: dict[str, Path], packages: tuple[str, ...]) -> None:
        """Start the driver; returns once it answered that it is ready. sockets: folder in the
        sandbox -> folder of the host."""
        caps, lab = sandbox.capabilities(), support_folder()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        if caps.os_sandbox:
            env |= {"HOME": "/work", "TMPDIR": "/work"}
            driver = [str(sandbox.interpreter()), "-I", "-S", "-B", "/lab/driver.py", "/lab", "/site"]
            argv = sandbox.bwrap_command(lab=lab, sockets=sockets, limits=self.limits,
                                         packages=sandbox.package_paths(packages), argv=driver, env=env)
        else:
            self._work = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-")
            env |= {"HOME": self._work, "TMPDIR": self._work}
            site = sorted({str(path.parent) for path in sandbox.package_paths(packages)})
            argv = [str(sandbox.interpreter()), "-I", "-S", "-B", str(lab / "driver.py"), str(lab), *site]
        if caps.cgroup is not None:
            self.cgroup = sandbox.RunCgroup(caps.cgroup, f"{os.getpid()}-{name}", self.limits)
        plan = {"cgroups": self.cgroup.procs_files if self.cgroup else [], "nice": CHILD_NICE, "argv": argv,
                "rlimits": sandbox.rlimits(self.limits, cgroup=self.cgroup is not None)}
        began = time.perf_counter()
        self.process = await asyncio.create_subprocess_exec(
            str(sandbox.interpreter()), "-I", "-S", str(HERE / "launch.py"), json.dumps(plan),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=self._work, env=env, start_new_session=True, limit=4 * 2**20)
        self._reader = asyncio.create_task(self._keep_output())
        ready = await self.receive(START_TIMEOUT)
        if not (isinstance(ready, dict) and ready.get("ready")):
            raise Stopped(self.stopped or "the sandbox did not start")
        self.start_seconds = time.perf_counter() - began
        self.driver_pid = _driver_pid(self.process.pid)

    async def _keep_output(self) -> None:
        while chunk := await self.process.stderr.read(65536):
            self._output_bytes += len(chunk)
            room = OUTPUT_KEPT - len(self._output)
            if room > 0:
                self._output += chunk[:room]

    def output(self) -> str:
        text = self._output.decode(errors="replace")
        if self._output_bytes > len(self._output):
            text += f"\n[... {self._output_bytes - len(self._output)} more bytes not kept]"
        return text

    async def send(self, message: dict) -> None:
        if self.stopped:
            raise Stopped(self.stopped)
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            await self.process.stdin.drain()
        except (OSError, ConnectionError):
            raise Stopped(self._why_gone()) from None

    async def receive(self, timeout: float):
        """The next answer (None if it is not JSON). Raises Stopped."""
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            limit = self._limit_reached()
            self.kill()
            self.stopped = f"no answer within {timeout:g} s" + (f" ({limit})" if limit else "") + ": the run was stopped"
            raise Stopped(self.stopped) from None
        except (ValueError, asyncio.LimitOverrunError):
            self.kill()
            self.stopped = "the child's answer was too long to read: the run was stopped"
            raise Stopped(self.stopped) from None
        if not line:
            try:
                await asyncio.wait_for(self.process.wait(), 2)
            except TimeoutError:
                self.kill()
            raise Stopped(self._why_gone())
        try:
            return json.loads(line)
        except ValueError:
            return None

    async def request(self, message: dict, timeout: float) -> Answer:
        """One request, timed on the grader's clock."""
        began = time.perf_counter()
        await self.send(message)
        raw = await self.receive(timeout)
        seconds = time.perf_counter() - began
        if not isinstance(raw, dict) or "ok" not in raw:
            return Answer(False, error={"type": "protocol", "message": "an answer the grader cannot read",
                                        "where": None}, seconds=seconds)
        return Answer(bool(raw["ok"]), raw.get("value"), raw.get("error"), seconds)

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

    def cpu_wait(self) -> float | None:
        """Seconds the child's main thread has spent runnable but waiting for a CPU (its
        run_delay in /proc/<pid>/task/<pid>/schedstat); None where that cannot be read. Only that
        thread: threads the code starts to busy the machine add nothing here."""
        try:
            fields = Path(f"/proc/{self.driver_pid}/task/{self.driver_pid}/schedstat").read_text().split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError, TypeError):
            return None

    def kill(self) -> None:
        """The whole tree: its cgroup where there is one, else its process group (and, in the
        sandbox, its PID namespace dies with its first process)."""
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if self.process is not None and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def close(self) -> None:
        """Ask it to exit, then kill what is left and remove its cgroup and folder."""
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.stdin.write(b'{"op": "exit"}\n')
                await asyncio.wait_for(self.process.wait(), 0.5)
            except (OSError, TimeoutError, ConnectionError):
                pass
        self.kill()
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
        if self._work:
            shutil.rmtree(self._work, ignore_errors=True)


def _driver_pid(root: int) -> int | None:
    """The first Python interpreter in the child's tree (the driver: the code has not run yet)."""
    try:
        import psutil

        for process in [psutil.Process(root), *psutil.Process(root).children(recursive=True)]:
            if Path(process.exe()).resolve() == sandbox.interpreter():
                return process.pid
    except Exception:  # noqa: BLE001 - then there is no CPU-wait figure
        return None
    return None


# --- what the sandbox mounts at /lab ------------------------------------------------------

_support: Path | None = None
_support_lock = threading.Lock()


def support_folder() -> Path:
    """What the sandbox mounts at /lab (read-only), made once per process: the driver, each
    exercise's ops module and what they share (child_backends.py), and a copy of the lab's models
    (source/models.py: SQLAlchemy only)."""
    global _support
    with _support_lock:
        if _support is None:
            _support = _make_support()
        return _support


def _make_support() -> Path:
    sweep_folders(SUPPORT_PREFIX)
    folder = Path(tempfile.mkdtemp(prefix=f"{SUPPORT_PREFIX}{os.getpid()}-"))
    for shared in ("driver.py", "child_backends.py"):
        shutil.copy(HERE / shared, folder / shared)
    for ops in HERE.glob("*/child.py"):
        shutil.copy(ops, folder / f"{ops.parent.name}_ops.py")
    (folder / "source").mkdir()
    shutil.copy(PROJECT_DIR / "source" / "models.py", folder / "source" / "models.py")
    (folder / "source" / "__init__.py").write_text("from .models import *  # noqa: F403\n")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the sandbox's user, writable by none
    atexit.register(shutil.rmtree, folder, True)
    return folder


def sweep_folders(prefix: str) -> None:
    """Remove the temporary folders `<prefix><app pid>-...` of app processes that are gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = folder.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and not sandbox.alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
