"""The knowledge checks at the end of each section: content only, like the prose on the pages.
Each question names the learning objective it serves (Remember, Understand, Apply, Analyze,
Create)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    objective: str
    prompt: str
    options: tuple[str, ...]
    answer: int  # index into options
    why: str


MODELS = (
    Question(
        "Remember",
        "Which relationship does `User.scores` declare?",
        ("Many-to-many through an association table", "One-to-many: one user, many scores",
         "One-to-one", "Many-to-one: many users share one score"),
        1,
        "`AIRScore.user_id` is a foreign key to `users.id`, so each score has one user and a user "
        "has a list of scores (`Mapped[list[AIRScore]]`). `back_populates` links the two sides.",
    ),
    Question(
        "Understand",
        "Why does the session factory use `expire_on_commit=False` in async code?",
        ("It makes commits faster", "It disables the identity map",
         "After commit, reading an expired attribute would need an implicit query, which async "
         "sessions cannot run on attribute access", "It keeps the transaction open after commit"),
        2,
        "Expired attributes reload lazily on access. In async SQLAlchemy that implicit I/O raises "
        "`MissingGreenlet`, so objects are kept readable after commit instead.",
    ),
)

POOLING = (
    Question(
        "Understand",
        "With `pool_size=5, max_overflow=10`, how many connections can be checked out at once?",
        ("5", "10", "15", "Unlimited"),
        2,
        "The pool keeps up to `pool_size` connections open and may open `max_overflow` more under "
        "load: 5 + 10 = 15. The sixteenth request waits up to `pool_timeout`, then fails.",
    ),
    Question(
        "Analyze",
        "In the experiment, why does `NullPool` lose throughput against a pool on PostgreSQL?",
        ("NullPool runs queries serially", "Each request pays for a new connection (TCP, auth, "
         "backend process start) instead of reusing one", "NullPool disables async I/O",
         "PostgreSQL rejects NullPool connections"),
        1,
        "NullPool opens and closes a real connection per checkout. A pool amortises that set-up "
        "over many requests; the measured wait and throughput show the difference.",
    ),
)

REPOSITORY = (
    Question(
        "Apply",
        "Loading 20 users and then awaiting `user.awaitable_attrs.scores` for each sends how many statements?",
        ("1", "2", "20", "21"),
        3,
        "One SELECT for the users plus one per user for their scores: N + 1 = 21. The statement "
        "log on the page counts them as they are sent.",
    ),
    Question(
        "Analyze",
        "Which strategy loads 20 users and their scores in exactly two statements?",
        ("`joinedload`", "`selectinload`", "Lazy loading", "`raiseload`"),
        1,
        "`selectinload` sends the parent query, then one `SELECT ... WHERE user_id IN (...)` for "
        "the children (in batches of 500 parents, so past 500 users it adds a statement per batch). "
        "`joinedload` uses one statement with a JOIN; `raiseload` loads nothing and raises on access.",
    ),
    Question(
        "Understand",
        "Why does the repository never call `commit()` itself?",
        ("Commits are slow", "The caller owns the transaction, so several writes (a score and its "
         "event) can commit or roll back together", "SQLAlchemy forbids it", "To avoid flushes"),
        1,
        "A unit of work spans several repositories. If each committed on its own, a failure "
        "between two writes would leave half of the work behind.",
    ),
)

CACHE = (
    Question(
        "Remember",
        "Which Redis structure lets the lab change one field of a user (years_experience) without "
        "reading and rewriting the others?",
        ("A string holding JSON", "A hash, with HSET on that field", "A sorted set", "A stream"),
        1,
        "The panel of live keys shows both: the cached user is one JSON string, replaced whole; "
        "the hash holds each field apart, and one HSET changed years_experience alone.",
    ),
    Question(
        "Apply",
        "With T_cache = 0.2 ms, T_database = 1 ms and a hit ratio of 0.9, what is T_avg?",
        ("0.2 ms", "0.3 ms", "0.92 ms", "1.2 ms"),
        1,
        "T_avg = H·T_cache + (1−H)·(T_cache + T_database) = 0.9·0.2 + 0.1·1.2 = 0.18 + 0.12 = 0.30 ms.",
    ),
    Question(
        "Analyze",
        "In your comparison with writes, TTL only has stale reads and cache-aside has none. What in "
        "the two write paths explains it?",
        ("TTL only sends fewer Redis commands per read",
         "Cache-aside invalidates the user after each commit; TTL only leaves the old row cached "
         "until its TTL ends, so reads of a written user return it until then",
         "Cache-aside reads the database on every read", "TTL only uses a shorter TTL"),
        1,
        "Both read the same way; only the write differs. Raise the TTL and TTL only's stale reads "
        "grow (the old row lives longer); cache-aside's stay at zero in one process.",
    ),
    Question(
        "Analyze",
        "Raise the writes per 100 reads (say from 10 to 50) and compare cache-aside with "
        "write-through. What do you expect in the reads that loaded, and why?",
        ("Both rise alike: every write empties the cache",
         "Cache-aside's rise more: each write leaves a tombstone, so the next read of that user "
         "misses and loads; write-through's write puts the new row in Redis, so it hits",
         "Write-through's rise more: it writes to the database twice", "Neither changes"),
        1,
        "A write costs cache-aside one later miss per written key; write-through pays at write "
        "time instead (one SET). Your table's 'reads that loaded' column shows the gap.",
    ),
    Question(
        "Analyze",
        "Write-behind shows reads newer than the database and a loss window. What does the loss "
        "window count, and when would you still choose write-behind?",
        ("Reads that failed; never",
         "Acknowledged writes the database did not have yet, which a Redis that loses its memory "
         "then would lose for good; for data where losing recent writes is acceptable (counters, "
         "view counts) and write load is high",
         "Writes the flusher applied twice; for payments", "Keys that expired; always"),
        1,
        "Write-behind trades durability for write speed and batching: the database lags the "
        "cache by up to a flush interval, and what was queued only in Redis is lost with it.",
    ),
    Question(
        "Understand",
        "Redis stops answering. What should a cache-aside read do?",
        ("Fail the request", "Retry Redis for several seconds", "Serve from the database "
         "within milliseconds and resume caching when Redis returns", "Serve the last value it saw"),
        2,
        "A cache is an optimisation: failing open keeps the service up. Short timeouts and no "
        "retries keep the fallback fast.",
    ),
)

OUTBOX = (
    Question(
        "Create",
        "Which columns does an outbox table need for a relay to retry and give up safely?",
        ("Only the payload", "Status, attempts, next attempt time and last error, beside the "
         "event's type, aggregate and payload", "A foreign key to the message broker",
         "The consumer's acknowledgement ID"),
        1,
        "The relay claims due pending rows, records failures with a back-off, and marks an event "
        "failed after too many attempts; these columns hold that state.",
    ),
    Question(
        "Understand",
        "Why write the event in the same transaction as the score?",
        ("It is faster", "So that both commit or neither does: no score without its event, and no "
         "event for a score that was rolled back", "Redis requires it", "To order events"),
        1,
        "Publishing to the broker directly after commit can be lost in a crash; writing both rows "
        "in one commit makes the event as durable as the change.",
    ),
    Question(
        "Analyze",
        "The relay crashes after appending to the stream but before marking the event published. What happens?",
        ("The event is lost", "The event is delivered again; the consumer's inbox drops the duplicate",
         "The database rolls back the score", "Redis removes the entry"),
        1,
        "Delivery is at least once. Idempotent consumers (an inbox keyed by event ID) turn that into "
        "an effect applied exactly once.",
    ),
)

MIGRATIONS = (
    Question(
        "Remember",
        "Where does Alembic record which revision a database is at?",
        ("In alembic.ini", "In the `alembic_version` table of that database",
         "In the newest migration file", "In Redis"),
        1,
        "`alembic_version` holds the current revision; upgrade and downgrade walk the chain of "
        "`down_revision` links from there.",
    ),
    Question(
        "Apply",
        "What does a drift check (`alembic check`) compare?",
        ("Two migration files", "The models' metadata against the live schema",
         "The database against a backup", "alembic.ini against env.py"),
        1,
        "Autogenerate compares `Base.metadata` with what the database reflects; an empty diff means "
        "the migrations and the models agree.",
    ),
)
