"""Section 4 (Analyze): cache-aside read and invalidate-on-write against a plain Redis client.

The learner's `get_user` and `rename_user` run in the sandbox against the run's own Redis (a
private redis-server on a Unix socket) and database. The grader counts the database loads in the
database's log, reads Redis's own counters (INFO) on its own client, makes COMMITs fail or take
0.3 s through a deferred constraint the learner's role cannot see, and makes Redis hang (SIGSTOP)
or refuse connections (killed) from outside. Without redis-server, fakeredis runs inside the child:
the database figures still come from outside, but Redis's figures come from the child, and Redis
cannot be made to hang."""

from __future__ import annotations

import secrets
import statistics
from pathlib import Path

from sqlalchemy import text

from ..catalogue import CheckResult, Exercise
from ..checking import fresh_names, names_of, pick_users, statements_evidence, unknown_id
from ..runner import Stopped
from ..seed import SLOW_COMMIT_SECONDS

READERS = 100
BUDGET = 0.1  # seconds: a read while Redis fails
FAILING_READS = 3
CHECKS = (
    "A miss reads the database; the next read is a hit in Redis",
    "A read after a write returns the new name",
    "A write whose COMMIT fails leaves the cache alone",
    "A read during a write's COMMIT does not bring the old name back",
    f"{READERS} readers of a cold key",
    f"Single flight: 1 database load for {READERS} readers (stretch goal)",
    "Redis hung: reads served from the database within 100 ms",
    "Redis refusing connections: reads served from the database within 100 ms",
)


class Probe:
    """Redis as the grader sees it: the run's redis-server on the grader's own client, or (with
    fakeredis) what the child reports."""

    def __init__(self, run) -> None:
        self.run = run
        self.client = run.redis.client() if run.redis is not None else None

    async def flush(self) -> None:
        if self.client is not None:
            await self.client.flushall()
        else:
            await self.run.call("fake_flush")

    async def keys(self) -> int:
        if self.client is not None:
            return await self.client.dbsize()
        return (await self.run.call("fake_keys")).value

    async def hits(self) -> int | None:
        return (await self.client.info("stats"))["keyspace_hits"] if self.client is not None else None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def name_in(answer) -> str | None:
    value = answer.value if answer.ok else None
    return value.get("name") if isinstance(value, dict) else None


async def before_load(run) -> dict:
    return {"users": await pick_users(run, 5)}


async def checks(run, state: dict):
    probe = Probe(run)
    try:
        users = state["users"]
        yield await miss_then_hit(run, probe, users[0])
        yield await read_after_write(run, users[1])
        yield await refused_commit(run, users[2])
        yield await slow_commit(run, users[3])
        for result in await many_readers(run, probe, users[4]):
            yield result
        yield await redis_failing(run, probe, users[0], CHECKS[6], "hung")
        yield await redis_failing(run, probe, users[1], CHECKS[7], "refusing")
    finally:
        if run.redis is not None:
            run.redis.resume()
        await probe.close()


