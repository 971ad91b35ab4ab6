"""The lab's code, in the order of its sections. Read the modules in this order:

models.py        1. the data models
database.py      2. engine, sessions, pooling, the statement recorder, migrations to head
pooling.py       2. pooling measured (pooled engine against NullPool), and atomicity
repositories.py  3. the repository pattern (and the N+1 strategies)
loading.py       3. the N+1 measured: each strategy's statements, data and time
cache.py         4. cache-aside on Redis (redis_setup.py: which Redis)
outbox.py        5. the transactional outbox relay and its consumer
services.py      use cases that own a transaction, and the sample data

Nothing here imports streamlit, and nothing connects at import time.
"""

from .cache import CachedUserRepository, CacheStats, Lookup, RedisCache
from .config import database_url, mask_url, redis_prefix, redis_url
from .database import Database, PoolStatus, StatementLog
from .errors import DuplicateEmail, InvalidInput, LabError, NotFound
from .models import (
    AIRScore,
    Assessment,
    Base,
    DomainEvent,
    InboxEntry,
    Profile,
    ScoreSummary,
    Skill,
    TimestampMixin,
    User,
)
from .outbox import Faults, Publisher, PublisherSnapshot, RelaySettings, event_publisher, retry_failed_events
from .redis_setup import FAKE_SERVER, RedisTarget, make_redis_client, resolve_redis
from .repositories import DomainEventRepository, UserRepository
from .services import (
    AIRScoreCalculated,
    calculate_and_store_airscore,
    create_sample_airscore,
    find_sample_users,
    reset_lab_data,
    run_db_setup_and_create_user,
)

__all__ = [
    "AIRScore", "AIRScoreCalculated", "Assessment", "Base", "Database", "DomainEvent",
    "DomainEventRepository", "DuplicateEmail", "FAKE_SERVER", "InvalidInput", "LabError",
    "NotFound", "PoolStatus", "Profile", "RedisTarget", "Skill", "StatementLog", "TimestampMixin", "User",
    "UserRepository", "calculate_and_store_airscore", "create_sample_airscore",
    "database_url", "find_sample_users", "make_redis_client", "mask_url", "redis_prefix", "redis_url", "reset_lab_data", "resolve_redis",
    "run_db_setup_and_create_user",
    "CacheStats", "CachedUserRepository", "Lookup", "RedisCache",
    "Faults", "InboxEntry", "Publisher", "PublisherSnapshot", "RelaySettings", "ScoreSummary",
    "event_publisher", "retry_failed_events",
]
