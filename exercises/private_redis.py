"""A Redis of the run's own: a redis-server the grader starts for one run, listening on a Unix
socket only (no TCP port), with a random password, stopped and removed after the run.

Its socket folder is the only part the sandbox sees. The grader reads its counters (INFO) from
outside the child, and makes it hang (SIGSTOP) or refuse connections (killed: its socket file
stays, with nobody listening) to check that the learner's cache fails open.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path

import redis.asyncio as aioredis

from . import sandbox

START_TIMEOUT = 10.0
CONFIG = """port 0
unixsocket {socket}
unixsocketperm 777
requirepass {password}
save ""
appendonly no
maxmemory 64mb
maxmemory-policy noeviction
maxclients 256
dir {folder}
pidfile {folder}/redis.pid
"""


class PrivateRedis:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"lab2-exercise-redis-{os.getpid()}-"))
        self.socket_dir = self.folder / "socket"
        self.socket_dir.mkdir(mode=0o755)
        self.socket_dir.chmod(0o755)
        self.socket = self.socket_dir / "redis.sock"
        self.password = secrets.token_urlsafe(24)
        self.process: asyncio.subprocess.Process | None = None
        self.stopped = False  # SIGSTOP sent (hung)

    async def start(self) -> None:
        config = self.folder / "redis.conf"  # the password: in the folder the sandbox does not see
        config.write_text(CONFIG.format(socket=self.socket, password=self.password, folder=self.folder))
        config.chmod(0o600)
        self.process = await asyncio.create_subprocess_exec(
            shutil.which("redis-server") or "redis-server", str(config),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        client = self.client()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    try:
                        await client.ping()
                        return
                    except (OSError, aioredis.ConnectionError):
                        if self.process.returncode is not None:
                            raise RuntimeError("redis-server stopped at start") from None
                        await asyncio.sleep(0.005)
        finally:
            await client.aclose()

    def client(self) -> aioredis.Redis:
        """The grader's own client: bounded waits, since the grader also hangs this server."""
        return aioredis.Redis(unix_socket_path=str(self.socket), password=self.password, decode_responses=True,
                              socket_timeout=2, socket_connect_timeout=2)

    def hang(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGSTOP)
            self.stopped = True

    def resume(self) -> None:
        if self.process is not None and self.stopped:
            self.process.send_signal(signal.SIGCONT)
            self.stopped = False

    async def refuse(self) -> None:
        """Kill the server; its socket file stays, so a connect is refused (ECONNREFUSED)."""
        if self.process is not None and self.process.returncode is None:
            self.resume()
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        await self.refuse()
        shutil.rmtree(self.folder, ignore_errors=True)


def sweep() -> None:
    """Stop the servers and remove the folders of runs whose app process is gone (a server
    outlives an app that was killed; its folder's name holds the app's pid)."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob("lab2-exercise-redis-*-*"):
        pid = folder.name.split("-")[3]
        if pid.isdigit() and not sandbox.alive(int(pid)):
            _kill_server_of(folder)
            shutil.rmtree(folder, ignore_errors=True)



def _kill_server_of(folder: Path) -> None:
    try:
        import psutil

        process = psutil.Process(int((folder / "redis.pid").read_text().strip()))
        if process.name() == "redis-server":
            process.kill()
    except Exception:  # noqa: BLE001 - best effort: the folder goes either way
        pass
