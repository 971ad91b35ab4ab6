"""Sections 5 and 5b's exercises, graded for real (the sandbox, the exercise cluster, a Redis of the
run's own): each answer key passes every check, and plausible wrong solutions fail the check that
should catch them, with a message that names the figure measured; hostile relay code cannot reach
the lab's database nor make the grade up.

Like the other exercises, they always run on the exercise cluster; their Redis half runs on both
pairs: a private redis-server (read and made to refuse from outside) and fakeredis inside the
child (the fallback where no redis-server is installed)."""

from __future__ import annotations

import exercises

RELAY = exercises.get("outbox-relay").check_names
TABLE = exercises.get("event-table").check_names


def by_name(grade: exercises.Grade) -> dict[str, exercises.CheckResult]:
    return {check.name: check for check in grade.checks}


def failed(grade: exercises.Grade) -> list[str]:
    return [check.name for check in grade.checks if check.required and check.passed is not True]


def edit(exercise_id: str, old: str, new: str, code: str | None = None) -> str:
    code = code or exercises.get(exercise_id).answer_key
    assert old in code, f"the answer key of {exercise_id} changed: update this wrong solution"
    return code.replace(old, new)


# --- section 5: the relay's batch step ------------------------------------------------------------

APPEND_THEN_MARK = '''    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.xadd(stream, entry_fields(event))
        await pipe.execute()
    # Marked only once appended, in the claim's transaction, with one UPDATE for the batch.
    await session.execute(update(DomainEvent).where(DomainEvent.id.in_([event.id for event in events]))
                          .values(status="published", published_at=datetime.now(UTC)))
    await session.commit()
'''
MARK_THEN_APPEND = '''    # Marked first and committed, so that no other relay sends them again.
    await session.execute(update(DomainEvent).where(DomainEvent.id.in_([event.id for event in events]))
                          .values(status="published", published_at=datetime.now(UTC)))
    await session.commit()
    for event in events:
        await redis.xadd(stream, entry_fields(event))
'''
COMMIT_PER_EVENT = '''    for event in events:
        await redis.xadd(stream, entry_fields(event))
        event.status, event.published_at = "published", datetime.now(UTC)
        await session.commit()  # each event's mark as soon as it is appended
'''
USERS_BY_AGE = ".order_by(users.c.oldest, users.c.aggregate_type, users.c.aggregate_id, DomainEvent.sequence)"


async def test_the_answer_key_of_section_5_passes_every_check(cluster, redis_mode):
    grade = await exercises.grade("outbox-relay", exercises.get("outbox-relay").answer_key, cluster=cluster,
                                  redis=redis_mode)
    assert grade.passed, grade.message
    assert grade.redis == redis_mode
    checks = by_name(grade)
    batch = checks[RELAY[0]].figures
    assert (batch["appended"], batch["marked_published"], batch["all_applied_once"], batch["all_lost"]) == (20, 20, 30, 0)
    statements = checks[RELAY[1]]
    assert (statements.figures["statements"], statements.figures["transactions"]) == (2, 1)
    assert statements.evidence[0].endswith("FOR UPDATE OF domain_events SKIP LOCKED")  # as PostgreSQL logged them
    assert statements.evidence[1].startswith("UPDATE domain_events SET status=")
    skew = checks[RELAY[2]].figures
    assert skew["inversions"] == 0 and skew["created_at_order_inversions"] > 0  # the grader's clocks did disagree
    died = checks[RELAY[3]].figures
    # It died with its batch appended and nothing marked; the next relay sent the batch again, and the
    # lab's consumer applied every event once, its inbox dropping the repeats.
    assert died["appended_before_death"] == 20 and died["marked_at_death"] == 0
    assert died["repeats_absorbed_by_inbox"] == 20 and died["lost"] == 0 and died["effects_applied_twice"] == 0
    refused = checks[RELAY[4]].figures
    assert refused["marked_while_refused"] == 0 and refused["lost"] == 0
    if redis_mode == "server":
        assert refused["refusals_counted_by_redis"] == 20  # Redis's own OOM count: the pipeline's 20 XADDs
        assert "its process was killed" in checks[RELAY[3]].message
        assert batch["xadd_commands"] == 20
    two = checks[RELAY[5]].figures
    assert two["published_twice"] == 0 and two["lost"] == 0 and sum(two["published_by_each_relay"]) == 40


