"""Where the lab's data lives: URLs from the environment, with embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

PROJECT_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_DIR / "data"  # git-ignored
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def database_url() -> str | None:
    """DATABASE_URL, or None when it is unset: the app then runs its embedded default (a
    PostgreSQL in the data folder, or a SQLite file there when that cannot start)."""
    return os.environ.get("DATABASE_URL", "").strip() or None


def redis_url() -> tuple[str, bool]:
    """The Redis URL and whether the learner chose it (REDIS_URL set)."""
    url = os.environ.get("REDIS_URL", "").strip()
    return (url, True) if url else (DEFAULT_REDIS_URL, False)


def redis_prefix() -> str:
    """Every key and stream the lab writes starts with this (LAB_REDIS_PREFIX, default "lab2:"),
    so the lab can share a Redis server and clean up only what it made."""
    return os.environ.get("LAB_REDIS_PREFIX", "").strip() or "lab2:"


def mask_url(url: str) -> str:
    """The URL as it may be shown: never with its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
