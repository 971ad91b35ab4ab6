"""The app served by `streamlit run` on a free loopback port, and the moves a learner makes in
it with Playwright (async API; Debian's chromium). Used by tests/test_browser.py and by
`bench.py --only load` through harness/browser_walk.py."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

PROJECT_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = PROJECT_DIR / "test-artifacts"  # git-ignored: screenshots and server logs of failures
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]
TRACEBACK = "Traceback (most recent call last)"
# A run of the whole page that ended; a fragment's periodic run (the sidebar's publisher status,
# section 5's figures) ends with FINISHED_FRAGMENT_RUN_SUCCESSFULLY and does not count.
PAGE_RUN_ENDED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServedApp:
    url: str
    process: subprocess.Popen
    startup_seconds: float  # `streamlit run` to the health check answering
    log_path: Path
    started: float  # time.perf_counter() at launch, for "launch to first page rendered"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def served_app(env: dict[str, str], log_dir: Path, timeout: float = 60.0, prefix: tuple[str, ...] = (),
               script: str = "app.py"):
    """`streamlit run app.py` (or another script of the project) with env, until its health check
    answers; stopped afterwards. `prefix` goes before the command, e.g. ("taskset", "-c", "0") to
    pin the server to a core."""
    port = free_port()
    log_path = log_dir / f"streamlit-{port}.log"
    command = [
        *prefix, sys.executable, "-m", "streamlit", "run", script, "--server.headless=true",
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
            time.sleep(0.05)
        yield ServedApp(url, process, time.perf_counter() - started, log_path, started)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def app_subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment for the served app; embedded Redis is asked for by URL,
    since the in-process monkeypatches of the app_env fixture do not reach a subprocess. No
    instructor key: the served app is one learner's (or one test's) own."""
    env = dict(os.environ)
    env.setdefault("REDIS_URL", "fakeredis://")
    env.pop("LAB_INSTRUCTOR_KEY", None)
    env.update(extra or {})
    return env


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def save_server_log(app: ServedApp, name: str) -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    path = ARTIFACTS_DIR / f"{name}.log"
    shutil.copyfile(app.log_path, path)
    return path


@dataclass
class Click:
    action: str
    seconds: float  # from the click to the server's report that the page's run ended


class PageError(AssertionError):
    """What a learner would see go wrong: an exception box, a traceback, an unexpected error."""