async def miss_then_hit(run, probe: Probe, user: str) -> CheckResult:
    name = (await fresh_names(run, [user]))[user]
    await probe.flush()
    hits = await probe.hits()
    first = await run.step("read", user_id=user)
    keys = await probe.keys()
    second = await run.step("read", user_id=user)
    hit_count = None if hits is None else await probe.hits() - hits
    missing = await run.step("read", user_id=unknown_id())
    figures = {"first_read_statements": first.seen.count, "second_read_statements": second.seen.count,
               "redis_keys_after_first_read": keys, "redis_hits": hit_count,
               "first_read_ms": round(first.seconds * 1000, 1), "second_read_ms": round(second.seconds * 1000, 1)}
    problem = None
    if not first.answer.ok or not second.answer.ok:
        problem = f"The read raised {(first.answer if not first.answer.ok else second.answer).error_text}"
    elif name_in(first.answer) != name:
        problem = f"The first read returned {first.answer.value!r}; the database has the name {name!r}"
    elif not keys:
        problem = "After the first read (a miss) Redis holds no key: nothing was stored"
    elif second.seen.count:
        problem = (f"The second read sent {second.seen.count} statement(s) to the database: it was not served "
                   "from Redis")
    elif name_in(second.answer) != name:
        problem = f"The second read returned {second.answer.value!r}; the database has the name {name!r}"
    elif hit_count == 0:
        problem = "Redis counted no hit for the second read (its keyspace_hits did not move)"
    elif not missing.answer.ok or missing.answer.value is not None:
        problem = (f"A read of an ID that no user has returned {missing.answer.value!r}, not None"
                   if missing.answer.ok else f"A read of an ID that no user has raised {missing.answer.error_text}")
    if problem:
        return CheckResult(CHECKS[0], False, problem + ".", figures,
                           statements_evidence(first.seen.statements + second.seen.statements))
    told = f", and Redis counted {hit_count} hit" if hit_count is not None else " (Redis counted by the child: fakeredis)"
    return CheckResult(CHECKS[0], True, f"The first read sent {first.seen.count} statement(s) and stored {keys} key(s); "
                       f"the second sent none{told}.", figures)


async def read_after_write(run, user: str) -> CheckResult:
    await run.call("read", user_id=user)  # cached
    new = f"Renamed {secrets.token_hex(3)}"
    write = await run.call("rename", user_id=user, name=new)
    stored = (await names_of(run, [user]))[user]
    read = await run.step("read", user_id=user)
    figures = {"read_statements": read.seen.count}
    if not write.ok:
        return CheckResult(CHECKS[1], False, f"rename_user raised {write.error_text}.", figures)
    if stored != new:
        return CheckResult(CHECKS[1], False, f"After rename_user the database has {stored!r}, not {new!r}: the "
                           "change was not committed.", figures)
    if name_in(read.answer) != new:
        return CheckResult(CHECKS[1], False, f"The read after the write returned {name_in(read.answer)!r}; the "
                           f"database has {new!r}: the old name stayed in Redis.", figures)
    return CheckResult(CHECKS[1], True, f"The read after the write returned {new!r} "
                       f"({read.seen.count} statement(s) to reload it).", figures)


async def commit_fault(run, action: str) -> str:
    name = f"Renamed {secrets.token_hex(3)}"
    await run.sql(text("INSERT INTO exercise_commit_faults (name, action) VALUES (:name, :action)"),
                  {"name": name, "action": action})
    return name


async def refused_commit(run, user: str) -> CheckResult:
    committed = (await fresh_names(run, [user]))[user]
    await run.call("read", user_id=user)  # cached
    refused = await commit_fault(run, "refuse")
    write = await run.call("rename", user_id=user, name=refused)
    stored = (await names_of(run, [user]))[user]
    read = await run.call("read", user_id=user)
    raised = (f"rename_user raised {write.error['type']}: {write.error['message']}" if not write.ok
              else "rename_user returned without an error")
    if stored != committed:
        return CheckResult(CHECKS[2], False, f"The database has {stored!r} after a write whose COMMIT should have "
                           f"failed ({raised}).")
    if not read.ok:
        return CheckResult(CHECKS[2], False, f"After a write whose COMMIT failed, the read raised {read.error_text}.")
    if name_in(read) != committed:
        return CheckResult(CHECKS[2], False, f"After a write whose COMMIT failed, the read returned "
                           f"{name_in(read)!r}; the database still has {committed!r}: the cache was written "
                           "before the COMMIT.")
    return CheckResult(CHECKS[2], True, f"The COMMIT failed ({raised}); the next read returned {committed!r}, "
                       "the database's name.")


