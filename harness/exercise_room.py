"""A room pressing "Run checks" at once, without browsers (harness/room.py's websocket sessions).

Each learner opens section 3, leaves its solution in the code editor (the JSON the editor's
iframe sends when the learner leaves it), waits until every learner is ready, and then all click
"Run checks" together. Meanwhile other learners ("bystanders") rerun a page that runs no code
(section 1), before the rush (once every learner is on section 3, the server otherwise idle) and
during it, so that their click times can be compared. From
outside the app, a sampler counts the sandboxes running at once (the server's child processes
running the sandbox's driver) and reads their priority.

What a learner measures: the places in line and the expected waits its status box showed, its
click's time (from the click to the end of the page run that drew the results), and the figures
the page printed ("Graded in X s, Y s of it waiting for a free runner"). A page run that ends
before the results (ui.run_showing's 120 s limit, in a long queue) is followed by another, which
picks the same run up again, as a learner would rerun the page.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import psutil

from harness import room
from harness.served import Walks
from runtime import exercise_store, learners
from source import Database

SECTION = "3. Repository Pattern & N+1"
PLAIN_PAGE = "1. Data Models"
EXERCISE = "latest-scores"
RUN_CHECKS = f"exercise:{EXERCISE}:run_checks"
EDITOR = f"exercise:{EXERCISE}:editor:"
PLACE = re.compile(r"number (\d+) in line, about (\d+) s")
GRADED = re.compile(r"Graded in ([\d.]+) s(?:, ([\d.]+) s of it waiting for a free runner)?\.")
NOT_YET = "No results within 120 s"


@dataclass
class Rusher:
    number: int
    token: str = ""
    places: list[int] = field(default_factory=list)  # as its status box showed them, in order
    expected_waits: list[int] = field(default_factory=list)  # seconds, beside each place
    passed: bool = False
    graded_seconds: float = 0.0  # as the page printed them
    waited_seconds: float = 0.0
    results_seconds: float = 0.0  # the click to the page run that drew the results
    page_runs: int = 0  # page runs from the click to the results (more than 1: it was picked up again)
    error: str | None = None
    clicks: list[room.Click] = field(default_factory=list)


@dataclass
class Bystander:
    number: int
    before: list[float] = field(default_factory=list)  # seconds per rerun of the plain page, before the rush
    during: list[float] = field(default_factory=list)
    error: str | None = None
    clicks: list[room.Click] = field(default_factory=list)


@dataclass
class RushRun(Walks):
    walked: list[Rusher]
    bystanders: list[Bystander]
    seconds: float  # the click to the last learner's results
    sandboxes_at_once: int  # the most sandboxes the sampler saw running at the same time
    sandbox_nice: set[int]  # the priorities it read from them
    server_nice: int

    def check(self) -> None:
        problems = self.errors + [f"bystander {b.number}: {b.error}" for b in self.bystanders if b.error]
        if problems:
            raise room.RoomError(f"{len(problems)} failed:\n" + "\n".join(problems[:10]))


class SandboxSampler:
    """Counts, every 20 ms, the server's child processes that run the sandbox's driver."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.most, self.nice = 0, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            running = 0
            for child in self.server.children():
                try:
                    if any(part.endswith("driver.py") for part in child.cmdline()):
                        running += 1
                        self.nice.add(child.nice())
                except psutil.Error:  # it ended meanwhile
                    continue
            self.most = max(self.most, running)
            self._stop.wait(0.02)

    def __enter__(self) -> SandboxSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def editor_response(code: str) -> dict:
    """What the code editor's iframe sends when the learner leaves it (streamlit-code-editor's blur)."""
    return {"id": uuid.uuid4().hex[:8], "type": "blur", "lang": "python", "text": code, "selected": "",
            "cursor": {"row": 0, "column": 0}}


