"""The lab bench: the lab's experiments and instruments, kept apart from the answer key.

recorder.py            the statements a block of code sent (listens on the engine from outside)
relationship_examples.py  1. each relationship kind loaded live from the sample data
pooling.py             2. the pooling experiment, atomicity shown, the pool's settings
pool_figures.py        2. the pool's open, checked-out, idle and overflow connections
shared_session.py      2. two tasks on one AsyncSession, against a session per task
loading.py             3. the N+1 comparison
workbench.py           3. a users query composed from allow-listed choices, run recorded
cache_traffic.py       4. skewed traffic through the cache, the demo user's score
cache_inspect.py       4. a cache key as Redis holds it: raw JSON, TTL or a write's tombstone
unreachable_redis.py   4. Redis addresses that refuse or hang
cache_failures.py      4. the minimal cache-aside on the learner's own key, broken three ways, then hardened
faults.py              5. broker and relay faults, wrapped around the relay's broker client
outbox_view.py         5. the pipeline's counts and rows, one event's progress
event_table.py         5b. the learner's event-table choices as model code, Core tables and Alembic's DDL
event_design.py        5b. each table choice measured on throwaway tables (retention, ordering, versions)
relay_wake.py          5b. a polling relay vs LISTEN/NOTIFY: idle queries, commit-to-stream latency
pubsub_vs_streams.py   5b. Pub/Sub and a stream with a subscriber away, a group, a second group
dual_write.py          5b. dual write, publish after commit and the outbox (its writes or its relay) against an injected crash
diagram.py             1. the schema diagram and the relationship table, from the metadata
migrations.py          6. history, offline SQL, steps and drift
lab_data.py            the sample users found, and the reset

Imports point one way: labbench -> runtime (the app's own machinery) -> source. Nothing here
imports streamlit.
"""
