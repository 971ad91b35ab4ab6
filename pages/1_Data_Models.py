import pandas as pd
import streamlit as st
from sqlalchemy import select

import ui
from labbench import diagram
from labbench.cascade_demo import cascade_demo
from labbench.relationship_examples import relationship_examples
from source import Assessment, Base, TimestampMixin, User
from source.services import create_user
from ui import checks, widgets
from ui.views import models_views

ui.page("1. Data Models")
st.title("1. Defining the core data schema with SQLAlchemy 2.x")
st.markdown(
    "Alex starts with the data itself: users and their profiles and skills, the assessments they "
    "take, the AI-R scores those produce, and a table of domain events for telling other services "
    "what happened. The models use SQLAlchemy 2.x's typed declarative mapping: `Mapped[...]` "
    "annotations say what each attribute holds and whether it may be empty, so the type "
    "checker and the database schema agree."
)

st.subheader("From relational algebra to relationships")
st.markdown(
    "A relationship between two tables is a join waiting to happen. The assessments of one user "
    "$u$ are the join of `users` and `assessments` on the foreign key, restricted to that user, "
    "projected onto the assessments' columns:"
)
st.latex(
    r"\pi_{\text{assessments.*}}\left(\sigma_{\text{users.id} = u}\left(\text{users} "
    r"\bowtie_{\text{users.id} = \text{assessments.user\_id}} \text{assessments}\right)\right)"
)
st.markdown(
    "where $\\sigma$ is selection (the rows that meet a condition), $\\bowtie$ is the join on the "
    "foreign key and $\\pi$ is projection. SQLAlchemy derives the join condition from the "
    "`ForeignKey`. This is the SQL it builds for "
    "`select(Assessment).join(Assessment.user).where(User.id == u)`:"
)
st.code(str(select(Assessment).join(Assessment.user).where(User.id == "u")), language="sql")
st.markdown(
    "On a loaded user the same rows are `await user.awaitable_attrs.assessments`, or "
    "`selectinload(User.assessments)` in the query that loads the user. A plain "
    "`user.assessments` whose rows are not loaded yet raises an error in this lab "
    "(`MissingGreenlet`, which SQLite's driver hands on wrapped in a `StatementError`): an async "
    "session cannot wait for the database inside an attribute access."
)

st.subheader("The models, from the running code")
st.caption("Read with `inspect` from `source/models.py` as it is loaded now.")
sources = {m.class_: widgets.class_source(m.class_) for m in Base.registry.mappers}  # (line, source)
models = sorted(sources, key=lambda cls: sources[cls][0])
tabs = st.tabs([c.__name__ for c in models] + ["Base & TimestampMixin"])
for tab, cls in zip(tabs, models, strict=False):
    tab.code(sources[cls][1], language="python")
tabs[-1].code(widgets.class_source(Base)[1] + "\n\n" + widgets.class_source(TimestampMixin)[1], language="python")

