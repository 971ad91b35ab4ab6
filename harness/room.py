"""A room of learners without browsers: each speaks Streamlit's own websocket protocol to one
served app, as the browser does, and walks every section's key action.

What the browser does, and this harness does too (Streamlit 1.67):
- loads the page over HTTP, keeping the cookies it sets (behind deploy/nginx-lab2.conf, the one
  that pins the browser to one app process), and sends them and its Origin with the websocket;
- opens a websocket on /_stcore/stream with the subprotocol "streamlit";
- asks for a run with a BackMsg `rerun_script` (a ClientState: the query string, the page's
  script hash, and the widget states: a button's click is a `trigger_value`, a text field's
  text a `string_value`, a radio's choice an `int_value`);
- reads the ForwardMsgs that come back: `new_session` starts a run, `delta`s carry the page's
  elements (each widget with the ID the server computed for it: the harness takes IDs from
  there, never computes them), `script_finished` ends it.

A click's time is from sending its rerun request to receiving the `script_finished` of the
page's run (after any `st.rerun()` it asked for): the server's work and the loopback, with no
rendering. A click fails when its run shows an exception or an error element, or when its run
never ends; `RoomRun.check()` raises on any failure. `check_database` then checks that the
database holds exactly what the learners made.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import os
import random
import re
import statistics
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import websockets
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

from harness.rows import RowCheck
from harness.served import Walks
from labbench.cache_traffic import TRAFFIC_DOMAIN
from labbench.loading import COHORT_DOMAIN
from runtime import learners
from source import AIRScore, Database, User
from ui import checks

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
COHORT_USERS, COHORT_SCORES = 20, 3  # section 3's defaults
TRAFFIC_USERS, TRAFFIC_READS = 50, 500  # section 4's defaults
EVENT_TIMEOUT = 120.0  # seconds a learner waits for their event to be published and applied
PAGE_RUN_ENDED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}
WIDGETS = {"button", "text_input", "number_input", "radio", "selectbox", "checkbox", "slider", "text_area"}
SECTIONS = {  # sidebar label -> the page's title, as the pages show them
    "1. Data Models": "1. Defining the core data schema",
    "2. DB Connectivity & Pooling": "2. Async database connectivity",
    "3. Repository Pattern & N+1": "3. The Repository Pattern",
    "4. Caching with Redis": "4. Optimizing Data Access",
    "5. Eventing (Outbox Pattern)": "5. Reliable events with the transactional outbox",
    "6. Schema Migrations (Alembic)": "6. Schema Migrations with Alembic",
}


class RoomError(AssertionError):
    """A click whose run errored, whose output never came, or whose result was not the page's."""


@dataclass(frozen=True)
class Widget:
    id: str  # as the server sent it in the delta
    kind: str
    label: str
    disabled: bool
    options: tuple[str, ...] = ()  # a radio's or a selectbox's options, as shown


