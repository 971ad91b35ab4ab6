"""A second process for test_cache.py's race test: a cached read of one user whose database load
reads the row, says "loaded" on stdout, and waits for "go" on stdin before it returns, so that
the test can commit a write (and invalidate) in between. Prints the Lookup as JSON.

Usage: python tests/cache_race_reader.py DATABASE_URL REDIS_URL KEY_PREFIX USER_ID
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from source import Database, RedisCache  # noqa: E402
from source.cache import cache_client  # noqa: E402
from source.cached_repository import CachedUserRepository, UserData  # noqa: E402
from source.redis_setup import RedisTarget  # noqa: E402
from source.repositories import UserRepository  # noqa: E402


async def main(db_url: str, redis_url: str, prefix: str, user_id: str) -> None:
    db = Database(db_url)
    client = cache_client(RedisTarget("server", "race", "test", redis_url))
    cache = RedisCache(client, prefix=prefix)
    repo = CachedUserRepository(sessions=db.sessions, cache=cache)

    async def load() -> UserData | None:
        async with db.sessions() as session:
            user = await UserRepository(session).get_by_id(user_id)
            row = UserData.from_model(user) if user else None
        print("loaded", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the test commits its write meanwhile
        return row

    lookup = await cache.read_through(repo.user_key(user_id), load=load, kind=UserData)
    print(json.dumps({
        "outcome": lookup.outcome, "loaded": lookup.loaded, "stored": lookup.stored,
        "not_stored": lookup.not_stored, "years_experience": lookup.value.years_experience,
    }), flush=True)
    await client.aclose()
    await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
