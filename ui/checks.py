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
        "In the experiment on PostgreSQL, what does `NullPool` pay for on every request that a pool does not?",
        ("NullPool runs queries serially", "Each request pays for a new connection (socket connect, auth, "
         "backend process start) instead of reusing one", "NullPool disables async I/O",
         "PostgreSQL rejects NullPool connections"),
        1,
        "NullPool opens and closes a real connection per checkout; a pool amortises that set-up "
        "over many requests (see the connections each side opened). Whether it costs throughput "
        "depends on the server: on a fast local one, 50 clients with a connection each can finish "
        "before 50 clients sharing a pool of 15.",
    ),
    Question(
        "Apply",
        "A database failover closes every connection your app's pool keeps idle. Which engine setting makes "
        "the next request get a working connection instead of an error?",
        ("A larger `pool_size`", "`pool_pre_ping=True`", "A shorter `pool_timeout`", "A larger `max_overflow`"),
        1,
        "The pre-ping tests a connection as the pool hands it out and replaces it if the server closed it. "
        "In section 2's run, the minimal engine's first request after the server ended its connections "
        "failed, and the hardened engine's did not. It costs a round trip per checkout (three on asyncpg "
        "outside a transaction).",
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
        "Apply",
        "Your team page lists 1000 users with `selectinload(User.scores)`. How many SELECT statements "
        "does it send?",
        ("1", "2", "3", "1001"),
        2,
        "One for the users, then the scores by `IN` lists of at most 500 user IDs (SQLAlchemy 2.1's "
        "default chunk): 1000 IDs make two more, 3 in all. Set up 1000 users and compare the strategies "
        "to see it counted.",
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
        "100 readers ask the minimal cache-aside for one user whose key is cold, at the same moment. Why "
        "does the database see a load per reader, and what makes the hardened cache load once?",
        ("Redis serialises the GETs; a longer TTL",
         "Every reader's GET goes out before the first reader stores the row, so each misses and loads; "
         "single flight lets concurrent misses of one key in a process share one GET and one load",
         "The connection pool is too small; a bigger pool",
         "JSON decoding is slow; caching the decoded value"),
        1,
        "A miss costs a database round trip before its SET, and the other 99 GETs have been sent by "
        "then. The hardened cache shares the GET and the load in one process; other processes still load "
        "once each.",
    ),
    Question(
        "Analyze",
        "In the stale-set race, the hardened write replaces the key with a tombstone instead of deleting "
        "it. Why does that stop a reader that loaded the old row before the write from storing it?",
        ("A tombstone blocks every SET for 30 s",
         "The reader's store is a compare-and-set: it stores only if the key still holds what its own GET "
         "saw (nothing), and the key now holds the tombstone",
         "The tombstone deletes the reader's connection", "Redis orders the commands by their timestamps"),
        1,
        "Deleting leaves the key empty, which is exactly what the reader's GET saw, so a check could not "
        "tell the difference. The tombstone makes the write visible to the store's check, in any process.",
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
        "failed when the broker refuses it after too many failed attempts (a failed connection or a "
        "timeout counts as an attempt but never parks it); these columns hold that state.",
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
    Question(
        "Analyze",
        "Two relays on PostgreSQL claim with `FOR UPDATE SKIP LOCKED` only. What can happen to one user's events?",
        ("One event is appended twice in a fault-free run",
         "A later event reaches the stream before an earlier one: the second relay skips the rows the first "
         "holds and takes the user's next rows",
         "Nothing: SKIP LOCKED keeps each user's order", "The second relay waits for the first to commit"),
        1,
        "SKIP LOCKED keeps two relays from claiming the same row, not one user's rows apart. The lab's relays "
        "each lease a share of the users' partitions and claim only those users, so one relay at a time "
        "publishes a user, and a partition changes hands only between batches.",
    ),
    Question(
        "Create",
        "Two app servers write scores for the same user; one server's clock runs 200 ms behind. What should "
        "decide the order of that user's events?",
        ("`created_at`, from the writing server's clock",
         "A number per user from a counter row that the writer's transaction increments and keeps locked "
         "until it commits", "The order in which the relay happens to read the rows", "The stream entry IDs"),
        1,
        "The counter row makes a second writer of the same user wait for the first to commit, so the numbers "
        "follow commit order; a clock that runs behind stamps a later commit with an earlier time.",
    ),
    Question(
        "Analyze",
        "Redis restarts from an RDB snapshot taken before its last appends. The consumer group looks fine: "
        "nothing pending, no lag. What happens to the events whose entries were lost?",
        ("Redis sends them again", "They stay published and are never applied, unless something compares "
         "the events' recorded entry IDs with the stream and sends the missing ones again",
         "The consumer group replays them", "The relay notices because XADD fails"),
        1,
        "The relay records each event's entry ID with its mark; the lab's publisher looks the unapplied ones "
        "up in the stream every few seconds and puts those gone back to pending.",
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
         "constraints), which leaves out primary keys, CHECK constraints, triggers, functions and server defaults",
         "The database against a backup; nothing was lost",
         "The migrations against the models; every migration has run"),
        1,
        "Autogenerate reflects the live database and compares it with `target_metadata` (here `Base.metadata` "
        "and the room's learner tables). An empty diff "
        "says that database and the models agree; it says nothing about another database, and it "
        "cannot see what autogenerate skips, such as the NOTIFY trigger that revision 0002 adds on "
        "PostgreSQL.",
    ),
    Question(
        "Apply",
        "A revision must add a required column `plan` to `users`, which already holds rows. Which "
        "`upgrade()` works on PostgreSQL and on SQLite?",
        ("`op.add_column(\"users\", sa.Column(\"plan\", sa.String(20), nullable=False))`",
         "Add it nullable, fill every row with an UPDATE, then make it NOT NULL (batch mode for SQLite)",
         "Add it NOT NULL: the database fills the rows already there with NULL",
         "Drop the users table and create it again with the column"),
        1,
        "A NOT NULL column without a default cannot be added to a table that has rows: PostgreSQL refuses (the "
        "column \"contains null values\"), and so does SQLite (\"Cannot add a NOT NULL column with default "
        "value NULL\"). "
        "Expand, backfill, contract keeps every step valid for the rows there; on SQLite the last step "
        "rebuilds the table (Alembic's batch mode). Section 6 ran both on a table of its own.",
    ),
)

