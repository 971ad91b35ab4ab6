"""A run leaves nothing behind; and what a process that died mid-run left (its database and role,
its Redis server and folder, its cgroups) is removed by the next sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import exercises
from exercises import private_redis, sandbox
from exercises.cluster import ExerciseCluster
from exercises.runner import _sweep_leftovers
from source.config import PROJECT_DIR


async def runs_in(cluster) -> set[str]:
    engine = create_async_engine(cluster.admin_url())
    try:
        async with engine.connect() as conn:
            return set((await conn.scalars(text(
                "SELECT datname FROM pg_database WHERE datname LIKE 'exrun%' "
                "UNION SELECT rolname FROM pg_roles WHERE rolname LIKE 'exrun%'"))).all())
    finally:
        await engine.dispose()


def cgroups_of(pid: int) -> list[Path]:
    roots = [sandbox.CGROUP_ROOT / "memory" / sandbox.CGROUP_NAME, sandbox.CGROUP_ROOT / "pids" / sandbox.CGROUP_NAME]
    return [path for root in roots if root.is_dir() for path in root.glob(f"{pid}-*")]


def redis_folders_of(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"lab2-exercise-redis-{pid}-*"))


async def test_a_run_leaves_no_database_role_cgroup_redis_or_folder(cluster):
    grade = await exercises.grade("cache-aside", exercises.get("cache-aside").answer_key, cluster=cluster)
    assert grade.passed, grade.message
    assert await runs_in(cluster) == set()
    assert cgroups_of(os.getpid()) == [] and redis_folders_of(os.getpid()) == []
    assert not any(p.info["name"] == "redis-server" and p.info["ppid"] == os.getpid()
                   for p in psutil.process_iter(["name", "ppid"]))


async def test_what_a_process_that_died_mid_run_left_is_swept(cluster):
    await cluster.ensure_ready()
    died = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import asyncio, os
        from pathlib import Path
        from exercises import private_redis, sandbox
        from exercises.cluster import ExerciseCluster

        async def main():
            cluster = ExerciseCluster(Path({str(cluster.folder)!r}))
            await cluster.ensure_ready()
            run = await cluster.create_run()
            redis = private_redis.PrivateRedis()
            await redis.start()
            if sandbox.capabilities().cgroup:
                sandbox.RunCgroup(sandbox.capabilities().cgroup, f"{{os.getpid()}}-{{run.name}}", sandbox.Limits())
            print(os.getpid(), run.name, redis.process.pid, flush=True)
            os._exit(1)  # dies mid-run: nothing is cleaned up

        asyncio.run(main())
    """)], capture_output=True, text=True, cwd=PROJECT_DIR, timeout=120)
    pid, name, redis_pid = died.stdout.split()
    pid, redis_pid = int(pid), int(redis_pid)
    assert name in await runs_in(cluster) and redis_folders_of(pid) and psutil.pid_exists(redis_pid)
    assert bool(cgroups_of(pid)) == bool(sandbox.capabilities().cgroup)

    assert name in await cluster.sweep()
    await __import__("asyncio").to_thread(_sweep_leftovers)
    assert name not in await runs_in(cluster)
    assert redis_folders_of(pid) == [] and cgroups_of(pid) == []
    assert not psutil.pid_exists(redis_pid) or psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE
    private_redis.sweep()  # a second sweep finds nothing and fails on nothing


async def test_an_exercise_cluster_that_no_longer_starts_is_made_afresh(tmp_path):
    if os.name != "posix":
        pytest.skip("the embedded PostgreSQL runs on Linux and macOS")
    first = ExerciseCluster(tmp_path / "exercise-pg")
    await first.ensure_ready()
    first.stop()
    (first.server.pgdata / "global" / "pg_control").unlink()  # as a crash with fsync off might leave it
    again = ExerciseCluster(tmp_path / "exercise-pg")
    try:
        assert (await again.ensure_ready()).startswith("exercise_template_")
        run = await again.create_run()
        await again.drop_run(run)
    finally:
        again.stop()