st.subheader("Tables and relationships")
st.caption("Drawn from `Base.metadata` and the mappers: add a column to a model and it appears here.")
st.graphviz_chart(diagram.schema_diagram(Base))
st.dataframe(pd.DataFrame(diagram.relationships(Base)), hide_index=True, width="stretch")
st.markdown(
    "All four kinds meet at `users`. One user has many assessments and many scores (one-to-many, "
    "and many-to-one from the other side), at most one profile (one-to-one: "
    "`user_profiles.user_id` is both its primary key and its foreign key, and "
    "`Mapped[Profile | None]` makes `User.profile` a single object), and many skills that other "
    "users share (many-to-many: each row of the association table `user_skills` is one user-skill "
    "pair). `DomainEvent` has no foreign key on purpose: an event names its aggregate "
    "(`aggregate_type`, `aggregate_id`) so that it can describe anything."
)
st.markdown(
    "Deleting a user shows two ways to cascade:\n"
    "- **ORM cascade** on `User.scores` and `User.assessments` (`cascade=\"all, delete-orphan\"`): "
    "`session.delete(user)` loads both collections and sends a DELETE for their rows before the "
    "user's, and a score removed from `user.scores` is deleted rather than left without a user. "
    "Only the session does this: their foreign keys have no `ON DELETE`, so a Core "
    "`DELETE FROM users` for a user who has scores fails with an integrity error.\n"
    "- **`ON DELETE CASCADE` with `passive_deletes=True`** on `User.profile`: the database deletes "
    "the profile with the user, whichever way the user is deleted, and the session does not load "
    "the profile just to delete it (one it has already loaded, it deletes itself).\n\n"
    "For `User.skills`, `session.delete(user)` loads the user's skills and deletes their "
    "`user_skills` rows; the skills stay. Those foreign keys say `ON DELETE CASCADE` too, so a "
    "Core DELETE cannot leave pairs behind.\n\n"
    "The button makes three throwaway users, each with a profile and two skills, two of them with an "
    "assessment, and deletes them: one with `session.delete`, two with a Core `DELETE FROM users`."
)
if st.session_state.db_initialized and st.button("Delete throwaway users three ways", key="cascade_demo"):
    with ui.errors_shown():
        st.session_state.cascade_runs = ui.run(cascade_demo(ui.database()))
if runs := st.session_state.get("cascade_runs"):
    models_views.delete_runs(runs)

st.markdown("**Each kind, loaded live.** Alex's scores, profile and skills, and the user of Alex's "
            "or Jane's newest score, each awaited on its own with its default (lazy) loader: the one "
            "SELECT it sent, and what that loaded.")
if not st.session_state.db_initialized:
    st.info("Initialise the database in **2. DB Connectivity & Pooling** to see these loaded from the sample data.")
else:
    with ui.errors_shown():
        for example in ui.run(relationship_examples(ui.database())):
            st.markdown(f"`{example.attribute}` ({example.kind}): {widgets.escape_markdown(example.loaded)}")
            if example.sql:
                st.code(example.sql, language="sql")

st.subheader("Try it: create a user")
if not st.session_state.db_initialized:
    st.info("Initialise the database in **2. DB Connectivity & Pooling** first; then come back.")
else:
    st.markdown(
        "The repository validates what you type before anything reaches the database; a bad "
        "value gets a message next to its field and nothing is written."
    )
    db = ui.database()
    with st.form("create_user_form"):
        email = st.text_input("Email", key="new_user_email", placeholder="ada@example.com")
        email_slot = st.empty()
        name = st.text_input("Name", key="new_user_name", placeholder="Ada Lovelace")
        name_slot = st.empty()
        occupation = st.text_input("Occupation code (optional)", key="new_user_occupation", placeholder="15-1252")
        occupation_slot = st.empty()
        education = st.selectbox(
            "Education level (optional)", ["High school", "Bachelors", "Masters", "PhD"],
            index=None, placeholder="Not given", key="new_user_education",
        )
        years = st.number_input(
            "Years of experience (optional)", min_value=0.0, max_value=80.0, value=None, step=0.5,
            key="new_user_years",
        )
        submitted = st.form_submit_button("Create User")
    if submitted:
        slots = {"email": email_slot, "name": name_slot, "occupation_code": occupation_slot}
        with ui.errors_shown(fields=slots):
            user, statements = ui.run_recorded(create_user(
                sessions=db.sessions, email=email, name=name, occupation_code=occupation,
                education_level=education, years_experience=years,
            ))
            st.session_state.created_user_id = user.id
            ui.mark_done("models")
            st.success(f"Created **{widgets.escape_markdown(user.name)}** with ID `{user.id}`.")
            st.dataframe(
                pd.DataFrame([{c: getattr(user, c) for c in (
                    "id", "email", "name", "occupation_code", "education_level", "years_experience", "created_at",
                )}]),
                hide_index=True,
            )
            widgets.show_statements(statements)
    if st.session_state.created_user_id:
        st.markdown(f"**Last created user ID:** `{st.session_state.created_user_id}` (kept for later sections)")

ui.knowledge_check("models", checks.MODELS)