@dataclass
class Learner:
    """One learner: a browser context of their own, hence a Streamlit session of their own.

    A rerun's end is taken from the app's websocket (the ForwardMsg `script_finished` of a
    whole-page run), not from the page's running/notRunning attribute: fragments flip that
    attribute every couple of seconds, so it cannot tell whose run ended."""

    page: object  # playwright.async_api.Page
    number: int
    timeout: float = 60.0
    clicks: list[Click] = field(default_factory=list)
    tolerated: set[str] = field(default_factory=set)  # error messages the walk expected or allowed
    runs_ended: int = 0
    runs_dropped: int = 0
    last_run_ended_at: float = 0.0
    _open_run: str | None = None  # the whole-page run that started and has not ended yet
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            return
        message = ForwardMsg()
        message.ParseFromString(payload)
        kind, run = message.WhichOneof("type"), message.metadata.run
        if kind == "new_session" and not run.fragment_ids:
            self._open_run = run.script_run_id
        elif kind == "new_session" and self._open_run is not None:
            # A fragment's run never starts while a page run is going on in the same session:
            # the server dropped the rest of that page run's messages (Streamlit replaced the
            # session's ScriptRunner when a run_every fragment's request reached it between
            # the run's end and the delivery of its output).
            self._open_run = None
            self.runs_dropped += 1
            self._changed.set()
        elif kind == "script_finished" and message.script_finished in PAGE_RUN_ENDED:
            self._open_run = None
            self.runs_ended += 1
            self.last_run_ended_at = time.perf_counter()
            self._changed.set()

    async def _run_ended_after(self, before: int, dropped_before: int, what: str) -> None:
        deadline = time.perf_counter() + self.timeout
        while self.runs_ended <= before:
            if self.runs_dropped > dropped_before:
                raise PageError(f"{what}: the server dropped the output of the page's run (it ran, but the "
                                "browser never got its result: Streamlit started a fragment's run in its place)")
            self._changed.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise PageError(f"{what}: the page's run did not end within {self.timeout:g} s")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def _rerun(self, what: str, action) -> float:
        """Do what starts a rerun; wait until the server reports its end; return the seconds.
        The browser draws the result a moment later: read it with wait_for."""
        before, dropped, started = self.runs_ended, self.runs_dropped, time.perf_counter()
        await action()
        await self._run_ended_after(before, dropped, what)
        seconds = self.last_run_ended_at - started
        self.clicks.append(Click(what, seconds))
        return seconds

    async def wait_for(self, what: str, found, *, allowed_errors: tuple[str, ...] = ()):
        """Poll the main area's text until found(text) is truthy, and return that; then check the
        page (it shows this run's result by then). Use something the action itself shows: what
        was there before the click may still be on the screen."""
        deadline = time.perf_counter() + self.timeout
        while not (result := found(await self.text())):
            if time.perf_counter() > deadline:
                await self.check_page(what, allowed_errors=allowed_errors)
                raise PageError(f"{what}: not on the page within {self.timeout:g} s")
            await asyncio.sleep(0.1)
        await self.check_page(what, allowed_errors=allowed_errors)
        return result

    async def open(self, url: str) -> float:
        """The first visit: from the request to the first page fully run and drawn."""
        started = time.perf_counter()
        before, dropped = self.runs_ended, self.runs_dropped
        await self.page.goto(url)
        await self._run_ended_after(before, dropped, "opening the app")
        await self.wait_for("opening the app", lambda text: "Lab 2: Data Architecture & Persistence" in text)
        return time.perf_counter() - started

    async def go(self, label: str, title: str, *, allowed_errors: tuple[str, ...] = ()) -> None:
        """Follow a sidebar link, as a learner does (session state survives), until the page
        with this title is drawn."""
        link = self.page.get_by_test_id("stSidebar").get_by_role("link", name=label, exact=True)
        await link.wait_for(timeout=self.timeout * 1000)
        await self._rerun(f"open {label}", link.click)
        await self.wait_for(f"open {label}", lambda text: title in text, allowed_errors=allowed_errors)

    async def click(self, label: str | re.Pattern) -> float:
        button = self.page.get_by_test_id("stMain").get_by_role("button", name=label, exact=True).first
        await button.wait_for(timeout=self.timeout * 1000)
        await self._until_still(button)
        return await self._rerun(f"click {getattr(label, 'pattern', label)}", button.click)

    async def _until_still(self, element) -> None:
        """Wait until every component's iframe on the page has drawn and the element stays where it
        is for a moment, as a learner waits for a page to finish drawing before clicking: the code
        editor's iframe grows once Ace has loaded and pushes down what is below it, and a click
        aimed just before lands in the editor (no run: the learner's cursor goes into the code)."""
        deadline, boxes = time.perf_counter() + self.timeout, []
        while time.perf_counter() < deadline:
            frames_drawn = await self.page.evaluate(
                "() => [...document.querySelectorAll('[data-testid=stMain] iframe')]"
                ".every(frame => frame.getBoundingClientRect().height > 0)")
            boxes = [*boxes[-2:], await element.bounding_box() if frames_drawn else None]
            if len(boxes) == 3 and boxes[0] is not None and boxes.count(boxes[0]) == 3:
                return  # in place for 0.4 s (the editor's iframe is added a moment after the run's end)
            await asyncio.sleep(0.2)

    async def enabled(self, label: str) -> bool:
        return await self.page.get_by_test_id("stMain").get_by_role("button", name=label, exact=True).first.is_enabled()

    async def fill(self, label: str, value: str) -> None:
        """Type into a field inside a form (sent with the form's submit: no rerun yet)."""
        await self.page.get_by_test_id("stMain").get_by_label(label, exact=True).fill(value)

    async def enter(self, label: str, value: str) -> float:
        """Type into a field and press Enter, which applies it (a rerun)."""
        box = self.page.get_by_test_id("stMain").get_by_label(label, exact=True)
        await box.fill(value)
        return await self._rerun(f"enter {label}", lambda: box.press("Enter"))

    async def text(self) -> str:
        return await self.page.get_by_test_id("stMain").inner_text()

    async def sidebar(self) -> str:
        return await self.page.get_by_test_id("stSidebar").inner_text()

    async def metrics(self) -> dict[str, str]:
        return await self.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('[data-testid=stMetric]')].map(m => [
                m.querySelector('[data-testid=stMetricLabel]').innerText.trim(),
                m.querySelector('[data-testid=stMetricValue]').innerText.trim()]))"""
        )

    async def check_page(self, what: str, *, allowed_errors: tuple[str, ...] = ()) -> None:
        exceptions = await self.page.locator("[data-testid=stException]").all_inner_texts()
        if exceptions:
            raise PageError(f"{what}: the page shows an exception: {exceptions[0][:300]}")
        body = await self.page.locator("body").inner_text()
        if TRACEBACK in body:
            raise PageError(f"{what}: the page shows a traceback")
        for error in await self.page.locator("[data-testid=stAlertContentError]").all_inner_texts():
            if not any(allowed in error for allowed in allowed_errors):
                raise PageError(f"{what}: the page shows an error: {error[:300]}")
            self.tolerated.add(error)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        path = ARTIFACTS_DIR / f"{name}.png"
        await self.page.screenshot(path=path, full_page=True)
        return path


class Walks:
    """What a run of learners' walks sums up: every click, and each learner's error (a learner
    stops at its first). Mixed into the run results of the browser walk and the room harness."""

    walked: list

    @property
    def clicks(self) -> list:
        return [click for me in self.walked for click in me.clicks]

    @property
    def errors(self) -> list[str]:
        return [f"learner {me.number}: {me.error}" for me in self.walked if me.error]
