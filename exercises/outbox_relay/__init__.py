"""Section 5 (Create): the outbox relay's batch step, claim, append, mark.

The learner's `relay_batch` runs in the sandbox as a relay process runs it, against events the
grader writes with the lab's writer (each user's events numbered in commit order) and a Redis of
the run's own. Every figure is taken outside the child: the stream on the grader's client, the
events table and the consumer's inbox with the grader's queries, the statements from the exercise
cluster's log. The faults are made from outside too: a relay that dies at the COMMIT of its marks,
after its appends (a deferred trigger holds the COMMIT, the grader kills the relay's process and
its connection, and starts a new one with the same code), a Redis that refuses writes (maxmemory
reached: its own OOM error), writers whose clocks disagree (the grader stamps created_at), and two
relays at once. What reached the stream is then applied by the lab's consumer with its inbox
(source/inbox.py), and the observer counts what was lost, appended twice or put out of order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..catalogue import CheckResult, Exercise
from ..checking import statements_evidence
from ..runner import Stopped
from .grader import (
    HOLD_SECONDS,
    Broker,
    Outcome,
    created_at_inversions,
    cut,
    follows_created_at,
    grader_database,
    grant_relay,
    held_backend,
    hold_commits,
    lost_statuses,
    new_stream,
    observe,
    set_aside_pending,
    write_events,
)

BATCH = 20
MOST_STATEMENTS = 3  # the claim (the lab's aggregate-order claim takes two) and one UPDATE for the marks
SKEW_MS = 200
CHECKS = (
    f"A batch of {BATCH}: each event appended with its fields, then marked published",
    f"Statements for a batch of {BATCH}: at most {MOST_STATEMENTS}, in one transaction",
    f"One relay, writers' clocks {SKEW_MS} ms apart: each user's events in sequence order",
    "The relay dies at its COMMIT, after its appends: 0 events lost, repeats absorbed by the inbox",
    "Redis refuses the appends: nothing marked published that was not appended, and sent once it accepts",
    "Two relays at once: no event published twice",
)


async def before_load(run) -> dict:
    await grant_relay(run)
    return {}


async def checks(run, state: dict):
    db, broker = grader_database(run), Broker(run)
    try:
        first, statements = await one_batch(run, db, broker)
        yield first
        yield statements
        yield await skewed_writers(run, db, broker)
        yield await relay_dies(run, db, broker)
        yield await refused(run, db, broker)
        yield await two_relays(run, db, broker)
    finally:
        await broker.close()
        await db.dispose()


def calls_said(calls: list) -> str:
    counts = [value for kind, value in calls if kind == "ok"]
    errors = [value for kind, value in calls if kind != "ok"]
    said = f"{len(calls)} more call{'s' if len(calls) != 1 else ''} returned {', '.join(map(str, counts))}"
    return said + (f", then one raised {errors[0]}" if errors else "")


def relays_failed(answer) -> str | None:
    """Why the relays' calls (the "relays" op) did not drain the events, or None."""
    if not answer.ok:
        return f"the calls raised {answer.error_text}"
    for calls in answer.value:
        if calls and calls[-1][0] != "ok":
            return f"relay_batch raised {calls[-1][1]}"
        if calls and calls[-1][1] != 0:
            return f"relay_batch still returned {calls[-1][1]} after {len(calls)} calls (it never ran out of events)"
    return None


def delivery_problem(outcome: Outcome) -> str | None:
    """What the stream and the consumer show wrong for events that should all arrive once."""
    if outcome.unreadable:
        return f"{len(outcome.unreadable)} entries the lab's consumer cannot apply, e.g. {outcome.unreadable[0]}"
    if outcome.wrong_fields:
        return f"{len(outcome.wrong_fields)} entries do not carry their event's fields, e.g. {outcome.wrong_fields[0]}"
    if outcome.marked_not_appended:
        return f"{outcome.marked_not_appended} events marked published, never appended"
    if outcome.lost:
        return (f"{outcome.lost} of {outcome.written} events never reached the consumer (left {lost_statuses(outcome)} "
                "in the table)")
    if outcome.marked < outcome.written:
        return f"{outcome.written - outcome.marked} of {outcome.written} events appended but never marked published"
    return None


# --- 1 and 2: one batch, and what it sent ---------------------------------------------------------