async def test_a_relay_that_marks_before_it_appends_loses_the_events_redis_refused(cluster, redis_mode):
    code = edit("outbox-relay", APPEND_THEN_MARK, MARK_THEN_APPEND)
    grade = await exercises.grade("outbox-relay", code, cluster=cluster, redis=redis_mode)
    assert failed(grade) == [RELAY[4]]
    check = by_name(grade)[RELAY[4]]
    assert check.message.startswith("20 events marked published, never appended, while Redis refused")
    assert "20 of them never sent afterwards" in check.message
    assert check.figures["marked_never_appended_while_refused"] == 20 and check.figures["lost"] == 20


async def test_a_relay_that_commits_per_event_is_told_its_transactions(cluster):
    code = edit("outbox-relay", APPEND_THEN_MARK, COMMIT_PER_EVENT)
    grade = await exercises.grade("outbox-relay", code, cluster=cluster, redis="server")
    assert RELAY[1] in failed(grade)
    check = by_name(grade)[RELAY[1]]
    assert check.message.startswith("21 statements in 20 transactions for a batch of 20: the first COMMIT ended the "
                                     "claim's locks")
    assert check.figures["transactions"] == 20


async def test_a_relay_without_row_locks_publishes_events_twice_with_two_relays(cluster):
    code = edit("outbox-relay", "        .with_for_update(of=DomainEvent, skip_locked=True)\n", "")
    grade = await exercises.grade("outbox-relay", code, cluster=cluster, redis="server")
    assert failed(grade) == [RELAY[5]]
    check = by_name(grade)[RELAY[5]]
    twice = check.figures["published_twice"]
    assert twice > 0 and check.message.startswith(f"{twice} events published twice by two relays on 40 events")


async def test_a_relay_ordering_by_created_at_puts_events_out_of_order_when_clocks_disagree(cluster):
    code = edit("outbox-relay", USERS_BY_AGE, ".order_by(DomainEvent.created_at)")
    grade = await exercises.grade("outbox-relay", code, cluster=cluster, redis="server")
    assert failed(grade) == [RELAY[2]]
    check = by_name(grade)[RELAY[2]]
    inverted = check.figures["inversions"]
    # Each user's events come in pairs, A's then B's stamped 200 ms earlier: B's go first.
    assert inverted > 0 and check.figures["created_at_order_inversions"] > 0
    assert check.message.startswith(f"{inverted} of 24 events reached the stream after a later event (by sequence) "
                                     "of their user: the stream follows created_at")


async def test_a_relay_marking_each_event_by_itself_is_told_one_update_per_event(cluster):
    code = edit("outbox-relay", '''    await session.execute(update(DomainEvent).where(DomainEvent.id.in_([event.id for event in events]))
                          .values(status="published", published_at=datetime.now(UTC)))
''', '''    for event in events:
        event.status, event.published_at = "published", datetime.now(UTC)
''')
    grade = await exercises.grade("outbox-relay", code, cluster=cluster, redis="server")
    assert failed(grade) == [RELAY[1]]
    assert by_name(grade)[RELAY[1]].message.startswith("21 statements in 1 transaction for a batch of 20, over 3 "
                                                       "(20 UPDATEs: one per event)")


HOSTILE = '''
import socket

from sqlalchemy import select, text, update

from source.models import DomainEvent

for target in (("127.0.0.1", 5432), ("127.0.0.1", 6379)):
    try:
        socket.create_connection(target, 1)
        print("TRY", target[1], "-> connected")
    except OSError as error:
        print("TRY", target[1], "-> blocked:", type(error).__name__)

ATTEMPTS = {
    "fake the inbox": "INSERT INTO consumer_inbox (event_id, stream_id, deliveries, applied_at) "
                      "SELECT id, '0-1', 1, now() FROM domain_events",
    "fake the read model": "INSERT INTO score_summaries (user_id, scores_applied, latest_score_id, latest_air_score, "
                           "latest_event_at, updated_at) SELECT aggregate_id, 1, '-', 0, now(), now() FROM domain_events",
    "renumber": "UPDATE domain_events SET sequence = sequence + 1000",
    "delete": "DELETE FROM domain_events",
    "disable the grader's triggers": "ALTER TABLE domain_events DISABLE TRIGGER ALL",
    "stop the log": "SET log_statement = 'none'",
}


async def relay_batch(session, redis, stream, *, batch_size=100):
    for name, sql in ATTEMPTS.items():
        try:
            async with session.begin_nested():
                await session.execute(text(sql))
            print("TRY", name, "-> done")
        except Exception as error:
            print("TRY", name, "-> blocked:", type(error).__name__)
    ids = (await session.scalars(select(DomainEvent.id).where(DomainEvent.status == "pending")
                                 .limit(batch_size))).all()
    await session.execute(update(DomainEvent).where(DomainEvent.id.in_(ids)).values(status="published"))
    await session.commit()  # published without an append, as if the consumer had them
    return len(ids)
'''


