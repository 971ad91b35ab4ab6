"""A learner's whole path through the lab in a real browser, and many learners at once on one
served app: what each does and sees, section by section in the spec's order, and what the
database must hold afterwards.

tests/test_browser.py walks it with one learner on each backend pair (the visible results
exactly) and with a few learners at once (isolation and the database's contents);
`bench.py --only load` walks it with 30 and prints the times.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import async_playwright
from sqlalchemy import inspect

from harness.rows import RowCheck
from harness.served import Click, Learner, PageError, Walks, launch_browser, save_server_log, served_app
from source import AIRScore, Database, User

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
COHORT_USERS, COHORT_SCORES = 20, 3  # section 3's defaults
EVENT_TIMEOUT = 120.0  # published and applied: seconds a learner waits on section 5


@dataclass
class Walked:
    """What one learner did and saw."""

    number: int
    email: str
    name: str
    user_id: str = ""  # what it made, as far as it got: the database must hold exactly this
    scores_added: bool = False
    cohort_tag: str = ""
    scored_alex: bool = False
    outcomes: list[str] = field(default_factory=list)  # section 4's cache lookups, in order
    degraded: list[str] = field(default_factory=list)  # Redis too late for the cache: served from the database
    statements: dict[str, int] = field(default_factory=dict)  # section 3: strategy -> statements
    workbench: dict[str, int] = field(default_factory=dict)  # section 3: rows, statements sent and predicted
    clicks: list[Click] = field(default_factory=list)
    first_page_seconds: float = 0.0
    error: str | None = None


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise PageError(what)


def after(text: str, heading: str) -> str:
    """The page text from a heading on."""
    expect(heading in text, f"the page has no '{heading}'")
    return text.split(heading, 1)[1]


TITLES = {
    "1. Data Models": "1. Defining the core data schema",
    "2. DB Connectivity & Pooling": "2. Async database connectivity",
    "3. Repository Pattern & N+1": "3. The Repository Pattern",
    "4. Caching with Redis": "4. Optimizing Data Access",
    "5. Eventing (Outbox Pattern)": "5. Reliable events with the transactional outbox",
    "5b. Event Table Design (Create)": "5b. Design the event table and its delivery",
    "6. Schema Migrations (Alembic)": "6. Schema Migrations with Alembic",
}


def has(*parts: str):
    return lambda text: all(part in text for part in parts)


def matches(pattern: str):
    return lambda text: re.search(pattern, text)


async def walk(learner: Learner, me: Walked, url: str, *, alone: bool) -> None:
    """Every section in the spec's order. `alone`: nobody else uses this server, so shared
    things (the cache, the outbox) show exactly this learner's doing."""

    async def go(section: str, **kw) -> str:
        await learner.go(section, TITLES[section], **kw)
        return await learner.text()

    me.first_page_seconds = await learner.open(url)

    if alone:  # before section 2, section 1 sets up the schema and the sample users on its own
        await go("1. Data Models")
        await learner.wait_for("section 1 sets up the database on a first visit",
                               has("Setting up the database on first use", "User.profile (one-to-one): Alex Smith"))

    await go("2. DB Connectivity & Pooling")
    await learner.click(re.compile(r"Initialize .* & create sample users"))
    await learner.wait_for("initialising reports the sample users", has("sample users ready", "Alex Smith's user ID"))
    await learner.click("Run a transaction that fails part-way")
    left = await learner.wait_for("the failed transaction's report", matches(r"Rows left behind by the failed transaction: (\d+)"),
                                  allowed_errors=("The database refused the third write",))
    expect(left[1] == "0", f"the failed transaction left {left[1]} rows")

    await go("1. Data Models")
    await learner.fill("Email", me.email)
    await learner.fill("Name", me.name)
    await learner.click("Create User")
    created = await learner.wait_for("the created user", matches(rf"Created (.+) with ID ({UUID})\."))
    expect(created[1] == me.name, f"created '{created[1]}', not '{me.name}'")
    me.user_id = created[2]
    expect(f"Last created user ID: {me.user_id}" in await learner.text(), "section 1 does not show my last created user")
    duplicate = f"A user with the email {me.email} already exists."
    await learner.click("Create User")
    await learner.wait_for("the same email refused", has(duplicate), allowed_errors=(duplicate,))
    expect(f"Last created user ID: {me.user_id}" in await learner.text(), "a refused user replaced my last created user")

    await go("3. Repository Pattern & N+1")
    tabs = learner.page.get_by_test_id("stMain").get_by_role("tab")
    await tabs.filter(has_text="One user, lazy and eager").click()  # the spec's buttons, under Going further
    await learner.enter("User ID to add scores for", me.user_id)
    await learner.click("Add 3 Sample Scores for User")
    await learner.wait_for("three scores added", has("Added 3 scores"))
    me.scores_added = True
    await learner.enter("User ID to fetch", me.user_id)
    await learner.click("Fetch User & Scores (Eager Loading)")
    await learner.wait_for("my user fetched eagerly", has(f"{me.name} · {me.email}"))
    one = after(await learner.text(), "The spec's buttons")
    expect("Statements sent: 2" in one, "the eager fetch of one user did not take 2 statements")
    await learner.click("Set up my cohort")
    tag = await learner.wait_for("my cohort", matches(rf"Your cohort: {COHORT_USERS} users, emails n1-(\w+)-"))
    me.cohort_tag = tag[1]
    await learner.click("Compare the three strategies")
    await learner.wait_for("the three strategies compared", has("All three returned the same"))
    many = after(await learner.text(), "The hardening: selectinload").split("Going further")[0]
    counts = [int(n) for n in re.findall(r"Statements sent: (\d+)", many)]
    expect(len(counts) == 3, f"expected three strategies' statement counts, found {counts}")
    me.statements = dict(zip(("lazy", "selectin", "joined"), counts, strict=True))
    expect(me.statements == {"lazy": COHORT_USERS + 1, "selectin": 2, "joined": 1},
           f"statements per strategy {me.statements}, expected lazy {COHORT_USERS + 1}, selectin 2, joined 1")
    expect(f"All three returned the same {COHORT_USERS} users and {COHORT_USERS * COHORT_SCORES} scores" in many,
           "the strategies did not return the same data")
    await tabs.filter(has_text="Query workbench").click()
    await learner.click("Run the query")  # the workbench as it starts: profile lazy, skills select-in, limit 10
    ran = await learner.wait_for("the workbench's query", matches(
        r"(?s)Data statements the workbench sent: (\d+).*?What the loaders predict for (\d+) rows?\b.*?= (\d+)\."))
    me.workbench = {"rows": int(ran[2]), "sent": int(ran[1]), "predicted": int(ran[3])}
    expect(me.workbench["sent"] == me.workbench["predicted"] == 1 + me.workbench["rows"] + 1,
           f"the workbench {me.workbench}: expected 1 query + 1 lazy profile per row + 1 select-in for skills")

    # With others on the server, their reads warm and empty the same cache; and on a busy
    # machine Redis can miss the cache client's 50 ms deadline as the app's event loop sees it:
    # the read then fails open (served from the database), which the page says.
    late = () if alone else ("did not answer",)
    await go("4. Caching with Redis", allowed_errors=late)
    await learner.wait_for("the cache's demo user", has("Demo user: Jane Doe"), allowed_errors=late)
    mine = r"Your reads.*?Hits\s+(\d+)\s+Misses\s+(\d+)\s+Errors\s+(\d+)"  # this session's counters
    for step in ("fetch", "fetch", "invalidate", "fetch"):
        if step == "invalidate":
            await learner.click("Invalidate Cache for this User")
            done = r"Invalidated both keys \((\d+) held a cached value\)"
            said = done if alone else done + r"|The invalidation is queued"
            text = (await learner.wait_for("the invalidation", matches(said), allowed_errors=late))[0]
            if "The invalidation is queued" in text:
                me.degraded.append("invalidation queued: Redis did not answer in time")
                continue
            removed = re.search(done, text)
            expect(not alone or int(removed[1]) >= 1, "invalidating removed nothing after a cached fetch")
            continue
        fetches = len(me.outcomes) + 1
        await learner.click("Fetch User (Cached)")
        await learner.wait_for(f"cached fetch {fetches} counted", lambda t, n=fetches: (m := re.search(mine, t, re.S))
                               and sum(map(int, m.groups())) == n, allowed_errors=late)
        def shown(text: str):  # the prose says "a MISS, then a HIT"; the JSON may be drawn a moment after it
            lookup = after(text, "Fetch through the cache").split("Keep the cache true")[0]
            outcome = re.search(r"\b(HIT|MISS|ERROR) [·→]", lookup)
            return outcome if outcome is not None and "Jane Doe" in lookup else None

        outcome = await learner.wait_for(f"cached fetch {fetches}'s outcome and Jane Doe", shown, allowed_errors=late)
        me.outcomes.append(outcome[1])
    me.degraded += ["cached read failed open: Redis did not answer in time"] * me.outcomes.count("ERROR")
    me.degraded += [error for error in learner.tolerated if "did not answer" in error]
    if alone:
        expect(me.outcomes == ["MISS", "HIT", "MISS"], f"cache outcomes {me.outcomes}, expected MISS, HIT, MISS")

    await go("5. Eventing (Outbox Pattern)")
    await learner.click("Store a score and its event")
    stored = await learner.wait_for("a score stored with its pending event",
                                    matches(r"and event `?(\w{8})`? \(AIRScoreCalculated, status pending, no\. \d+ of its user\) in one transaction"))
    me.scored_alex = True
    if await learner.enabled("Start publisher"):  # another learner may have started it
        await learner.click("Start publisher")  # its run watches the event go through
    await learner.wait_for("the publisher running", has("Publisher running"))
    mine = rf"Your event {stored[1]}: published · appended to the stream [\d.]+ s after it was created · .*applied by the consumer"
    if alone:  # the run that started the publisher watched the event to the end
        await learner.wait_for("my event published and applied", matches(mine))
    else:  # under load it may take longer than the run watches
        await until(learner, learner.text, matches(mine), EVENT_TIMEOUT, "my event published and applied")
    await published_and_applied(learner)
    if alone:  # the sidebar reads the publisher at each rerun
        expect("running" in await learner.sidebar(), "the sidebar does not show the publisher running")

    if alone:  # the workbench with the default choices (its tables are the learner's own, dropped after)
        await go("5b. Event Table Design (Create)")
        await learner.click("Run my design's workload")
        await learner.wait_for("the workbench's default run", has(
            "from one writer to the other", "Sequence numbers 1..40 with no gap or repeat: yes", "How the relay wakes"))

    await go("6. Schema Migrations (Alembic)")
    revisions = await learner.wait_for("the database's revision",
                                       matches(r"The database is at (\w+); the newest revision is (\w+)\."))
    expect(revisions[1] == revisions[2], "section 6 does not show the database at head")
    await learner.wait_for("the SQL preview (downgrade to base)",
                           lambda t: "See the SQL before it runs" in t and "DROP TABLE" in after(t, "See the SQL before it runs"))
    await learner.click("Run drift check")
    await learner.wait_for("no drift", has("No drift: the tables, columns, column types, nullability, indexes, "
                                           "unique constraints and foreign keys match the models."))

    await go("1. Data Models")  # session state survived the whole walk
    await learner.wait_for("my last created user, still", has(f"Last created user ID: {me.user_id}"))


