"""The knowledge checks at the end of each section: content only, like the prose on the pages.
Each question is tagged with the level of learning it exercises, as the Introduction's objectives
name them (Remember, Understand, Apply, Analyze, Create): a Remember question asks for a fact the
page shows, an Apply question has the learner work something out from the code, and so on."""

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
        "Remember",
        "`User.skills` and `Skill.users` link users and skills. Which kind of relationship is it, "
        "and what does it need in the schema?",
        ("One-to-many: a foreign key `skills.user_id`",
         "Many-to-many: an association table (`user_skills`) with a foreign key to each side",
         "One-to-one: the skill's primary key is the user's ID",
         "Many-to-one: a foreign key `users.skill_id`"),
        1,
        "A user has many skills and a skill belongs to many users, so neither table can hold the "
        "other's key. Each row of `user_skills` is one (user, skill) pair; the relationship names it "
        "with `secondary=`.",
    ),
    Question(
        "Remember",
        "How does `User.profile` declare that a user has at most one profile?",
        ("`Mapped[list[Profile]]` with `uselist=True`", "`Mapped[Profile | None]`: a scalar, so "
         "SQLAlchemy sets `uselist=False`", "A `UNIQUE` constraint on `users.id`",
         "`lazy=\"joined\"`"),
        1,
        "The annotation makes the attribute a single object or None instead of a list; in the "
        "schema, `user_profiles.user_id` is both the primary key and the foreign key, so a second "
        "profile for the same user cannot be stored.",
    ),
)

POOLING = (
    Question(
        "Understand",
        "With `pool_size=5, max_overflow=10`, how many connections can be checked out at once?",
        ("5", "10", "15", "Unlimited"),
        2,
        "The pool keeps up to `pool_size` idle connections and may open `max_overflow` more under "
        "load: 5 + 10 = 15. A sixteenth checkout waits for one of them to come back; only if none "
        "does within `pool_timeout` seconds (30 by default) does it raise `TimeoutError`.",
    ),
    Question(
        "Understand",
        "In the experiment, why does `NullPool` lose throughput against a pool on PostgreSQL?",
        ("NullPool runs queries serially", "Each request pays for a new connection (socket connect, auth, "
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
        "Apply",
        "You write a repository method that returns 20 users with their scores. Which loader option "
        "makes it send exactly two SELECT statements?",
        ("`joinedload`", "`selectinload`", "Lazy loading", "`raiseload`"),
        1,
        "`selectinload` sends the parent query, then one `SELECT ... WHERE user_id IN (...)` for "
        "the children (in batches of 500 parents, so past 500 users it adds a statement per batch). "
        "`joinedload` uses one statement with a JOIN; `raiseload` loads nothing and raises on access. "
        "Around the SELECTs the connection also carries the session's BEGIN and ROLLBACK (and the "
        "pool's pre-ping at checkout): transaction control, not data statements.",
    ),
    Question(
        "Apply",
        "In the query workbench on this page, with its starting loaders (profile lazy, skills select-in, scores "
        "joined, assessments not loaded), no filter and the limit set to 5, the query returns 5 users (set up "
        "your cohort first). The lazy profile is awaited for each user (`awaitable_attrs`). Predict it before "
        "you run it: how many data statements does the workbench report?",
        ("1", "3", "7", "11"),
        2,
        "One SELECT for the users, with their scores joined in; one per user for the lazy profile (5); "
        "one `SELECT ... WHERE user_skills.user_id IN (...)` for all the users' skills: 1 + 5 + 1 = 7. "
        "A joined relationship adds a JOIN, not a statement.",
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
        "Which Redis structure stores each cached user here?",
        ("A list", "A string holding JSON, with a TTL", "A sorted set", "A stream"),
        1,
        "Cache-aside stores each value under its own key as a JSON string with an expiry; the "
        "page shows the key, its remaining TTL and the raw JSON.",
    ),
    Question(
        "Analyze",
        "T_cache = 0.2 ms and T_database = 1 ms. Compare two access patterns: one whose reads hit the "
        "cache 90% of the time, one whose reads hit it 50% of the time. What is T_avg for each?",
        ("0.30 ms and 0.70 ms", "0.20 ms and 0.60 ms", "0.92 ms and 0.60 ms", "0.30 ms and 0.50 ms"),
        0,
        "T_avg = H·T_cache + (1−H)·(T_cache + T_database): 0.9·0.2 + 0.1·1.2 = 0.30 ms, and "
        "0.5·0.2 + 0.5·1.2 = 0.70 ms. A miss costs the cache lookup and the database read.",
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
        "failed after too many attempts the broker refused (a failed connection or a timeout never "
        "parks it); these columns hold that state.",
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
        "Understand",
        "What does a drift check (`alembic check`) compare, and what does an empty diff tell you?",
        ("Two migration files; they are identical",
         "The models' metadata against the live database's schema; they agree in what autogenerate "
         "compares (tables, columns with their types and nullability, indexes, unique and foreign-key "
         "constraints), which leaves out triggers, functions and server defaults",
         "The database against a backup; nothing was lost",
         "The migrations against the models; every migration has run"),
        1,
        "Autogenerate reflects the live database and compares it with `Base.metadata`. An empty diff "
        "says that database and the models agree; it says nothing about another database, and it "
        "cannot see what autogenerate skips, such as the NOTIFY trigger that revision 0002 adds on "
        "PostgreSQL.",
    ),
)
