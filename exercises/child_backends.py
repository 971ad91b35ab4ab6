"""The run's database and Redis, as every exercise's ops open them inside the sandbox (a copy of
this file is /lab/child_backends.py, next to the ops modules that import it)."""

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine


def connect(context, **engine_options) -> None:
    """Sets context.engine (the run's database, with the exercise's pool options) and
    context.sessions; for an exercise that uses Redis, context.client and, with fakeredis,
    context.fake_server (the server behind the client, for the ops that stand in for the grader)."""
    context.engine = create_async_engine(context.database_url, **engine_options)
    context.sessions = async_sessionmaker(context.engine, expire_on_commit=False)
    if context.redis is None:  # the exercise uses no Redis
        return
    if context.redis["kind"] == "server":
        import redis.asyncio as aioredis

        # A plain client with redis-py's defaults (no timeouts): bounding waits is the learner's job.
        context.client = aioredis.Redis(unix_socket_path=context.redis["socket"], password=context.redis["password"],
                                        decode_responses=True)
    else:  # no redis-server on this machine: fakeredis, inside this process
        import fakeredis

        context.fake_server = fakeredis.FakeServer()
        context.client = fakeredis.FakeAsyncRedis(server=context.fake_server, decode_responses=True)