@dataclass
class Rendered:
    """What the page's last run of one click sent: its text, widgets, links and problems."""

    texts: list[str] = field(default_factory=list)
    widgets: dict[str, Widget] = field(default_factory=dict)  # by key, and by label
    links: dict[str, str] = field(default_factory=dict)  # page link label -> page script hash
    metrics: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # exceptions and error elements, any run of the click
    warnings: list[str] = field(default_factory=list)
    runs: int = 0  # page runs the click caused (2 after an st.rerun())
    deltas: int = 0  # elements and blocks the last run sent

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    def widget(self, name: str) -> Widget:
        if name not in self.widgets:
            raise RoomError(f"no widget '{name}' on the page (widgets: {sorted(self.widgets)[:40]})")
        return self.widgets[name]

    def new_run(self) -> None:
        """A new run replaces what the page shows; problems of the earlier runs are kept."""
        self.texts, self.widgets, self.links, self.metrics = [], {}, {}, {}
        self.runs += 1
        self.deltas = 0

    def add(self, delta) -> None:
        self.deltas += 1
        kind = delta.WhichOneof("type")
        if kind == "add_block" and delta.add_block.WhichOneof("type") == "expandable":
            self.texts.append(delta.add_block.expandable.label)
            return
        if kind != "new_element":
            return
        element = delta.new_element
        name = element.WhichOneof("type")
        proto = getattr(element, name)
        if name == "exception":
            self.errors.append(f"exception {proto.type}: {proto.message[:300]}")
        elif name == "alert":
            self.texts.append(proto.body)
            if proto.format == Alert.ERROR:
                self.errors.append(f"error element: {proto.body[:300]}")
            elif proto.format == Alert.WARNING:
                self.warnings.append(proto.body)
        elif name in ("markdown", "heading"):
            self.texts.append(proto.body)
        elif name == "code":
            self.texts.append(proto.code_text)
        elif name == "metric":
            self.metrics.setdefault(proto.label, proto.body)  # the first: the page's own result
            self.texts.append(f"{proto.label} {proto.body}")
        elif name == "page_link":
            self.links[proto.label] = proto.page_script_hash
        elif name == "component_instance" and proto.id and (key := widget_key(proto.id)):
            self.widgets[key] = Widget(proto.id, name, proto.component_name, False)  # e.g. the code editor
        elif name in WIDGETS and proto.id:
            options = tuple(getattr(proto, "options", ()))
            widget = Widget(proto.id, name, proto.label, getattr(proto, "disabled", False), options)
            self.widgets[proto.label] = widget
            key = widget_key(proto.id)
            if key:
                self.widgets[key] = widget


def widget_key(element_id: str) -> str | None:
    """The user key Streamlit appends to a keyed widget's ID ("$$ID-<hash>-<key>"); None for
    a widget without a key."""
    parts = element_id.split("-", 2)
    if len(parts) == 3 and parts[0] == "$$ID" and parts[2] != "None":
        return parts[2]
    return None


@dataclass
class Click:
    learner: int
    action: str
    seconds: float  # rerun request sent -> script_finished of the page's run received
    ok: bool = True


