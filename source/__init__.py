"""The answer key: how Alex implements each pattern, in the order of the lab's sections. Each
section's minimal version comes first; the modules after it are what each failure adds to it.

models_minimal.py  1. two typed models linked both ways
models.py          1. the data models
database_minimal.py 2. one engine, a session per task
database.py        2. the engine and its pool, the session factory, the schema to head
repositories.py    3. the repository pattern (the minimal one first, then the N+1 strategies)
cache_aside.py     4. cache-aside at its smallest
cache.py           4. cache-aside hardened (redis_setup.py: which Redis; redis_pool.py: its pool)
cached_repository.py 4. the user repository with a cache in front, and what a write makes stale
cache_strategies.py 4. five strategies behind one interface: what a write does to the cache
single_flight.py   4. one database load for concurrent misses of a key
cache_stats.py     4. what each cached read reports, and the counters
outbox_minimal.py  5. a relay and a consumer before any hardening
event_repository.py 5. the outbox's writes: each user's events numbered in commit order
outbox.py          5. the transactional outbox relay
outbox_claims.py   5. how relays claim: which users first, each user's events in order
partitions.py      5. several relays in order: the users' partitions, leased one relay each
inbox.py           5. each entry checked, then applied once with its inbox row
consumer.py        5. the consumer group: read, apply, acknowledge, dead letters
reconcile.py       5. entries a broker lost, found by their IDs and sent again
failed_events.py   5. parked events: tried again or given up on
publisher.py       5. the relay and the consumer on a thread of their own
outbox_stats.py    5. the figures the relay and the consumer keep
retention.py       5. pruning published rows and trimming the stream below what the group acknowledged
migration_patterns.py 6. a required column added in one step, then expand, backfill, contract
services.py        use cases that own a transaction, and the sample data
errors.py, config.py   domain errors and input checks; where the data lives

Nothing here imports streamlit or the lab bench (labbench/, the experiments and instruments),
and nothing connects at import time.
"""

from .cache import RedisCache
from .cache_stats import CacheStats, Lookup
from .cached_repository import CachedUserRepository
from .config import database_url, mask_url, redis_prefix, redis_url
from .consumer import ConsumerSettings, event_consumer
from .database import Database
from .errors import DuplicateEmail, InvalidInput, LabError, NotFound
from .event_repository import DomainEventRepository
from .failed_events import retry_failed_events
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
from .outbox import RelaySettings, event_publisher
from .outbox_stats import PublisherSnapshot
from .publisher import Publisher
from .redis_setup import FAKE_SERVER, RedisTarget, make_redis_client, resolve_redis
from .repositories import UserRepository
from .services import (
    AIRScoreCalculated,
    calculate_and_store_airscore,
    create_sample_airscore,
    run_db_setup_and_create_user,
)

__all__ = [
    "AIRScore", "AIRScoreCalculated", "Assessment", "Base", "CacheStats", "CachedUserRepository",
    "ConsumerSettings", "Database", "DomainEvent", "DomainEventRepository", "DuplicateEmail", "FAKE_SERVER",
    "InboxEntry", "InvalidInput", "LabError", "Lookup", "NotFound", "Profile", "Publisher", "PublisherSnapshot",
    "RedisCache", "RedisTarget", "RelaySettings", "ScoreSummary", "Skill", "TimestampMixin", "User", "UserRepository",
    "calculate_and_store_airscore", "create_sample_airscore", "database_url", "event_consumer",
    "event_publisher", "make_redis_client", "mask_url", "redis_prefix", "redis_url", "resolve_redis",
    "retry_failed_events", "run_db_setup_and_create_user",
]