async def until(learner: Learner, read, condition, timeout: float, what: str):
    """Read section 5's figures until condition holds, clicking "Refresh the figures" between
    reads (the app sets no timers in the browser)."""
    deadline = time.perf_counter() + timeout
    while not condition(seen := await read()):
        if time.perf_counter() > deadline:
            raise PageError(f"not seen within {timeout:g} s: {what} (last seen: {str(seen)[:300]})")
        await asyncio.sleep(0.5)
        await learner.click("Refresh the figures")
    return seen


async def published_and_applied(learner: Learner) -> None:
    """Every event in the outbox published and applied: this learner's event was in the outbox
    when the figures were read, so it is among them."""

    def all_done(seen: dict[str, str]) -> bool:
        created = seen.get("Created (outbox rows)")
        return (created not in (None, "0") and created == seen.get("Published") == seen.get("Applied (inbox rows)")
                and seen.get("Pending") == seen.get("Failed") == "0")

    await until(learner, learner.metrics, all_done, EVENT_TIMEOUT, "every event published and applied")


# --- many learners on one server ---------------------------------------------------------


@dataclass
class LoadRun(Walks):
    sessions: int
    walked: list[Walked]
    seconds: float  # from the learners' start to the last one's end
    startup_seconds: float = 0.0  # `streamlit run` to the health check answering
    first_page_seconds: float = 0.0  # `streamlit run` to the first page fully run and drawn
    server_log: Path | None = None  # kept under test-artifacts/ when something failed

    def error_kinds(self) -> dict[str, int]:
        """The learners' first errors by kind (a learner stops at its first error)."""
        kinds = {
            "a click's result never reached the browser (Streamlit dropped its run's output)": ("dropped the output",),
            "a backend too slow for the app's deadline (database banner, SQLite busy, Redis late)": (
                "unreachable", "not reachable", "did not answer", "timed out"),
            "a page's run, or an element, did not come in time": ("did not end within", "Timeout "),
            "an expected result missing from the page": ("PageError",),
        }
        counts = dict.fromkeys([*kinds, "other"], 0)
        for error in self.errors:
            kind = next((kind for kind, markers in kinds.items() if any(m in error for m in markers)), "other")
            counts[kind] += 1
        return counts

    def isolation_violations(self) -> list[str]:
        """Different learners must have made different users and cohorts (each saw its own)."""
        problems = []
        for name, values in (("user", [me.user_id for me in self.walked if me.user_id]),
                             ("cohort", [me.cohort_tag for me in self.walked if me.cohort_tag])):
            if len(set(values)) != len(values):
                problems.append(f"two learners saw the same {name}: {values}")
        return problems