class Session:
    """One learner's websocket to the served app: a Streamlit session of its own."""

    def __init__(self, url: str, number: int, *, timeout: float = 60.0, tolerate: tuple[str, ...] = ()) -> None:
        self.url = url.rstrip("/")
        self.ws_url = url.replace("http://", "ws://", 1).rstrip("/") + "/_stcore/stream"
        self.cookies: dict[str, str] = {}  # what loading the page set, sent with the websocket
        self.number, self.timeout = number, timeout
        self.tolerate = tolerate  # error elements containing one of these are recorded, not raised
        self.tolerated: list[str] = []
        self.clicks: list[Click] = []
        self.page_hash = ""  # the page the session is on ("" = the main page)
        self.query_string = ""
        self.shown = Rendered()  # what the latest run sent
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._pending: Rendered | None = None
        self._finished: asyncio.Event = asyncio.Event()
        self._open_run = False
        self._closed: str | None = None

    async def __aenter__(self) -> Session:
        self.cookies = await asyncio.to_thread(page_cookies, self.url + "/", self.timeout)
        headers = {"Origin": self.url}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        self._ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"], max_size=None,
                                            additional_headers=headers,
                                            open_timeout=self.timeout, ping_interval=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass

    async def _read(self) -> None:
        try:
            async for payload in self._ws:
                if isinstance(payload, str):
                    continue
                message = ForwardMsg()
                message.ParseFromString(payload)
                self._receive(message)
        except websockets.ConnectionClosed as closed:
            self._closed = f"the websocket closed ({closed})"
        finally:
            self._closed = self._closed or "the websocket closed"
            self._finished.set()

    def _receive(self, message: ForwardMsg) -> None:
        kind = message.WhichOneof("type")
        rendered = self._pending
        if kind == "page_info_changed":  # the page set st.query_params: the browser's URL changes
            self.query_string = message.page_info_changed.query_string
        elif kind == "new_session":
            if self._open_run and rendered is not None:
                rendered.errors.append("the server started a new run before the last one ended (its output was dropped)")
            self._open_run = True
            if rendered is not None:
                rendered.new_run()
        elif kind == "delta" and rendered is not None:
            rendered.add(message.delta)
        elif kind == "script_finished":
            self._open_run = False
            if message.script_finished in PAGE_RUN_ENDED and rendered is not None:
                if message.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    rendered.errors.append("the page did not compile")
                self._finished.set()

    async def rerun(self, action: str, *, page_hash: str | None = None, widgets: Iterable[WidgetState] = (),
                    allowed: tuple[str, ...] = ()) -> Rendered:
        """Send one rerun request, as a click does; wait for the page's run to end. Raises
        RoomError for an error in its output (unless it contains one of `allowed`) or a run that
        never ends."""
        if page_hash is not None:
            self.page_hash = page_hash
        request = BackMsg()
        request.rerun_script.query_string = self.query_string
        request.rerun_script.page_script_hash = self.page_hash
        request.rerun_script.widget_states.widgets.extend(widgets)
        rendered = self._pending = Rendered()
        self._finished.clear()
        started = time.perf_counter()
        click = Click(self.number, action, 0.0)
        self.clicks.append(click)
        try:
            if self._closed:
                raise RoomError(f"{action}: {self._closed}")
            await self._ws.send(request.SerializeToString())
            try:
                await asyncio.wait_for(self._finished.wait(), self.timeout)
            except TimeoutError:
                raise RoomError(f"{action}: the page's run did not end within {self.timeout:g} s") from None
            click.seconds = time.perf_counter() - started
            if self._closed and not rendered.runs:
                raise RoomError(f"{action}: {self._closed}")
            problems = [e for e in rendered.errors if not any(a in e for a in allowed)]
            self.tolerated += [e for e in problems if any(t in e for t in self.tolerate)]
            problems = [e for e in problems if not any(t in e for t in self.tolerate)]
            if problems:
                raise RoomError(f"{action}: {problems[0]}")
        except BaseException:
            click.ok = False
            click.seconds = time.perf_counter() - started
            raise
        finally:
            self._pending = None
        self.shown = rendered
        return rendered

    async def open(self) -> Rendered:
        return await self.rerun("open the app", page_hash="")

    async def go(self, label: str) -> Rendered:
        """Follow a sidebar link (session state survives), as a learner does."""
        if label not in self.shown.links:
            raise RoomError(f"open {label}: no such link on the page")
        shown = await self.rerun(f"open {label}", page_hash=self.shown.links[label])
        expect(SECTIONS[label] in shown.text, f"open {label}: the page's title '{SECTIONS[label]}' is not on it")
        return shown

    async def click(self, name: str, *, values: dict[str, object] | None = None,
                    allowed: tuple[str, ...] = ()) -> Rendered:
        """Click the button (or form submit) with this key or label; `values` are other widgets'
        values (by key or label) sent with it, as the browser sends a form's fields with its
        submit or a field's text typed before the click."""
        button = self.shown.widget(name)
        states = [state_of(self.shown.widget(other), value) for other, value in (values or {}).items()]
        trigger = WidgetState(id=button.id, trigger_value=True)
        return await self.rerun(f"click {name}", widgets=[*states, trigger], allowed=allowed)


