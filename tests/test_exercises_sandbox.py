"""Hostile learner code, run through the real sandbox: each attempt is contained or has no effect on
the grade, the learner is told what happened, and the grader serves the next grade."""

from __future__ import annotations

import pytest

import exercises
from exercises import sandbox
from exercises.sandbox import Limits
from source.config import DATA_DIR, PROJECT_DIR

KEY = exercises.get("latest-scores").answer_key
QUICK = Limits(step_seconds=3.0)


async def graded(cluster, code: str, **options) -> exercises.Grade:
    return await exercises.grade("latest-scores", code, cluster=cluster, **options)


def attempts(*lines: str) -> str:
    """Top-level code that tries each expression and prints what happened, after the key."""
    body = "\n".join(f"try:\n    print('TRY', {line!r}, '->', repr({line})[:80])\n"
                     f"except BaseException as error:\n    print('TRY', {line!r}, '-> blocked:', type(error).__name__)"
                     for line in lines)
    return KEY + "\n\nimport os, socket\n" + body + "\n"


def outcomes(grade: exercises.Grade) -> dict[str, str]:
    found = {}
    for line in grade.output.splitlines():
        if line.startswith("TRY "):
            what, _, result = line[4:].rpartition(" -> ")
            found[what.strip("'\"")] = result
    return found


async def test_the_code_finds_no_secret_in_its_environment(cluster, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://lab:secret-password@db/lab")
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "the-instructors-key")
    grade = await graded(cluster, KEY + "\nimport os\nprint('ENV', sorted(os.environ.items()))\n")
    assert grade.passed, grade.message
    assert "secret-password" not in grade.output and "the-instructors-key" not in grade.output
    listed = next(line for line in grade.output.splitlines() if line.startswith("ENV"))
    assert listed == ("ENV [('HOME', '/work'), ('LANG', 'C.UTF-8'), ('PATH', '/usr/bin:/bin'), ('PWD', '/work'), "
                      "('TMPDIR', '/work')]")


async def test_the_apps_files_its_data_and_other_packages_are_out_of_reach(cluster):
    site = sandbox.package_paths(("sqlalchemy",))[0].parent
    grade = await graded(cluster, attempts(
        f"open({str(PROJECT_DIR / 'source' / 'models.py')!r}).read()",
        f"os.listdir({str(PROJECT_DIR)!r})",
        f"os.listdir({str(DATA_DIR)!r})",
        f"os.listdir({str(site)!r})",
        "__import__('streamlit')",
        "open('/etc/passwd').read()",
        "open('/root/.bash_history').read()",
        "open('/lab/driver.py', 'a').write('#')",
        "sorted(os.listdir('/lab'))",
    ))
    assert grade.passed, grade.message
    seen = outcomes(grade)
    assert len(seen) == 9
    for attempt, result in list(seen.items())[:8]:
        assert result.startswith("blocked:"), (attempt, result)
    assert "'driver.py'" in seen["sorted(os.listdir('/lab'))"]  # the copies it needs, and nothing of the app


async def test_no_network_reaches_the_labs_database_or_redis(cluster):
    grade = await graded(cluster, attempts(
        "socket.create_connection(('127.0.0.1', 5432), 1)",
        "socket.create_connection(('127.0.0.1', 6379), 1)",
        "socket.create_connection(('1.1.1.1', 443), 1)",
        f"socket.socket(socket.AF_UNIX).connect({str(DATA_DIR / 'pg' / '.s.PGSQL.5432')!r})",
    ))
    assert grade.passed, grade.message
    assert all(result.startswith("blocked:") for result in outcomes(grade).values()), outcomes(grade)
    assert len(outcomes(grade)) == 4


async def test_another_runs_database_and_the_clusters_own_refuse_the_runs_role(cluster):
    other = await cluster.create_run()
    try:
        code = KEY + f"""
import asyncio, gc, threading, types
import asyncpg
from sqlalchemy.engine import make_url

own = make_url(next(o for o in gc.get_objects() if isinstance(o, types.SimpleNamespace)
                    and hasattr(o, 'database_url')).database_url)

async def attempt(user, password, database):
    try:
        conn = await asyncpg.connect(host='/run/pg', user=user, password=password, database=database)
        await conn.close()
        return 'connected'
    except Exception as error:
        return 'refused: ' + type(error).__name__

def attack():
    for user, password, database in [(own.username, own.password, {other.name!r}),
                                      (own.username, own.password, 'postgres'),
                                      ('postgres', own.password, 'postgres'),
                                      ({other.name!r}, own.password, {other.name!r}),
                                      (own.username, own.password, own.database)]:
        print('CONNECT', database == own.database, asyncio.run(attempt(user, password, database)))

thread = threading.Thread(target=attack)
thread.start()
thread.join()
"""
        grade = await graded(cluster, code)
    finally:
        await cluster.drop_run(other)
    assert grade.passed, grade.message
    lines = [line for line in grade.output.splitlines() if line.startswith("CONNECT")]
    # pg_hba.conf has no line for its role on another database, nor on the cluster's own; as
    # postgres, or as the other run's role, its password is the wrong one.
    assert lines[:4] == ["CONNECT False refused: InvalidAuthorizationSpecificationError"] * 2 + [
        "CONNECT False refused: InvalidPasswordError"] * 2
    assert lines[4] == "CONNECT True connected"  # the attempt itself works: only its own database