async def serve_and_walk(
    env: dict[str, str], log_dir: Path, *, sessions: int, alone: bool, name: str, timeout: float = 60.0,
    arrivals: float = 0.0,
) -> LoadRun:
    """Start `streamlit run` (the browser is up first, so that the start-up time is the
    server's), open one page as the instructor would, then let `sessions` learners walk at once,
    arriving `arrivals` seconds apart."""
    async with async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            with served_app(env, log_dir) as app:
                context = await browser.new_context()
                await Learner(await context.new_page(), 0, timeout=timeout).open(app.url)
                first_page = time.perf_counter() - app.started
                await context.close()
                run = await walk_together(browser, app.url, sessions=sessions, alone=alone, name=name, timeout=timeout,
                                          arrivals=arrivals)
                run.startup_seconds, run.first_page_seconds = app.startup_seconds, first_page
                if run.errors:
                    run.server_log = save_server_log(app, name)
        finally:
            await browser.close()
    return run


async def walk_together(
    browser, url: str, *, sessions: int, alone: bool, name: str, timeout: float, arrivals: float = 0.0
) -> LoadRun:
    """`sessions` learners at once, each in a browser context of its own on one browser."""
    run_tag = uuid.uuid4().hex[:6]
    walked = [Walked(n, f"learner-{run_tag}-{n}@example.com", f"Learner {n} ({run_tag})") for n in range(1, sessions + 1)]

    async def one(me: Walked) -> None:
        await asyncio.sleep((me.number - 1) * arrivals)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(timeout * 1000)
        learner = Learner(await context.new_page(), me.number, timeout=timeout)
        try:
            await walk(learner, me, url, alone=alone)
        except Exception as exc:  # the others go on; this failure is reported with a screenshot
            try:
                shot = await learner.screenshot(f"{name}-learner{me.number}")
            except Exception:
                shot = "none"
            me.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]} (screenshot: {shot})"
        finally:
            me.clicks = learner.clicks
            await context.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(me) for me in walked))
    return LoadRun(sessions, walked, time.perf_counter() - started)


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