async def test_hostile_relay_code_reaches_no_lab_server_and_cannot_make_its_events_look_applied(cluster):
    grade = await exercises.grade("outbox-relay", HOSTILE, cluster=cluster, redis="server")
    tried = {}
    for line in grade.output.splitlines():
        if line.startswith("TRY "):
            what, _, result = line[4:].partition(" -> ")
            tried.setdefault(what, set()).add(result)
    for port in ("5432", "6379"):  # the lab's PostgreSQL and Redis: no network in the sandbox, not even loopback
        assert len(tried[port]) == 1 and tried[port].pop().startswith("blocked:"), tried[port]
    for name in ("fake the inbox", "fake the read model", "renumber", "delete", "disable the grader's triggers",
                 "stop the log"):
        assert tried[name] == {"blocked: ProgrammingError"}, (name, tried[name])
    assert not grade.passed
    first = by_name(grade)[RELAY[0]]
    assert first.message == "20 events marked published, never appended."
    assert first.figures["all_applied_once"] == 0 and first.figures["all_lost"] == 30  # the grader's inbox, untouched
    assert by_name(grade)[RELAY[1]].figures["statements"] >= 8  # the log kept every statement it sent


# --- 5b: the event table ---------------------------------------------------------------------------

async def test_the_answer_key_of_5b_passes_every_check_next_to_the_labs_designs(cluster, redis_mode):
    grade = await exercises.grade("event-table", exercises.get("event-table").answer_key, cluster=cluster,
                                  redis=redis_mode)
    assert grade.passed, grade.message
    checks = by_name(grade)
    assert checks[TABLE[0]].figures["tables"] == ["event_counters", "outbox_events"]
    race = checks[TABLE[1]].figures
    assert race["committed"] == race["published"] == 40 and race["pairs_out_of_commit_order"] == 0
    assert race["lab_sequence_inversions"] == 0 and race["lab_created_at_inversions"] > 0  # 5b's experiment, same race
    kept = checks[TABLE[2]].figures
    assert (kept["published"], kept["rows_left"], kept["history_rows"]) == (20, 20, 20)
    assert (kept["failed_attempts"], kept["attempts_recorded"]) == (4, 4)
    assert kept["lab_status_column_history_rows"] == 20 and kept["lab_delete_on_publish_history_rows"] == 0


async def test_a_table_ordered_by_created_at_publishes_pairs_out_of_commit_order(cluster):
    code = edit("event-table", ".order_by(OutboxEvent.aggregate_id, OutboxEvent.sequence)",
                ".order_by(OutboxEvent.created_at)")
    grade = await exercises.grade("event-table", code, cluster=cluster, redis="server")
    assert failed(grade) == [TABLE[1]]
    check = by_name(grade)[TABLE[1]]
    pairs = check.figures["pairs_out_of_commit_order"]
    assert pairs > 0 and check.message.startswith(f"{pairs} pairs of the aggregate's events published opposite to "
                                                  "their commit order")


async def test_a_table_that_deletes_on_publish_keeps_no_history_and_no_attempts(cluster):
    code = edit("event-table", '''    event.status, event.published_at = "published", datetime.now(UTC)''',
                "    await session.delete(event)  # published: nothing left to do for it")
    grade = await exercises.grade("event-table", code, cluster=cluster, redis="server")
    assert failed(grade) == [TABLE[2], TABLE[3]]
    history, attempts = by_name(grade)[TABLE[2]], by_name(grade)[TABLE[3]]
    assert history.message.startswith("0 of 20 published events left in your table")
    assert history.figures["rows_left"] == 0 and history.figures["lab_delete_on_publish_rows_left"] == 0
    assert attempts.message.startswith("0 attempts recorded for 4 refusals")


async def test_a_table_without_an_attempts_column_is_told_the_refusals_left_no_count(cluster):
    code = edit("event-table", "    attempts: Mapped[int] = mapped_column(Integer, default=0)  # refused attempts\n", "")
    code = edit("event-table", "    event.attempts += 1\n", "", code)
    grade = await exercises.grade("event-table", code, cluster=cluster, redis="server")
    assert failed(grade) == [TABLE[3]]
    assert by_name(grade)[TABLE[3]].message.startswith("Your table has no attempts column: the 4 refusals left no count")