async def one_batch(run, db, broker: Broker) -> tuple[CheckResult, CheckResult]:
    await set_aside_pending(run)
    events = await write_events(db, users=6, count=30)
    stream = new_stream()
    xadds = await broker.xadds()
    step = await run.step("relay", stream=stream, batch_size=BATCH)
    after_xadds = await broker.xadds()
    batch = await observe(run, db, broker, stream, events, consume=False)
    drained = await run.call("relays", stream=stream, batch_size=BATCH)
    outcome = await observe(run, db, broker, stream, events)
    figures = {"returned": step.answer.value if step.answer.ok else None, "appended": batch.appended,
               "marked_published": batch.marked, "marked_never_appended": batch.marked_not_appended,
               "xadd_commands": None if xadds is None else after_xadds - xadds} | {
        f"all_{name}": value for name, value in outcome.figures().items()}
    problem = None
    if not step.answer.ok:
        problem = f"relay_batch raised {step.answer.error_text}"
    elif batch.marked_not_appended:
        problem = f"{batch.marked_not_appended} events marked published, never appended"
    elif batch.appended != BATCH or batch.marked != BATCH:
        problem = (f"The first call appended {batch.appended} events and marked {batch.marked} published, "
                   f"from {len(events)} pending: a batch is {BATCH}, each appended and then marked")
    elif step.answer.value != BATCH:
        problem = f"relay_batch returned {step.answer.value!r} for a batch of {BATCH} it published"
    elif (why := relays_failed(drained)) is not None:
        problem = f"Draining the other {len(events) - BATCH} events: {why}"
    elif (why := delivery_problem(outcome)) is not None:
        problem = why
    elif outcome.twice:
        problem = f"{outcome.twice} events published twice by one relay"
    if problem:
        first = CheckResult(CHECKS[0], False, problem + ".", figures, tuple(outcome.unreadable[:5]))
    else:
        first = CheckResult(CHECKS[0], True, f"The first call appended and marked {BATCH} of {len(events)} events; "
                            f"then {calls_said(drained.value[0])}. The "
                            f"lab's consumer applied all {outcome.applied}, each once.", figures)
    return first, batch_statements(step)


def batch_statements(step) -> CheckResult:
    seen = step.seen
    count, transactions = seen.count, len(seen.transactions())
    updates = sum(1 for sent in seen.statements if sent.sql.lstrip().upper().startswith("UPDATE"))
    figures = {"statements": count, "transactions": transactions, "updates": updates, "at_most": MOST_STATEMENTS}
    evidence = statements_evidence(seen.statements)
    said = f"{count} statement{'s' if count != 1 else ''} in {transactions} transaction{'s' if transactions != 1 else ''}"
    if not step.answer.ok:
        return CheckResult(CHECKS[1], False, f"{said}, but the call raised {step.answer.error_text}.", figures, evidence)
    if transactions > 1:
        return CheckResult(CHECKS[1], False, f"{said} for a batch of {BATCH}: the first COMMIT ended the claim's "
                           "locks, so a second relay could claim the rest of the batch while this one was still "
                           "appending it. Claim, append and mark in one transaction.", figures, evidence)
    if transactions == 0:
        return CheckResult(CHECKS[1], False, "No statement of the batch reached the database.", figures, evidence)
    if count > MOST_STATEMENTS:
        why = (f" ({updates} UPDATEs: one per event). Mark the batch with one UPDATE ... WHERE id IN (...)"
               if updates > 1 else "")
        return CheckResult(CHECKS[1], False, f"{said} for a batch of {BATCH}, over {MOST_STATEMENTS}{why}.", figures,
                           evidence)
    return CheckResult(CHECKS[1], True, f"{said} for a batch of {BATCH} (at most {MOST_STATEMENTS}).", figures, evidence)


# --- 3: writers whose clocks disagree -------------------------------------------------------------