async def slow_commit(run, user: str) -> CheckResult:
    old = (await fresh_names(run, [user]))[user]
    await run.call("read", user_id=user)  # cached
    new = await commit_fault(run, "slow")
    step = await run.step("rename_while_reading", user_id=user, name=new, read_after=SLOW_COMMIT_SECONDS / 3)
    stored = (await names_of(run, [user]))[user]
    value = step.answer.value if step.answer.ok and isinstance(step.answer.value, dict) else {}
    during, write, after = (value.get(key) or ["error", "?"] for key in ("during", "write", "after"))
    figures = {"old_name": old, "new_name": new, "during_write": during[1], "after_write": after[1],
               "commit_seconds": SLOW_COMMIT_SECONDS}
    if not step.answer.ok:
        return CheckResult(CHECKS[3], False, f"The check's calls raised {step.answer.error_text}.", figures)
    if write[0] != "ok" or stored != new:
        return CheckResult(CHECKS[3], False, f"The write did not commit ({write[1]}); the database has {stored!r}.",
                           figures)
    got, seen_during = shown(after), shown(during)
    if got != new:
        which = "the old name" if got == old else "not the new name"
        return CheckResult(CHECKS[3], False, f"After the write committed, the next read returned {got!r} ({which}); "
                           f"the database has {new!r}. A read during the {SLOW_COMMIT_SECONDS:g} s COMMIT found the key gone, loaded "
                           "the old row (the new one was not committed yet) and stored it: invalidate after the "
                           "COMMIT, not before.", figures, statements_evidence(step.seen.statements))
    return CheckResult(CHECKS[3], True, f"A read during the {SLOW_COMMIT_SECONDS:g} s COMMIT got {seen_during!r}; "
                       f"the read after it got {new!r}.", figures)


def shown(outcome: list):
    """The name an ["ok", user] outcome holds, or what went wrong."""
    kind, value = outcome
    return value.get("name") if kind == "ok" and isinstance(value, dict) else value


async def many_readers(run, probe: Probe, user: str) -> list[CheckResult]:
    name = (await fresh_names(run, [user]))[user]
    await probe.flush()
    step = await run.step("read_many", user_id=user, readers=READERS, timeout=30)
    after = await run.step("read", user_id=user)
    outcomes = step.answer.value if step.answer.ok and isinstance(step.answer.value, list) else []
    errors = [o[1] for o in outcomes if o[0] != "ok"]
    wrong = [o[1] for o in outcomes if o[0] == "ok" and (o[1] or {}).get("name") != name]
    loads = step.seen.count
    figures = {"readers": READERS, "database_loads": loads, "errors": len(errors), "wrong_values": len(wrong),
               "seconds": round(step.seconds, 3), "statements_after": after.seen.count}
    if not step.answer.ok:
        result = CheckResult(CHECKS[4], False, f"The readers' gather raised {step.answer.error_text}.", figures)
    elif errors:
        result = CheckResult(CHECKS[4], False, f"{len(errors)} of {READERS} reads raised, e.g. {errors[0]}.", figures)
    elif wrong:
        result = CheckResult(CHECKS[4], False, f"{len(wrong)} of {READERS} reads did not return {name!r}, e.g. "
                             f"{wrong[0]!r}.", figures)
    elif after.seen.count:
        result = CheckResult(CHECKS[4], False, f"After the {READERS} reads, the next read still sent "
                             f"{after.seen.count} statement(s): the user was not cached.", figures)
    else:
        result = CheckResult(CHECKS[4], True, f"All {READERS} readers got {name!r}, with {loads} database load(s) in "
                             f"{step.seconds * 1000:.0f} ms; the next read was a hit.", figures)
    if not result.passed:
        stretch = CheckResult(CHECKS[5], False, "Not measured: the readers did not all get the user.", required=False)
    elif loads == 1:
        stretch = CheckResult(CHECKS[5], True, f"1 database load for {READERS} concurrent readers of a cold key.",
                              {"database_loads": loads}, required=False)
    else:
        stretch = CheckResult(CHECKS[5], False, f"{loads} database loads for {READERS} concurrent readers of a cold key. "
                              "With single flight the first reader reads and the others await its result (one "
                              "asyncio.Future per user being read): 1 load.", {"database_loads": loads}, required=False)
    return [result, stretch]


