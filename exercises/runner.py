"""One grading run, from the grader's side: the run's database and Redis, the sandboxed child
(child_process.py), and what is measured outside it: the database's log, the run's Redis, the
grader's clock.

    async with Run(exercise, cluster) as run:
        answer = await run.load(code)
        step = await run.step("lookup_all", user_ids=[...])   # answer + statements + seconds

Everything a run made is removed when the block ends, whatever happened in it: the child's whole
process tree, its cgroup, the Redis server and its folder, the run's database and role.
Leftovers of a process that died are swept at the next run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from . import private_redis, sandbox
from .child_process import WORK_PREFIX, Answer, Child, Stopped, sweep_folders
from .cluster import ExerciseCluster, RunDatabase
from .serverlog import Seen, ServerLog

SOCKETS = {"pg": "/run/pg", "redis": "/run/redis"}  # where the sandbox sees the two socket folders
log = logging.getLogger(__name__)

__all__ = ["Answer", "Run", "Step", "Stopped"]


@dataclass
class Step:
    answer: Answer
    seen: Seen = field(default_factory=Seen)  # what the run's role sent meanwhile

    @property
    def seconds(self) -> float:
        return self.answer.seconds


class Run:
    def __init__(self, exercise, cluster: ExerciseCluster, *, redis: str = "auto",
                 limits: sandbox.Limits | None = None) -> None:
        """redis: "server" (a private redis-server), "fakeredis" (inside the child: the grader
        cannot count its commands), or "auto" (a server where redis-server is installed)."""
        self.exercise = exercise
        self.cluster = cluster
        self.limits = limits or sandbox.Limits()
        self.caps = sandbox.capabilities()
        if redis == "auto":
            redis = "server" if self.caps.redis_server else "fakeredis"
        self.redis_mode = redis if exercise.uses_redis else None
        self.child = Child(self.limits)
        self.database: RunDatabase | None = None
        self.redis: private_redis.PrivateRedis | None = None
        self._admin = None
        self._admin_engine = None
        self._log: ServerLog | None = None
        self._sockets: dict = {}
        self._code = ""
        self._earlier_output = ""  # what a child that was replaced (restart) printed

    @property
    def stopped(self) -> str | None:
        return self.child.stopped

    @property
    def start_seconds(self) -> float:
        return self.child.start_seconds

    def output_text(self) -> str:
        return self._earlier_output + self.child.output()

    def cpu_wait(self) -> float | None:
        return self.child.cpu_wait()

    async def __aenter__(self) -> Run:
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.shield(self._close())

    async def _open(self) -> None:
        await self.cluster.ensure_ready()
        await asyncio.to_thread(_sweep_leftovers)
        self.database = await self.cluster.create_run()
        self._admin_engine = create_async_engine(self.cluster.admin_url(self.database.name), poolclass=NullPool,
                                                 isolation_level="AUTOCOMMIT")
        self._admin = await self._admin_engine.connect()
        self._log = ServerLog(self.cluster.server.pgdata)
        sockets = {SOCKETS["pg"]: self.cluster.socket_dir}
        if self.redis_mode == "server":
            self.redis = private_redis.PrivateRedis()
            await self.redis.start()
            sockets[SOCKETS["redis"]] = self.redis.socket_dir
        self._sockets = sockets
        await self._start_child()
        await self.fence()  # the measuring starts here

    async def _start_child(self) -> None:
        packages = sandbox.CHILD_PACKAGES + (sandbox.FAKEREDIS_PACKAGES if self.redis_mode == "fakeredis" else ())
        await self.child.start(name=self.database.name, sockets=self._sockets, packages=packages)
        await self.child.send({"ops": f"{self.exercise.package}_ops", "database_url": self._database_url(),
                               "redis": self._redis_settings(), **self.exercise.child_settings})

    def _database_url(self) -> str:
        inside = SOCKETS["pg"] if self.caps.os_sandbox else self.cluster.socket_dir
        return self.database.url(inside)

    def _redis_settings(self) -> dict | None:
        if self.redis_mode == "server":
            inside = SOCKETS["redis"] if self.caps.os_sandbox else str(self.redis.socket_dir)
            return {"kind": "server", "socket": f"{inside}/redis.sock", "password": self.redis.password}
        return {"kind": "fakeredis"} if self.redis_mode == "fakeredis" else None

    async def _close(self) -> None:
        await self.child.close()
        if self.redis is not None:
            await self.redis.stop()
        if self._admin is not None:
            await self._admin.close()
        if self._admin_engine is not None:
            await self._admin_engine.dispose()
        if self.database is not None:
            try:
                await self.cluster.drop_run(self.database)
            except DBAPIError as error:  # left for the sweep: the learner still gets the results
                log.warning("could not drop the run's database %s: %s", self.database.name, error)

    # --- what the checks use ----------------------------------------------------------------

    async def call(self, op: str, *, timeout: float | None = None, **args) -> Answer:
        """One request to the child, timed on the grader's clock. Raises Stopped."""
        return await self.child.request({"op": op, "args": args}, timeout or self.limits.step_seconds)

    async def load(self, code: str) -> Answer:
        self._code = code
        return await self.child.request({"op": "load", "code": code}, self.limits.step_seconds)

    async def restart(self) -> Answer:
        """A fresh child with the code loaded again, in place of one that died or was killed (a
        relay process that dies and its successor): the same database and Redis. Raises Stopped."""
        self._earlier_output += self.child.output()
        await self.child.close()
        self.child = Child(self.limits)
        await self._start_child()
        return await self.load(self._code)

    async def fence(self) -> Seen:
        """What the run's role sent since the last fence, as the server logged it."""
        return await self._log.until_fence(self._admin, self.database.name)

    async def step(self, op: str, *, timeout: float | None = None, **args) -> Step:
        """A request, with what the database saw during it."""
        await self.fence()
        answer = await self.call(op, timeout=timeout, **args)
        return Step(answer, await self.fence())

    async def sql(self, statement, params: dict | list | None = None):
        """A statement on the run's database as the grader (not logged, not the child's)."""
        return await self._admin.execute(statement, params or {})


def _sweep_leftovers() -> None:
    sandbox.sweep_cgroups()
    private_redis.sweep()
    sweep_folders(WORK_PREFIX)