async def rush_one(session: room.Session, me: Rusher, code: str, ready: asyncio.Event, go: asyncio.Event,
                   arrived: list) -> None:
    await session.open()
    me.token = parse_qs(session.query_string).get("learner", [""])[0]
    shown = await session.go(SECTION)
    [editor] = [name for name in shown.widgets if name.startswith(EDITOR)]
    left = {editor: editor_response(code)}
    await session.rerun("leave the editor", widgets=[room.state_of(shown.widget(editor), left[editor])])
    arrived.append(me.number)
    ready.set()
    await go.wait()
    started = time.perf_counter()
    shown = await session.click(RUN_CHECKS, values=left)
    me.page_runs = 1
    while NOT_YET in shown.text and not GRADED.search(shown.text):
        collect_places(me, shown)
        shown = await session.rerun("rerun to see the results", widgets=[room.state_of(shown.widget(editor), left[editor])])
        me.page_runs += 1
    me.results_seconds = time.perf_counter() - started
    collect_places(me, shown)
    graded = GRADED.search(shown.text)
    room.expect(graded, f"learner {me.number}: no results on the page ({shown.text[-300:]!r})")
    me.graded_seconds, me.waited_seconds = float(graded[1]), float(graded[2] or 0)
    me.passed = "All 4 checks passed." in shown.text


def collect_places(me: Rusher, shown: room.Rendered) -> None:
    for place, wait in PLACE.findall(shown.text):
        me.places.append(int(place))
        me.expected_waits.append(int(wait))


async def bystand(session: room.Session, me: Bystander, quiet: asyncio.Event, rushing: asyncio.Event,
                  done: asyncio.Event, before: int, pause: float) -> None:
    await session.open()
    await session.go(PLAIN_PAGE)
    await quiet.wait()  # every learner on section 3: the server is idle until the rush
    for _ in range(before):
        await session.rerun(f"rerun {PLAIN_PAGE}")
        me.before.append(session.clicks[-1].seconds)
        await asyncio.sleep(pause)
    await rushing.wait()
    while not done.is_set():
        await session.rerun(f"rerun {PLAIN_PAGE}")
        me.during.append(session.clicks[-1].seconds)
        await asyncio.sleep(pause)


async def rush(url: str, server_pid: int, *, learners: int, code: str, bystanders: int = 2, before: int = 10,
               pause: float = 0.2, timeout: float = 300.0) -> RushRun:
    """`learners` sessions press Run checks at once with `code`; `bystanders` rerun a plain page."""
    rushers = [Rusher(n) for n in range(1, learners + 1)]
    others = [Bystander(n) for n in range(learners + 1, learners + bystanders + 1)]
    go, quiet, rushing, done, arrived = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event(), []

    async def one_rusher(me: Rusher) -> None:
        ready = asyncio.Event()
        session = room.Session(url, me.number, timeout=timeout)
        try:
            async with session:
                await rush_one(session, me, code, ready, go, arrived)
        except Exception as exc:
            me.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"
            arrived.append(me.number)  # counted, so that the others do not wait for it
        finally:
            me.clicks = session.clicks

    async def one_bystander(me: Bystander) -> None:
        session = room.Session(url, me.number, timeout=timeout)
        try:
            async with session:
                await bystand(session, me, quiet, rushing, done, before, pause)
        except Exception as exc:
            me.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"
        finally:
            me.clicks = session.clicks

    tasks = [asyncio.create_task(one_bystander(me)) for me in others]
    rushing_tasks = [asyncio.create_task(one_rusher(me)) for me in rushers]
    while len(arrived) < learners:  # everyone on the page, their code in the editor
        await asyncio.sleep(0.05)
    quiet.set()
    while any(len(b.before) < before and not b.error for b in others):  # the plain page's times, undisturbed
        await asyncio.sleep(0.05)
    with SandboxSampler(server_pid) as sampler:
        started = time.perf_counter()
        rushing.set()
        go.set()
        await asyncio.gather(*rushing_tasks)
        seconds = time.perf_counter() - started
        done.set()
        await asyncio.gather(*tasks)
    return RushRun(rushers, others, seconds, sampler.most, sampler.nice, psutil.Process(server_pid).nice())


async def stored_attempts(database_url: str, rushers: list[Rusher]) -> dict[int, exercise_store.Attempt | None]:
    """Each learner's stored attempt at the exercise, by learner number."""
    db = Database(database_url)
    try:
        found = {}
        for me in rushers:
            row = await learners.load(db, me.token)
            found[me.number] = await exercise_store.load(db, row[0], EXERCISE) if row else None
        return found
    finally:
        await db.dispose()
