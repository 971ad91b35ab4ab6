"""Debian's nginx in front of several served apps, with the lab's own config (deploy/nginx-lab2.conf)
on free loopback ports: the proxy the room harness goes through in tests/test_room_proxy.py and
`bench.py --only room_proxy`. nginx runs in the foreground in a folder of its own (its pid,
temporary folders and access log), never touching a system nginx."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.served import PROJECT_DIR, free_port

NGINX_CONF = PROJECT_DIR / "deploy" / "nginx-lab2.conf"
CONF_PROXY_PORT, CONF_APP_PORTS = 8080, (8501, 8502)  # as the shipped file names them
COOKIE = "lab2_app"
NAMES = ("app1", "app2")  # the cookie's values, in the order of CONF_APP_PORTS


def nginx() -> str | None:
    """Debian puts nginx in /usr/sbin, which a non-root PATH may not hold."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_config(proxy_port: int, app_ports: tuple[int, int]) -> str:
    """The shipped config with its three ports replaced (each address appears as ":<port>")."""
    text = NGINX_CONF.read_text()
    for old, new in zip((CONF_PROXY_PORT, *CONF_APP_PORTS), (proxy_port, *app_ports), strict=True):
        if f":{old}" not in text:
            raise ValueError(f"{NGINX_CONF} no longer names port {old}")
        text = text.replace(f":{old}", f":{new}")
    return text


@dataclass(frozen=True)
class Request:
    """One line of nginx's access log: what came in and where nginx sent it."""

    request: str
    status: int
    cookie: str  # the lab2_app cookie the browser sent ("" for none)
    upstream: str  # the addresses nginx tried, the answering one last ("a, b")
    sticky_cookie: str  # the stickiness Set-Cookie nginx added ("" for none)

    @property
    def answered_by(self) -> str:
        return self.upstream.rsplit(", ", 1)[-1]

    @property
    def websocket(self) -> bool:
        return "/_stcore/stream" in self.request


@dataclass
class Proxy:
    url: str
    folder: Path
    process: subprocess.Popen
    apps: dict[str, str]  # cookie value -> the app's address (host:port)

    def requests(self) -> list[Request]:
        path = self.folder / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [Request(**{k: v for k, v in json.loads(line).items() if k != "time"}) for line in lines]

    def logged(self, found, settle: float = 10.0) -> list[Request]:
        """The requests that found(request) picks, once there are any: nginx writes a request's
        line as it finishes it, a moment after the client has the response (or up to `settle` s)."""
        deadline = time.monotonic() + settle
        while not (picked := [r for r in self.requests() if found(r)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return picked

    def websockets_by_app(self, settle: float = 10.0, expected: int = 0) -> Counter:
        """The app that answered each websocket, by cookie value; nginx logs a websocket when it
        closes, so this waits up to `settle` s for `expected` of them."""
        deadline = time.monotonic() + settle
        while True:
            by_address = {address: name for name, address in self.apps.items()}
            counts = Counter(by_address.get(r.answered_by, r.answered_by) for r in self.requests() if r.websocket)
            if sum(counts.values()) >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.1)


@contextmanager
def proxied(app_urls: list[str], folder: Path, timeout: float = 20.0):
    """nginx with deploy/nginx-lab2.conf in front of two served apps (http://127.0.0.1:port),
    until it answers; stopped afterwards."""
    binary = nginx()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx)")
    if len(app_urls) != len(CONF_APP_PORTS):
        raise ValueError(f"the shipped config names {len(CONF_APP_PORTS)} app processes")
    app_ports = tuple(int(url.rsplit(":", 1)[1]) for url in app_urls)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_config(port, app_ports))
    log_path = folder / "nginx.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary, "-p", str(folder), "-c", str(conf), "-e", "stderr"],
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited early:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"nginx did not answer within {timeout} s:\n{log_path.read_text()}") from None
                time.sleep(0.05)
        apps = {name: f"127.0.0.1:{p}" for name, p in zip(NAMES, app_ports, strict=True)}
        yield Proxy(url, folder, process, apps)
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
