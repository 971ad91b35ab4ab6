"""A redis-server of a test's own, on a free loopback port, with the settings it asks for: for
tests that read or change server-wide state (INFO, CONFIG), never the shared server's."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from harness.served import free_port


@contextmanager
def private_redis(*settings: str, port: int | None = None) -> Iterator[str]:
    """Yields the server's URL; the server is stopped on exit. A test that turns snapshots on
    (`--save 900 1`) gets them in a temporary folder: redis-server writes one when it stops.
    `port`: a free port the test chose, e.g. one its client already failed to reach."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (.ci/run uses the one that runs the shared server)")
    port = port or free_port()
    folder = tempfile.TemporaryDirectory(prefix="lab-redis-")
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder.name, "--save", "",
                               "--appendonly", "no", *settings], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)
        folder.cleanup()


class RestartableRedis:
    """A private redis-server that a test can kill outright (SIGKILL, as a crash would) and start
    again on the same port and folder: it then loads whatever its last snapshot (dump.rdb) holds."""

    def __init__(self, *settings: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (.ci/run uses the one that runs the shared server)")
        self.port, self.folder = free_port(), tempfile.TemporaryDirectory(prefix="lab-redis-")
        self.command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder.name,
                        "--appendonly", "no", *settings]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server: subprocess.Popen | None = None

    def start(self) -> None:
        self.server = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline or self.server.poll() is not None:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(10)

    def close(self) -> None:
        self.kill()
        self.folder.cleanup()
