"""What runs the app but is neither a lesson nor an experiment; the layer below the lab bench, which
imports it, as do `ui` and alembic/env.py.

embedded_postgres.py   the default database: an embedded PostgreSQL in data/ (or the SQLite fallback)
singletons.py          process-wide resources that no client message can drop (the loop, engine, publisher)
keyguard.py            the instructor key's back-off per session and per client address
learners.py            each learner's row: progress, quiz answers and what they made, by token
exercise_store.py      each learner's exercise code and results; the room's switches (exercises on or off)
turns.py               experiments that take turns across app processes (a PostgreSQL advisory lock)
scratch.py             scratch PostgreSQL databases (tests, bench.py)

Imports point one way: runtime -> source. Nothing here imports streamlit or the lab bench.
"""

# Its tables join runtime.learners.room_metadata on any import of the package, so that every user of
# that metadata (alembic/env.py, section 6's drift check) sees the whole schema.
from runtime import exercise_store as _exercise_store  # noqa: F401