def page_cookies(url: str, timeout: float) -> dict[str, str]:
    """Load the page as a browser does first; the cookies its response set."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(url, timeout=timeout) as response:
        response.read()
    return {cookie.name: cookie.value for cookie in jar}


def state_of(widget: Widget, value: object) -> WidgetState:
    """The WidgetState a browser sends for this widget's value."""
    if widget.kind in ("text_input", "text_area"):
        return WidgetState(id=widget.id, string_value=str(value))
    if widget.kind in ("radio", "selectbox"):  # value: the option's index; sent as its text
        return WidgetState(id=widget.id, string_value=widget.options[int(value)])
    if widget.kind == "checkbox":
        return WidgetState(id=widget.id, bool_value=bool(value))
    if widget.kind == "number_input":
        return WidgetState(id=widget.id, double_value=float(value))
    if widget.kind == "component_instance":  # a custom component's value, which its iframe sends as JSON
        return WidgetState(id=widget.id, json_value=json.dumps(value))
    raise ValueError(f"the harness does not set {widget.kind} widgets")


def expect(condition: object, what: str) -> None:
    if not condition:
        raise RoomError(what)


def found(pattern: str, shown: Rendered, what: str) -> re.Match:
    match = re.search(pattern, shown.text)
    expect(match, f"{what}: not on the page (looked for {pattern!r} in: {shown.text[-300:]!r})")
    return match


# --- one learner's walk ------------------------------------------------------------------


@dataclass
class Walked:
    """What one learner made and saw: the database must hold exactly what it made."""

    number: int
    email: str
    name: str
    user_id: str = ""
    scores_added: bool = False
    cohort_tag: str = ""
    scored_alex: bool = False
    statements: dict[str, int] = field(default_factory=dict)
    cache_outcomes: list[str] = field(default_factory=list)
    opened_cache: bool = False  # asked for section 4, whose first visit gives Jane a demo score
    asked_traffic: bool = False  # asked for a traffic run, which creates the shared traffic users
    degraded: list[str] = field(default_factory=list)  # warnings: Redis late, served from the database
    traffic_errors: int = 0  # the traffic run's reads that failed open (its "Errors" figure)
    quiz_right: str = ""
    token: str = ""  # the learner's token, from the URL the app set
    event_prefix: str = ""  # the first 8 characters of the event of my score, as section 5 shows it
    tolerated: list[str] = field(default_factory=list)  # error elements the run was told to tolerate
    cookies: dict[str, str] = field(default_factory=dict)  # what loading the page set (a proxy's stickiness cookie)
    error: str | None = None
    clicks: list[Click] = field(default_factory=list)