# Section 5b: given a requirement, pick the design. `why` ends with the learner's own measured figures
# from "In your run" on ({name} fields, filled in by views/event_design_views.with_figures).
EVENT_DESIGN = (
    Question(
        "Create",
        "Requirement: the billing service must apply each user's events in the order they were "
        "committed, with several app servers writing. What do you put in the event table?",
        ("`created_at` from the app server's clock", "A per-user sequence number assigned in the "
         "writing transaction (under a lock on the user's counter row)", "A random UUID primary key",
         "Nothing: Redis keeps the order"),
        1,
        "Commit order is decided by the database, not by any writer's clock. In your run, with writer B's "
        "clock {skew_ms} ms behind, ordering {events} events by `created_at` put {created_at_inversions} "
        "pairs out of commit order; ordering by the sequence number put {sequence_inversions}.",
    ),
    Question(
        "Create",
        "Requirement: after a bug fix, billing must be able to replay the last 7 days of events from the "
        "database. How does the relay finish an event?",
        ("It deletes the row once published", "It marks the row published (status, published_at) and a "
         "purge job deletes rows older than 7 days", "It leaves the row pending",
         "It moves the payload into Redis Pub/Sub"),
        1,
        "Replay needs the rows. In your run the status design still listed {kept_history} of "
        "{retention_events} published events and recorded {attempts_recorded} of the {failed_attempts} "
        "failed attempts; delete-on-publish listed {deleted_history}.",
    ),
    Question(
        "Create",
        "Requirement: a consumer that is redeployed (down for a minute) must still get every event sent "
        "meanwhile. How do you deliver?",
        ("Redis Pub/Sub: PUBLISH to a channel", "A Redis stream read by a consumer group (XREADGROUP, XACK)",
         "Pub/Sub, publishing each message twice", "A Redis key per event with a 60 s TTL"),
        1,
        "Pub/Sub is at most once: it delivers to whoever is subscribed at that moment and keeps nothing. "
        "In your run {sent_while_away} events were sent while the subscriber was away: Pub/Sub lost "
        "{pubsub_lost}, the stream lost {stream_lost}.",
    ),
    Question(
        "Create",
        "Requirement: no score may be announced unless it was committed, and no committed score may go "
        "unannounced, even if the process dies mid-way. Which write path?",
        ("Publish inside the transaction, then commit (dual write)", "Commit, then publish",
         "An outbox row in the same transaction, published by a relay", "Commit, then publish with 3 retries"),
        2,
        "Two writes to two systems cannot commit together; one transaction can. In your run, with {crashes} "
        "crashes injected between the two writes: dual write announced {dual_phantom} phantom scores, publish-after-commit lost "
        "{after_lost} events, the outbox lost {outbox_lost} and invented {outbox_phantom}. (Retries do not "
        "help a process that died before it retried.) When the outbox's relay died after appending and before "
        "its mark, it lost {relay_lost} and appended {relay_duplicates} entries again: at least once, which "
        "the consumer's inbox makes harmless.",
    ),
    Question(
        "Create",
        "Requirement: producers are upgraded one at a time, so for a day old and new payload shapes "
        "coexist, and support must trace one request's events. What goes into each event row?",
        ("Nothing: consumers guess from the payload's keys", "A schema version, plus correlation and "
         "causation ids", "The producer's host name", "A new table per payload shape"),
        1,
        "A version tells the consumer which upcaster applies; without it an old payload looks like a broken "
        "one. In your run the versioned consumer upcast {upcast} old events and rejected {versioned_rejected}; "
        "without a version it rejected {bare_rejected}. The correlation id found the request's {chain_length} events "
        "and the causation ids their order; without them, {bare_chain_length}.",
    ),
    Question(
        "Create",
        "Requirement (PostgreSQL): events should reach the stream within tens of milliseconds, and an idle "
        "relay should send almost no queries. How does the relay wake?",
        ("Poll every 10 ms", "LISTEN/NOTIFY, with a slow fallback poll in case a notification is missed",
         "Poll every 10 s", "A trigger that writes to Redis"),
        1,
        "Polling trades idle load for latency; a notification wakes the relay at commit. In your run polling "
        "sent {poll_qps} queries per idle second with a median of {poll_median} ms; LISTEN/NOTIFY sent "
        "{notify_qps} with a median of {notify_median} ms.",
    ),
)