async def skewed_writers(run, db, broker: Broker) -> CheckResult:
    await set_aside_pending(run)
    events = await write_events(db, users=4, count=24, skew_ms=SKEW_MS)
    stream = new_stream()
    answer = await run.call("relays", stream=stream, batch_size=10)
    entries = await broker.entries(stream)
    outcome = await observe(run, db, broker, stream, events)
    by_clock = created_at_inversions(events)
    figures = outcome.figures() | {"skew_ms": SKEW_MS, "batch_size": 10, "created_at_order_inversions": by_clock}
    if (why := relays_failed(answer)) is not None:
        return CheckResult(CHECKS[2], False, f"Relaying {len(events)} events: {why}.", figures)
    if outcome.inversions:
        because = (f": the stream follows created_at, and writer B's clock runs {SKEW_MS} ms behind writer A's, so "
                   "B's later events carry earlier times. Order each user's events by sequence"
                   if follows_created_at(entries, events) else "")
        return CheckResult(CHECKS[2], False, f"{outcome.inversions} of {len(events)} events reached the stream after a "
                           f"later event (by sequence) of their user{because}.", figures)
    if (why := delivery_problem(outcome)) is not None:
        return CheckResult(CHECKS[2], False, why + ".", figures)
    return CheckResult(CHECKS[2], True, f"0 of {len(events)} events out of order within their user, with writer B's "
                       f"clock {SKEW_MS} ms behind writer A's; ordered by created_at, {by_clock} would have been.",
                       figures)


# --- 4: the relay dies at its commit -------------------------------------------------------------

async def relay_dies(run, db, broker: Broker) -> CheckResult:
    await set_aside_pending(run)
    events = await write_events(db, users=6, count=30)
    stream = new_stream()
    await hold_commits(run, True)
    task = asyncio.ensure_future(run.call("relay", stream=stream, batch_size=BATCH, timeout=HOLD_SECONDS + 5))
    at_death = None
    try:
        pid = await held_backend(run, task, timeout=HOLD_SECONDS - 2)
        if pid is not None:
            if broker.outside:
                at_death = await observe(run, db, broker, stream, events, consume=False)
                run.child.kill()  # the relay's process dies
            await cut(run, pid)
    finally:
        await hold_commits(run, False)
    try:
        answer = await task
    except Stopped:
        answer = None
    if pid is None:
        said = "answered" if answer is not None else "stopped"
        reply = f" ({answer.error_text or f'returned {answer.value!r}'})" if answer is not None else ""
        return CheckResult(CHECKS[3], False, f"The relay never reached a COMMIT that marks events published within "
                           f"{HOLD_SECONDS - 2} s: its call {said}{reply}.")
    if answer is None:
        how = "its process was killed"
        loaded = await run.restart()  # the next relay process, with the same code
        if not loaded.ok:
            return CheckResult(CHECKS[3], False, f"The next relay could not load the code: {loaded.error_text}.")
    else:  # fakeredis: the stream lives in the relay's process, which must survive; its connection ends
        how = "its database connection was cut: with fakeredis the stream lives in the relay's process"
        at_death = await observe(run, db, broker, stream, events, consume=False)
    drained = await run.call("relays", stream=stream, batch_size=BATCH)
    outcome = await observe(run, db, broker, stream, events)
    figures = outcome.figures() | {"appended_before_death": at_death.appended, "marked_at_death": at_death.marked,
                                   "effects_applied_twice": outcome.effects_twice}
    died = (f"The relay died at its COMMIT ({how}) with {plural(at_death.appended, 'event')} appended and "
            f"{at_death.marked} marked" + ("; its COMMIT came before any append" if not at_death.appended else ""))
    if (why := relays_failed(drained)) is not None:
        return CheckResult(CHECKS[3], False, f"{died}. Then the next relay: {why}.", figures)
    if (why := delivery_problem(outcome)) is not None:
        return CheckResult(CHECKS[3], False, f"{died}: {why}.", figures)
    return CheckResult(CHECKS[3], True, f"{died}. The next relay appended the events still pending, and the lab's "
                       f"consumer applied each of the {outcome.written} events once (its inbox dropped "
                       f"{plural(outcome.repeats, 'repeat')}): 0 lost.", figures)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- 5: Redis refuses ----------------------------------------------------------------------------

