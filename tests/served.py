"""The app served by `streamlit run` on a free loopback port, and the few Playwright moves a
learner makes in it. Used by the browser tests and by `bench.py load`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]
IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
RUNNING = "[data-testid=stApp][data-test-script-state=running]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServedApp:
    url: str
    process: subprocess.Popen
    startup_seconds: float
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def served_app(env: dict[str, str], log_dir: Path, timeout: float = 60.0):
    """`streamlit run app.py` with env, until its health check answers; stopped afterwards."""
    port = free_port()
    log_path = log_dir / f"streamlit-{port}.log"
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
        f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
    ]
    started = time.perf_counter()
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"streamlit did not answer within {timeout} s")
            time.sleep(0.1)
        yield ServedApp(url, process, time.perf_counter() - started, log_path)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def app_subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment for the served app; embedded Redis is asked for by URL,
    since the in-process monkeypatches of the app_env fixture do not reach a subprocess."""
    env = dict(os.environ)
    env.setdefault("REDIS_URL", "fakeredis://")
    env.update(extra or {})
    return env


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def wait_idle(page, timeout: float = 60.0) -> None:
    """Wait for the rerun that the last action started to end."""
    try:
        page.wait_for_selector(RUNNING, timeout=1500)
    except Exception:
        pass  # the rerun may have ended already
    page.wait_for_selector(IDLE, timeout=timeout * 1000)


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(IDLE, timeout=60_000)


def click_button(page, label: str, timeout: float = 60.0) -> float:
    """Click the button with this label; returns seconds from click to the end of the rerun."""
    button = page.get_by_role("button", name=label, exact=True)
    button.first.wait_for(timeout=timeout * 1000)
    started = time.perf_counter()
    button.first.click()
    wait_idle(page, timeout)
    return time.perf_counter() - started


def exceptions_on(page) -> list[str]:
    return page.locator("[data-testid=stException]").all_inner_texts()