# --- what the database must hold -----------------------------------------------------------


@dataclass
class Contents:
    mismatches: list[str]
    jane_demo_scores: int  # section 4 gives Jane a score on a first visit when she has none


async def check_database(database_url: str, walked: list[Walked]) -> Contents:
    """Exactly what the learners made: the two sample users; per learner one user with 3 scores,
    a cohort of 20 users with 3 scores each, one score and event for Alex (section 5); Jane's
    demo score(s) with their events; every event published and applied once; nothing else."""
    n = sum(me.scored_alex for me in walked)
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            rows = RowCheck(session)
            alex, jane = await rows.sample_user_ids()
            await rows.learners(walked)
            made = [me for me in walked if me.user_id]
            cohorts = {me.cohort_tag for me in walked if me.cohort_tag}
            await rows.cohorts(cohorts, User.email.startswith("n1-"), users=COHORT_USERS, scores=COHORT_SCORES)
            rows.same("Alex's scores (section 5)", await rows.count(AIRScore, AIRScore.user_id == alex), n)
            jane_scores = await rows.count(AIRScore, AIRScore.user_id == jane)
            if jane_scores < 1:
                rows.problems.append("Jane has no demo score")
            rows.same("all users", await rows.count(User), 2 + len(made) + len(cohorts) * COHORT_USERS)
            rows.same("all scores", await rows.count(AIRScore), 3 * sum(me.scores_added for me in walked)
                      + len(cohorts) * COHORT_USERS * COHORT_SCORES + n + jane_scores)
            await rows.events(alex=alex, jane=jane, alex_scores=n, jane_scores=jane_scores)
            left = await session.run_sync(lambda s: [t for t in inspect(s.connection()).get_table_names()
                                                     if t.startswith("evd_")])
            rows.same("section 5b's throwaway tables left", left, [])
    finally:
        await db.dispose()
    return Contents(rows.problems, jane_scores)