async def walk(session: Session, me: Walked, think) -> None:
    """Every section's key action, in the spec's order. `think()` is awaited between clicks."""
    await session.open()
    me.token = parse_qs(session.query_string).get("learner", [""])[0]
    expect(learners.token_hash(me.token), f"opening the app: no learner token in the URL ({session.query_string!r})")
    await think()

    shown = await session.go("2. DB Connectivity & Pooling")
    await think()
    shown = await session.click("init_db")
    found(r"sample users ready", shown, "initialising")
    found(rf"Alex Smith's user ID:\*\* `{UUID}`", shown, "initialising: Alex's ID")
    await think()

    await session.go("1. Data Models")
    await think()
    shown = await session.click("Create User", values={"new_user_email": me.email, "new_user_name": me.name})
    created = found(rf"Created \*\*(.+?)\*\* with ID `({UUID})`", shown, "creating my user")
    expect(created[1] == me.name, f"created '{created[1]}', not '{me.name}'")
    me.user_id = created[2]
    found(rf"Last created user ID:\*\* `{me.user_id}`", shown, "section 1 keeps my last created user")
    await think()

    await session.go("3. Repository Pattern & N+1")
    await think()
    shown = await session.click("add_scores", values={"n1_user_id_input": me.user_id})
    found(r"Added 3 scores", shown, "adding 3 scores to my user")
    me.scores_added = True
    await think()
    shown = await session.click("n1_setup")
    me.cohort_tag = found(rf"Your cohort: {COHORT_USERS} users, emails n1-(\w+)-", shown, "my cohort")[1]
    await think()
    shown = await session.click("n1_compare")
    found(rf"All three returned the same {COHORT_USERS} users and {COHORT_USERS * COHORT_SCORES} scores",
          shown, "the three strategies compared")
    counts = [int(n) for n in re.findall(r"\*\*Statements sent: (\d+)\*\*", shown.text)]
    me.statements = dict(zip(("lazy", "selectin", "joined"), counts, strict=False))
    expect(me.statements == {"lazy": COHORT_USERS + 1, "selectin": 2, "joined": 1},
           f"statements per strategy {counts}, expected lazy {COHORT_USERS + 1}, selectin 2, joined 1")
    await think()

    me.opened_cache = True
    await session.go("4. Caching with Redis")
    await think()
    for fetch in (1, 2):
        shown = await session.click("cache_fetch_user")
        outcome = found(r"\*\*(HIT|MISS|ERROR)\b", shown, f"cached fetch {fetch}")[1]
        me.cache_outcomes.append(outcome)
        me.degraded += shown.warnings
        expect("Jane Doe" in shown.text, f"cached fetch {fetch} did not show Jane Doe")
        await think()
    me.asked_traffic = True
    shown = await session.click("cache_run_traffic")
    counts = {label: int(shown.metrics.get(label, "0")) for label in ("Hits", "Misses", "Errors")}
    counted = sum(counts.values())
    expect(counted == TRAFFIC_READS, f"the traffic run counted {counted} reads, not {TRAFFIC_READS} ({shown.metrics})")
    me.traffic_errors = counts["Errors"]
    me.degraded += shown.warnings
    await think()

    await session.go("5. Eventing (Outbox Pattern)")
    await think()
    shown = await session.click("outbox_create")
    event = found(r"and event `(\w{8})` \(AIRScoreCalculated, status \*\*pending\*\*, no\. \d+ of its user\) in one transaction",
                  shown, "a score stored with its pending event")[1]
    me.scored_alex, me.event_prefix = True, event
    mine = rf"Your event `{event}`: \*\*published\*\* · appended to the stream [\d.]+ s after it was created · .*applied by the consumer"
    if not re.search(mine, shown.text) and not shown.widget("outbox_start").disabled:
        await think()
        shown = await session.click("outbox_start")  # its run watches the event go through
    deadline = time.perf_counter() + EVENT_TIMEOUT
    while not re.search(mine, shown.text):
        expect(time.perf_counter() < deadline, f"my event {event} not published and applied within {EVENT_TIMEOUT:g} s")
        await think()
        shown = await session.click("outbox_refresh")
    await think()
    answers = {f"check_outbox_{n}": question.answer for n, question in enumerate(checks.OUTBOX)}
    shown = await session.click("Check answers", values=answers)
    me.quiz_right = found(rf"({len(checks.OUTBOX)}) of {len(checks.OUTBOX)} right\.", shown, "the quiz's score")[0]
    await think()

    shown = await session.go("6. Schema Migrations (Alembic)")
    revisions = found(r"The database is at \*\*(\w+)\*\*; the newest revision is \*\*(\w+)\*\*\.", shown, "section 6")
    expect(revisions[1] == revisions[2], f"section 6: the database is at {revisions[1]}, not at head {revisions[2]}")


# --- a room --------------------------------------------------------------------------------


@dataclass
class RoomRun(Walks):
    learners: int
    walked: list[Walked]
    seconds: float  # the first arrival to the last learner's end
    think: tuple[float, float]

    def check(self) -> None:
        """Fail loudly: any learner's errored click, missing output or wrong result."""
        if self.errors:
            shown = "\n".join(self.errors[:10])
            raise RoomError(f"{len(self.errors)} of {self.learners} learners failed:\n{shown}")

    def by_action(self) -> dict[str, list[float]]:
        actions: dict[str, list[float]] = {}
        for click in self.clicks:
            if click.ok:
                actions.setdefault(click.action, []).append(click.seconds)
        return actions