async def redis_failing(run, probe: Probe, user: str, check: str, how: str) -> CheckResult:
    if run.stopped:
        raise Stopped(run.stopped)
    if how == "hung" and run.redis is None:
        return CheckResult(check, None, "Not run: this run's Redis is fakeredis, inside the child (no redis-server), "
                           "which the grader cannot make hang.", required=False)
    if how == "hung":
        run.redis.hang()
    elif run.redis is not None:
        await run.redis.refuse()
    else:
        await run.call("fake_refuse")
    name = (await fresh_names(run, [user]))[user]
    clock, waited, problem = [], [], None
    try:
        for _ in range(FAILING_READS):
            before = run.cpu_wait()
            answer = await run.call("read", user_id=user, timeout=2)
            after = run.cpu_wait()
            clock.append(answer.seconds)
            waited.append(after - before if before is not None and after is not None else 0.0)
            if not answer.ok:
                problem = f"a read raised {answer.error_text}"
            elif name_in(answer) != name:
                problem = f"a read returned {answer.value!r}; the database has {name!r}"
    except Stopped:
        return CheckResult(check, False, f"With Redis {how}, a read was still waiting after 2 s, and the run was "
                           "stopped: bound every Redis call (asyncio.timeout) and fall back to the database.",
                           {"read_ms": [round(s * 1000, 1) for s in clock]})
    finally:
        if run.redis is not None:
            run.redis.resume()
    # The time the read took, less the time the child was ready to run but waited for a CPU (the
    # machine's load, and the child's lower priority): what the code itself spent, waits included.
    own = statistics.median(c - w for c, w in zip(clock, waited, strict=True))
    figures = {"read_ms": [round(c * 1000, 1) for c in clock], "cpu_wait_ms": [round(w * 1000, 1) for w in waited],
               "median_ms": round(own * 1000, 1), "budget_ms": BUDGET * 1000}
    how_long = f"{own * 1000:.0f} ms (median of {FAILING_READS}"
    if statistics.median(waited) >= 0.01:
        how_long += (f"; {statistics.median(clock) * 1000:.0f} ms on the clock, of which the child waited "
                     f"{statistics.median(waited) * 1000:.0f} ms for a CPU: this machine is busy")
    how_long += ")"
    if problem:
        return CheckResult(check, False, f"With Redis {how}, {problem}.", figures)
    if own > BUDGET:
        return CheckResult(check, False, f"With Redis {how}, reads took {how_long}, over {BUDGET * 1000:.0f} ms: "
                           "the cache made the reads slower than the database alone.", figures)
    return CheckResult(check, True, f"With Redis {how}, reads returned the database's name in {how_long}.", figures)


EXERCISE = Exercise(
    id="cache-aside",
    section="4",
    title="Cache-aside: read through Redis, invalidate on write",
    folder=Path(__file__).resolve().parent,
    required_names=("get_user", "rename_user"),
    check_names=CHECKS,
    hints=(
        "get_user: GET a key of your own (f'user:{user_id}'); on a hit, json.loads it. On a miss, read the user "
        "with a session from `sessions`, then SET the JSON with `ex=` (a TTL).",
        "rename_user: change the name inside `async with sessions.begin() as session:`; delete the key after that "
        "block, once the COMMIT succeeded. Deleted before, a reader can store the old row again.",
        "Bound every Redis call (`async with asyncio.timeout(0.05):`) and catch RedisError, OSError and "
        "TimeoutError: then serve from the database. When the GET failed, do not try the SET: that would wait a "
        "second time.",
        "Stretch goal: keep a dict of one asyncio.Future per user being read; a reader that finds one awaits it "
        "instead of asking Redis and the database again.",
    ),
    before_load=before_load,
    checks=checks,
    uses_redis=True,
)
