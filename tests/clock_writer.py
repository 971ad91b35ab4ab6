"""A writer process for test_outbox_clocks.py: stores COUNT scores for the given users, round robin,
each with its event, through the lab's own service, as an app server would. The test runs two of
these at once, one under libfaketime with its clock set back.

Usage: python tests/clock_writer.py DATABASE_URL COUNT USER_ID [USER_ID ...]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from source import Database, calculate_and_store_airscore  # noqa: E402


async def main(url: str, count: int, users: list[str]) -> None:
    db = Database(url)
    try:
        for n in range(count):
            await calculate_and_store_airscore(sessions=db.sessions, user_id=users[n % len(users)], occupation_code="X")
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
