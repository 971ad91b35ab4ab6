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
