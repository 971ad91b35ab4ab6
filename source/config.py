"""Where the lab's data lives: URLs from the environment, with embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

PROJECT_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_DIR / "data"  # git-ignored
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def database_url() -> str:
    """DATABASE_URL, or a SQLite file in the data folder (created on demand)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    DATA_DIR.mkdir(exist_ok=True)
    return f"sqlite+aiosqlite:///{DATA_DIR / 'lab2.db'}"


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