async def refused(run, db, broker: Broker) -> CheckResult:
    await set_aside_pending(run)
    events = await write_events(db, users=4, count=20)
    stream = new_stream()
    before = await broker.refusals()
    await broker.refuse()
    try:
        during = await run.call("relay", stream=stream, batch_size=BATCH)
        refusals = None if before is None else await broker.refusals() - before
        at_refusal = await observe(run, db, broker, stream, events, consume=False)
    finally:
        await broker.accept()
    drained = await run.call("relays", stream=stream, batch_size=BATCH)
    outcome = await observe(run, db, broker, stream, events)
    answered = f"raised {during.error['type'].rpartition('.')[2]}" if not during.ok else f"returned {during.value!r}"
    figures = outcome.figures() | {"refusals_counted_by_redis": refusals, "marked_while_refused": at_refusal.marked,
                                   "appended_while_refused": at_refusal.appended,
                                   "marked_never_appended_while_refused": at_refusal.marked_not_appended}
    if at_refusal.marked_not_appended:
        later = f"; {outcome.lost} of them never sent afterwards" if outcome.lost else ""
        return CheckResult(CHECKS[4], False, f"{at_refusal.marked_not_appended} events marked published, never "
                           f"appended, while Redis refused (relay_batch: {answered}): the marks committed although the "
                           f"appends failed{later}.", figures)
    if (why := relays_failed(drained)) is not None:
        return CheckResult(CHECKS[4], False, f"Once Redis accepted again: {why}.", figures)
    if (why := delivery_problem(outcome)) is not None:
        return CheckResult(CHECKS[4], False, f"Once Redis accepted again: {why}.", figures)
    counted = (f"Redis refused {plural(refusals, 'write')} (its own OOM count)" if refusals is not None else
               "fakeredis failed every write (disconnected: without a redis-server, nothing refuses from outside)")
    return CheckResult(CHECKS[4], True, f"{counted} and relay_batch {answered}; nothing was marked. Once Redis "
                       f"accepted, all {outcome.written} events were appended and applied once: 0 lost.", figures)


# --- 6: two relays at once -----------------------------------------------------------------------

async def two_relays(run, db, broker: Broker) -> CheckResult:
    await set_aside_pending(run)
    events = await write_events(db, users=4, count=40)
    stream = new_stream()
    answer = await run.call("relays", stream=stream, batch_size=10, relays=2)
    outcome = await observe(run, db, broker, stream, events)
    published = [sum(value for kind, value in calls if kind == "ok") for calls in answer.value or []]
    figures = outcome.figures() | {"published_by_each_relay": published}
    if (why := relays_failed(answer)) is not None:
        return CheckResult(CHECKS[5], False, f"Two relays on {len(events)} events: {why}.", figures)
    if outcome.twice:
        return CheckResult(CHECKS[5], False, f"{outcome.twice} events published twice by two relays on "
                           f"{len(events)} events: both claimed them (claim with FOR UPDATE SKIP LOCKED, and keep "
                           "the rows locked until the marks commit).", figures)
    if (why := delivery_problem(outcome)) is not None:
        return CheckResult(CHECKS[5], False, why + ".", figures)
    order = (f" {outcome.inversions} events reached the stream after a later event of their user: with SKIP LOCKED, "
             "one relay takes a user's next events while the other still appends its earlier ones, so two relays "
             "keep no order within a user (not graded; the lab's relays each claim only the users of the "
             "partitions they lease, section 5)." if outcome.inversions else
             " 0 events out of order this time; with SKIP LOCKED two relays can still put a user's events out of "
             "order (not graded).")
    return CheckResult(CHECKS[5], True, f"0 of {len(events)} events published twice; the relays published "
                       f"{' and '.join(map(str, published))}, and the lab's consumer applied each once.{order}", figures)


EXERCISE = Exercise(
    id="outbox-relay",
    section="5",
    title="The outbox relay: claim, append, mark",
    folder=Path(__file__).resolve().parent,
    required_names=("relay_batch",),
    check_names=CHECKS,
    hints=(
        "Claim with `select(DomainEvent).where(DomainEvent.status == 'pending')...limit(batch_size)"
        ".with_for_update(skip_locked=True)`: the rows stay locked until your commit, and a second relay "
        "skips them instead of sending them too.",
        "Order each user's events by `sequence`, not `created_at`: created_at comes from the writer's clock, and "
        "the checks write with two clocks 200 ms apart. (The answer key lets users take turns by their oldest "
        "pending event, through a grouped subquery joined to the events.)",
        "Append first, mark after: `update(DomainEvent).where(DomainEvent.id.in_(ids)).values(status='published', "
        "published_at=...)`, one statement for the batch, then `await session.commit()` once. Marked first, a "
        "refused append loses the event.",
        "Let a refused append raise: nothing is committed, so the events stay pending for the next call. "
        "A relay that dies after appending sends its batch again; the consumer's inbox drops the repeats.",
    ),
    before_load=before_load,
    checks=checks,
    uses_redis=True,
)