async def test_the_apps_modules_and_their_singletons_cannot_be_imported(cluster):
    grade = await graded(cluster, attempts(*(f"__import__({name!r})" for name in
                                             ("ui", "runtime", "labbench", "source.database", "source.cache",
                                              "harness"))))
    assert grade.passed, grade.message
    assert set(outcomes(grade).values()) == {"blocked: ModuleNotFoundError"}


async def test_patching_what_the_code_can_see_leaves_the_statement_count_as_the_server_logged_it(cluster):
    n_plus_one = KEY.replace(
        "select(User).where(User.id.in_(user_ids)).options(selectinload(User.scores))",
        "select(User).where(User.id.in_(user_ids))").replace("max(user.scores,", "max(await user.awaitable_attrs.scores,")
    code = n_plus_one.replace('''        result = await self.session.execute(''', '''        try:  # ask the server to stop logging this role's statements
            await self.session.execute(text("SET log_statement = 'none'"))
        except Exception as error:
            print("SET", "permission denied to set parameter" in str(error))
            await self.session.rollback()
        result = await self.session.execute(''').replace(
        "from sqlalchemy import select", "from sqlalchemy import select, text") + """
import sys, time
time.perf_counter = lambda: 0.0
time.monotonic = lambda: 0.0
driver = sys.modules['__main__']
driver.describe = lambda error, depth=0: {"type": "none", "message": "", "where": None}
"""
    grade = await graded(cluster, code)
    assert "SET True" in grade.output
    fifty = next(check for check in grade.checks if check.name == "Statements for 50 users: at most 2")
    assert fifty.passed is False and fifty.figures["statements"] >= 51


async def test_a_fork_bomb_stops_at_the_process_limit_and_the_next_grade_passes(cluster):
    if sandbox.capabilities().cgroup is None:
        pytest.skip("no writable cgroups here: the process limit is per user")
    bomb = KEY + "\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    grade = await graded(cluster, bomb, limits=QUICK)
    assert not grade.passed
    assert grade.checks[0].name == "Your code loads"
    assert "reached its limit of 64 processes" in grade.checks[0].message
    assert (await graded(cluster, KEY)).passed


async def test_an_endless_loop_is_stopped_at_the_wall_time_and_the_next_grade_passes(cluster):
    grade = await graded(cluster, KEY + "\nwhile True:\n    pass\n", limits=QUICK)
    assert grade.checks[0].message == "Stopped while loading: no answer within 3 s: the run was stopped"
    assert all(check.message.startswith("Not run: no answer within 3 s") for check in grade.checks[1:])
    assert (await graded(cluster, KEY)).passed


async def test_4_gb_of_memory_is_stopped_at_the_limit_and_the_next_grade_passes(cluster):
    grade = await graded(cluster, KEY + "\nhoard = b'x' * (4 * 2**30)\n")
    assert not grade.passed
    if sandbox.capabilities().cgroup is not None:
        assert grade.checks[0].message == "Stopped while loading: the code used all of its 512 MB of memory and was stopped"
    else:
        assert "MemoryError" in grade.checks[0].message  # RLIMIT_AS
    assert (await graded(cluster, KEY)).passed


async def test_a_1_gb_file_stops_at_the_file_size_limit(cluster):
    code = KEY + """
written = 0
try:
    with open('/work/big', 'wb') as handle:
        for _ in range(1024):
            handle.write(b'x' * 2**20)
            handle.flush()
            written += 2**20
except OSError as error:
    print('WRITE stopped', error.errno, written // 2**20, 'MB')
"""
    grade = await graded(cluster, code)
    assert grade.passed, grade.message
    assert "WRITE stopped 27 16 MB" in grade.output  # EFBIG at RLIMIT_FSIZE


async def test_without_bubblewrap_the_code_still_runs_apart_and_the_grade_says_what_is_missing(cluster, monkeypatch):
    real = sandbox.capabilities()
    monkeypatch.setattr(sandbox, "capabilities", lambda: sandbox.Capabilities(
        real.platform, None, real.setpriv, real.cgroup, real.cgroup_missing, real.redis_server))
    grade = await graded(cluster, KEY + "\nimport os\nprint('ENV', sorted(os.environ))\n")
    assert grade.passed, grade.message
    assert set(grade.sandbox_missing) == {"no network", "the app's files out of reach", "an unprivileged user"}
    assert "ENV ['HOME', 'LANG', 'PATH', 'TMPDIR']" in grade.output  # no PWD: bubblewrap's --chdir sets that
