"""Section 5b (Create): the learner designs the outbox's event table (columns, ordering key,
status or delete) and the writer's insert, the relay's claim and its two marks.

Their model's tables are made in a schema of the run's own (`design`), then measured on section
5b's workload next to the lab's designs, which labbench/event_design.py runs on the same settings
in the same database (its throwaway tables, as the grader): two writers racing on one aggregate
with writer B's clock 200 ms behind A's, then a relay whose stream refuses the first attempt of
every 5th event. What is measured comes from outside the child: the commit order of the writers'
transactions from PostgreSQL's commit timestamps (track_commit_timestamp), the order the relay
published in from the run's Redis stream on the grader's client (with fakeredis, as the child
reports it), and what the table kept from the grader's own queries."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import redis.asyncio as aioredis
from sqlalchemy import text

from labbench.event_design import FAIL_EVERY, inversions, ordering_experiment, retention_experiment

from ..catalogue import CheckResult, Exercise
from ..outbox_relay.grader import Broker, grader_database, new_stream

SCHEMA = "design"
SKEW_MS = 200.0
PER_WRITER = 20
EVENTS = 20  # the retention workload, as 5b's
REQUIRED = ("id", "aggregate_id", "event_type", "payload", "created_at")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
CHECKS = (
    "Your tables, as PostgreSQL made them",
    f"Two writers race on one aggregate, clocks {SKEW_MS:g} ms apart: published in commit order",
    "Published events stay in the table (history)",
    "Refused attempts counted on the event's row (attempts)",
)


async def before_load(run) -> dict:
    await run.sql(text(f"CREATE SCHEMA {SCHEMA} AUTHORIZATION {run.database.name}"))
    return {}


async def checks(run, state: dict):
    db, broker = grader_database(run), Broker(run)
    try:
        made, table = await tables(run)
        yield made
        if table is None:
            for name in CHECKS[1:]:
                yield CheckResult(name, False, "Not run: your event table was not made.")
            return
        yield await racing_writers(run, db, broker, table)
        for result in await retention(run, db, broker, table):
            yield result
    finally:
        await broker.close()
        await db.dispose()


def quoted(table: str) -> str:
    return f'{SCHEMA}."{table}"'


async def columns_of(run, table: str) -> dict[str, str]:
    rows = await run.sql(text("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                              ":schema AND table_name = :table ORDER BY ordinal_position"),
                         {"schema": SCHEMA, "table": table})
    return dict(rows.all())


async def tables(run) -> tuple[CheckResult, str | None]:
    made = await run.call("create_tables")
    if not made.ok:
        return CheckResult(CHECKS[0], False, f"Making your tables raised {made.error_text}."), None
    table = made.value
    listed = (await run.sql(text("SELECT table_name FROM information_schema.tables WHERE table_schema = :schema "
                                 "ORDER BY table_name"), {"schema": SCHEMA})).scalars().all()
    if table not in listed or not NAME.match(str(table)):
        return CheckResult(CHECKS[0], False, f"OutboxEvent's table {table!r} is not among the tables made: "
                           f"{', '.join(listed) or 'none'}."), None
    columns = await columns_of(run, table)
    indexes = (await run.sql(text("SELECT indexdef FROM pg_indexes WHERE schemaname = :schema ORDER BY indexname"),
                             {"schema": SCHEMA})).scalars().all()
    evidence = tuple(f"{table}.{name} {kind}" for name, kind in columns.items()) + tuple(
        re.sub(r" ON \w+\.", " ON ", index) for index in indexes)
    figures = {"tables": list(listed), "columns": list(columns), "indexes": len(indexes),
               "attempts_column": "attempts" in columns}
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        return CheckResult(CHECKS[0], False, f"{table} has no column {', '.join(missing)}: keep the starter's five "
                           "columns (the writer and the relay fill them).", figures, evidence), None
    others = [name for name in listed if name != table]
    return CheckResult(CHECKS[0], True, f"{table}: {len(columns)} columns ({', '.join(columns)})"
                       + (f"; and {', '.join(others)}" if others else "") + ".", figures, evidence), table


async def published_order(broker: Broker, stream: str, ids: set[str]) -> tuple[list[str], int]:
    """The events in the order they reached the stream (first entries), and how many twice."""
    order, twice = [], 0
    for _, fields in await broker.entries(stream):
        event_id = fields.get(b"event_id", b"").decode("utf-8", "replace")
        if event_id not in ids:
            continue
        if event_id in order:
            twice += 1
        else:
            order.append(event_id)
    return order, twice


async def racing_writers(run, db, broker: Broker, table: str) -> CheckResult:
    aggregate = str(uuid.uuid4())
    ids = {writer: [str(uuid.uuid4()) for _ in range(PER_WRITER)] for writer in "AB"}
    written = await run.call("write_racing", aggregate_id=aggregate, ids=ids, skew_ms=SKEW_MS, timeout=30)
    every = set(ids["A"] + ids["B"])
    # The order the writers' transactions committed in, from PostgreSQL: each row's inserting transaction's
    # commit time (its xmin, before the relay changes the row).
    committed = (await run.sql(text(f"SELECT id FROM {quoted(table)} WHERE id = ANY(:ids) "
                                    "ORDER BY pg_xact_commit_timestamp(xmin), id"), {"ids": list(every)})).scalars().all()
    stream = new_stream()
    relayed = await run.call("relay", stream=stream, refuse_first=[], limit=10)
    order, twice = await published_order(broker, stream, every)
    lab = await ordering_experiment(db, skew_ms=SKEW_MS, per_writer=PER_WRITER)
    pairs = inversions([i for i in committed if i in order], order) if set(order) <= set(committed) else None
    figures = {"skew_ms": SKEW_MS, "events": 2 * PER_WRITER, "committed": len(committed), "published": len(order),
               "published_twice": twice, "pairs_out_of_commit_order": pairs,
               "lab_created_at_inversions": lab.created_at_inversions, "lab_sequence_inversions": lab.sequence_inversions}
    lab_said = (f"the lab's run of the same race: {lab.created_at_inversions} pairs ordering by created_at, "
                f"{lab.sequence_inversions} by a sequence number from a counter row")
    if not written.ok:
        return CheckResult(CHECKS[1], False, f"The writers' calls raised {written.error_text}.", figures)
    if written.value:
        hint = (" Two writers took the same number: a number read with max() is not locked; a counter row the "
                "writer updates is, until its commit." if any("unique" in e.lower() or "duplicate" in e.lower()
                                                                for e in written.value) else "")
        return CheckResult(CHECKS[1], False, f"{len(written.value)} of {2 * PER_WRITER} writes failed, e.g. "
                           f"{written.value[0]}.{hint}", figures, tuple(written.value[:5]))
    if not relayed.ok or not relayed.value.get("drained"):
        why = relayed.error_text if not relayed.ok else f"next_batch still returned events after {relayed.value['cycles']} batches"
        return CheckResult(CHECKS[1], False, f"Relaying the {len(committed)} events: {why}.", figures)
    if len(committed) != len(every) or len(order) != len(committed) or twice:
        return CheckResult(CHECKS[1], False, f"Of {len(every)} events written, {len(committed)} are in the table, "
                           f"{len(order)} were published and {twice} published twice.", figures)
    if pairs:
        return CheckResult(CHECKS[1], False, f"{pairs} pairs of the aggregate's events published opposite to their "
                           f"commit order ({lab_said}). Writer B's clock runs {SKEW_MS:g} ms behind A's: order by a "
                           "number given in commit order, not by created_at.", figures)
    return CheckResult(CHECKS[1], True, f"All {len(order)} events published once, 0 pairs out of commit order "
                       f"({lab_said}).", figures)


async def retention(run, db, broker: Broker, table: str) -> list[CheckResult]:
    aggregate = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
    refuse_first = ids[FAIL_EVERY - 1::FAIL_EVERY]  # the first attempt of every 5th event, as 5b's run
    wrote = await run.call("write_in_turn", aggregate_id=aggregate, ids=ids)
    stream = new_stream()
    relayed = await run.call("relay", stream=stream, refuse_first=refuse_first, limit=10) if wrote.ok else wrote
    order, twice = await published_order(broker, stream, set(ids))
    rows = set((await run.sql(text(f"SELECT id FROM {quoted(table)} WHERE id = ANY(:ids)"), {"ids": ids})).scalars())
    columns = await columns_of(run, table)
    recorded = None
    if "attempts" in columns:
        try:
            recorded = int((await run.sql(text(f"SELECT coalesce(sum(attempts::bigint), 0) FROM {quoted(table)} "
                                               "WHERE id = ANY(:ids)"), {"ids": ids})).scalar_one())
        except Exception as error:  # noqa: BLE001 - e.g. a column of another type: told below
            recorded = f"unreadable ({type(error).__name__})"
    refusals = len([event_id for event_id in refuse_first if event_id in order])
    ours = {"events": EVENTS, "published": len(order), "published_twice": twice, "failed_attempts": refusals,
            "rows_left": len(rows), "history_rows": len(rows & set(order)), "attempts_recorded": recorded}
    lab = {}
    client = run.redis.client() if run.redis is not None else _local_fakeredis()
    try:
        for keeps_status in (True, False):
            lab[keeps_status] = await retention_experiment(db, client, prefix="lab:", keeps_status=keeps_status,
                                                           events=EVENTS, fail_every=FAIL_EVERY)
    finally:
        await client.aclose()
    figures = ours | {f"lab_status_column_{k}": v for k, v in vars(lab[True]).items() if k != "keeps_status"} | {
        f"lab_delete_on_publish_{k}": v for k, v in vars(lab[False]).items() if k != "keeps_status"}
    kept = (f"the lab's status column kept {lab[True].history_rows} of {lab[True].published} published events, delete "
            f"on publish {lab[False].history_rows} of {lab[False].published}")
    counted = (f"the lab's status column recorded {lab[True].attempts_recorded} of {lab[True].failed_attempts} "
               f"refusals, delete on publish {lab[False].attempts_recorded} of {lab[False].failed_attempts}")
    if not relayed.ok or not relayed.value.get("drained"):
        why = relayed.error_text if not relayed.ok else f"next_batch still returned events after {relayed.value['cycles']} batches"
        problem = (f"Writing {EVENTS} events: {why}." if not wrote.ok else
                   f"Relaying {EVENTS} events with {len(refuse_first)} first attempts refused: {why}.")
        return [CheckResult(CHECKS[2], False, problem, figures), CheckResult(CHECKS[3], False, f"Not run: {problem}")]
    if len(order) != EVENTS or twice:
        history = CheckResult(CHECKS[2], False, f"{len(order)} of {EVENTS} events published, {twice} twice ({kept}).",
                              figures)
    elif ours["history_rows"] < len(order):
        history = CheckResult(CHECKS[2], False, f"{ours['history_rows']} of {len(order)} published events left in your "
                              f"table: none of the others can be listed or sent again ({kept}).", figures)
    else:
        history = CheckResult(CHECKS[2], True, f"All {len(order)} published events are still in your table "
                              f"({kept}).", figures)
    if recorded is None:
        attempts = CheckResult(CHECKS[3], False, f"Your table has no attempts column: the {refusals} refusals left no "
                               f"count ({counted}).", figures)
    elif recorded != refusals:
        attempts = CheckResult(CHECKS[3], False, f"{recorded} attempts recorded for {refusals} refusals ({counted}).",
                               figures)
    else:
        attempts = CheckResult(CHECKS[3], True, f"{recorded} of {refusals} refusals counted in attempts ({counted}).",
                               figures)
    return [history, attempts]


def _local_fakeredis() -> aioredis.Redis:
    """The lab's comparison runs in the grader's process; without a redis-server, on a fakeredis there."""
    import fakeredis

    return fakeredis.FakeAsyncRedis(decode_responses=True)


EXERCISE = Exercise(
    id="event-table",
    section="5b",
    title="Design the event table: order, history, attempts",
    folder=Path(__file__).resolve().parent,
    required_names=("OutboxEvent", "add_event", "next_batch", "published", "refused"),
    check_names=CHECKS,
    hints=(
        "created_at comes from the writer's clock, and app servers' clocks disagree: give each event a number "
        "within its aggregate (a `sequence` column) and publish in that order.",
        "A number from max(sequence) + 1 is not locked: two writers read the same maximum. Keep a counter row per "
        "aggregate (a second table of your Base) and take the next number with an upsert "
        "(`insert(...).on_conflict_do_update(...).returning(...)`): its row stays locked until the writer commits.",
        "Keep published rows: a `status` column (pending -> published) instead of deleting, and let next_batch "
        "take only the pending ones.",
        "An `attempts` column, incremented in refused(), records each refused try (and a `last_error` says why).",
    ),
    before_load=before_load,
    checks=checks,
    uses_redis=True,
)
