"""Section 3's ops, inside the sandbox (copied to /lab as latest_scores_ops.py)."""

from child_backends import connect  # exercises/child_backends.py, copied beside this file


async def setup(context) -> None:
    connect(context, pool_size=2, max_overflow=0)


async def teardown(context) -> None:
    await context.engine.dispose()


async def latest(context, user_ids: list[str]) -> list:
    """The learner's method on a fresh session: [[user id, score id or None], ...]."""
    async with context.sessions() as session:
        rows = await context.solution.ScoreboardRepository(session).users_with_latest_score(list(user_ids))
        if not isinstance(rows, list | tuple):
            raise TypeError(f"users_with_latest_score returned {type(rows).__name__}, not a list of (user, score)")
        pairs = []
        for row in rows:
            if not isinstance(row, list | tuple) or len(row) != 2:
                raise TypeError(f"each item must be a (user, score or None) pair; one is {row!r:.200}")
            user, score = row
            pairs.append([str(user.id), None if score is None else str(score.id)])
        return pairs