def percentile(samples: list[float], q: int) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def run_room(url: str, *, learners: int, think: tuple[float, float] = (1.0, 3.0), arrivals: float = 0.1,
                   timeout: float = 60.0, seed: int = 17, tolerate: tuple[str, ...] = ()) -> RoomRun:
    """`learners` sessions on the app at `url`, arriving `arrivals` s apart, each walking every
    section with a think time drawn uniformly from `think` (seconds) before each click. A
    learner stops at its first failure, which is recorded; the others go on. Error elements
    containing one of `tolerate` are kept in each Walked.tolerated instead of failing."""
    tag = uuid.uuid4().hex[:6]
    walked = [Walked(n, f"room-{tag}-{n}@example.com", f"Room learner {n} {tag}") for n in range(1, learners + 1)]

    async def one(me: Walked) -> None:
        rng = random.Random(f"{seed}-{me.number}")

        async def pause() -> None:
            await asyncio.sleep(rng.uniform(*think))

        await asyncio.sleep((me.number - 1) * arrivals)
        session = Session(url, me.number, timeout=timeout, tolerate=tolerate)
        try:
            async with session:
                await walk(session, me, pause)
        except Exception as exc:  # the others go on; the failure is reported
            me.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"
        finally:
            me.clicks, me.tolerated, me.cookies = session.clicks, session.tolerated, session.cookies

    started = time.perf_counter()
    await asyncio.gather(*(one(me) for me in walked))
    return RoomRun(learners, walked, time.perf_counter() - started, think)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mib(pid: int) -> float:
    """A process's resident memory (Linux /proc), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


# --- what the database must hold -------------------------------------------------------------


async def check_database(database_url: str, walked: list[Walked]) -> list[str]:
    """Exactly what the learners made, and nothing else: the two sample users; per learner, as
    far as it got, one user with 3 scores, a cohort of 20 users with 3 scores each, and one score with its event
    for Alex; the 50 shared traffic users (no scores) once any learner asked for a traffic run;
    Jane's one demo score with its event once any learner opened section 4;
    every event published once and applied once; and one learner row per learner, holding the
    marks, quiz answers and IDs of what it did. Returns the mismatches."""
    made = [me for me in walked if me.user_id]
    cohorts = {me.cohort_tag for me in walked if me.cohort_tag}
    alex_scores = sum(me.scored_alex for me in walked)
    traffic = TRAFFIC_USERS if any(me.asked_traffic for me in walked) else 0
    demo_scores = 1 if any(me.opened_cache for me in walked) else 0
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            rows = RowCheck(session)
            alex, jane = await rows.sample_user_ids()
            await rows.learners(walked)
            await rows.cohorts(cohorts, User.email.like(f"n1-%@{COHORT_DOMAIN}"), users=COHORT_USERS, scores=COHORT_SCORES)
            rows.same("traffic users", await rows.count(User, User.email.like(f"%@{TRAFFIC_DOMAIN}")), traffic)
            rows.same("Alex's scores", await rows.count(AIRScore, AIRScore.user_id == alex), alex_scores)
            jane_scores = await rows.count(AIRScore, AIRScore.user_id == jane)
            rows.same("Jane's demo scores", jane_scores, demo_scores)
            rows.same("all users", await rows.count(User), 2 + len(made) + len(cohorts) * COHORT_USERS + traffic)
            rows.same("all scores", await rows.count(AIRScore), 3 * sum(me.scores_added for me in walked)
                      + len(cohorts) * COHORT_USERS * COHORT_SCORES + alex_scores + jane_scores)
            await rows.events(alex=alex, jane=jane, alex_scores=alex_scores, jane_scores=jane_scores)
            rows.same("learners' rows", await rows.count(learners.learners), sum(1 for me in walked if me.token))
        for me in walked:
            if me.token:
                await saved_progress(db, me, rows)
    finally:
        await db.dispose()
    return rows.problems


async def saved_progress(db: Database, me: Walked, rows: RowCheck) -> None:
    """The learner's row holds, as far as it got, the marks of the key actions it did, its quiz
    answers with their rightness, and the IDs it made."""
    found = await learners.load(db, me.token)
    if found is None:
        rows.problems.append(f"learner {me.number}: no row for its token")
        return
    saved = found[1]
    done = {section for section, did in (("models", me.user_id), ("repository", me.statements),
                                          ("cache", me.cache_outcomes), ("outbox", me.scored_alex)) if did}
    rows.same(f"learner {me.number}'s marks", (saved.done, saved.passed), (done, {"outbox"} if me.quiz_right else set()))
    answers = {"outbox": {n: (q.answer, True) for n, q in enumerate(checks.OUTBOX)}} if me.quiz_right else {}
    rows.same(f"learner {me.number}'s answers", saved.answers, answers)
    made = saved.made
    rows.same(f"learner {me.number}'s user", made.get("created_user_id"), me.user_id or None)
    rows.same(f"learner {me.number}'s cohort", (made.get("n1_cohort_tag"), len(made.get("n1_cohort_ids", ()))),
              (me.cohort_tag, COHORT_USERS) if me.cohort_tag else (made.get("n1_cohort_tag"), 0))
    rows.same(f"learner {me.number}'s event", str(made.get("outbox_event_id", ""))[:8], me.event_prefix)


# --- what one rerun of each page costs the server ----------------------------------------------


@dataclass(frozen=True)
class PageCost:
    page: str
    cpu_seconds: float  # the server process's CPU time per rerun (all its threads)
    wall_p50: float  # rerun request -> script_finished, median
    deltas: int  # elements and blocks one rerun sends
    bare_cpu_seconds: float | None  # the same on harness/bare_page.py with as many elements


async def _rerun_cpu(session: Session, server_pid: int, reruns: int) -> float:
    before = process_cpu_seconds(server_pid)
    for _ in range(reruns):
        await session.rerun("rerun")
    return process_cpu_seconds(server_pid) - before


async def page_rerun_costs(url: str, server_pid: int, *, bare: tuple[str, int] | None = None, reruns: int = 20,
                           rounds: int = 4, timeout: float = 60.0) -> list[PageCost]:
    """One learner alone on the server: initialise (section 2), then for each page open it once
    (its first-visit work, e.g. section 4's demo score, is not counted), then rerun it `reruns`
    times with no widget changed and divide the server's CPU time by `reruns`. With `bare` (the
    URL and process id of a served harness/bare_page.py), the bare page is rerun as often, with
    as many elements as the lab page sent, in alternating rounds."""
    costs = []
    per_round = reruns // rounds
    async with Session(url, 0, timeout=timeout) as session, contextlib.AsyncExitStack() as stack:
        anchor = await stack.enter_async_context(Session(bare[0], 1, timeout=timeout)) if bare else None
        await session.open()
        await session.go("2. DB Connectivity & Pooling")
        await session.click("init_db")
        # Every page a learner opens (the instructor's needs its key; without it, it shows little).
        pages = [(label, page_hash) for label, page_hash in session.shown.links.items() if label != "7. Instructor"]
        for label, page_hash in pages:
            await session.rerun(f"open {label}", page_hash=page_hash)
            deltas = session.shown.deltas
            if anchor:
                anchor.query_string = f"elements={deltas}"
                await anchor.rerun("open")
            spent = bare_spent = 0.0
            for _ in range(rounds):
                spent += await _rerun_cpu(session, server_pid, per_round)
                if anchor:
                    bare_spent += await _rerun_cpu(anchor, bare[1], per_round)
            walls = [click.seconds for click in session.clicks[-per_round * rounds:]]
            costs.append(PageCost(label, spent / (per_round * rounds), statistics.median(walls), deltas,
                                  bare_spent / (per_round * rounds) if anchor else None))
    return costs
