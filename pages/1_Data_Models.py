import pandas as pd
import streamlit as st
from sqlalchemy import select

import ui
from labbench import diagram
from source import Assessment, Base, TimestampMixin, User, models_minimal
from ui import checks, widgets
from ui.views import models_views as views

ui.page("1. Data Models")
st.title("1. Defining the core data schema with SQLAlchemy 2.x")
st.markdown(
    "Alex starts with the data his dashboard shows: users, their AI-R scores, profiles and skills. Each "
    "score must belong to exactly one user, and removing a user must not leave his scores behind."
)
ready = ui.ensure_initialized()

st.subheader("The problem: data that points at other data")
st.markdown(
    "The tables, drawn from the models as they are loaded now. Each line is a foreign key, and each "
    "relationship loads the rows at its other end with one SELECT of its own:"
)
drawn, loaded = st.columns([3, 2])
drawn.graphviz_chart(diagram.schema_diagram(Base, linked_only=True))
with loaded:
    views.loaded_live(ready)
    unlinked = sorted({t.name for t in Base.metadata.sorted_tables} - {t.name for t in diagram.linked_tables(Base)})
    st.caption(f"Not drawn, as no foreign key links them: {', '.join(f'`{name}`' for name in unlinked)} "
               "(section 5's; all tables are in Going further).")

st.subheader("The minimal pattern: typed models, linked both ways")
st.markdown(
    "`Mapped[...]` says what an attribute holds and whether it may be empty; `ForeignKey` links the "
    "tables; `relationship(back_populates=...)` links the objects both ways (`source/models_minimal.py`):"
)
st.code(widgets.class_source(models_minimal.User)[1] + "\n\n" + widgets.class_source(models_minimal.AIRScore)[1],
        language="python")

st.subheader("Predict, then run: delete a user who has scores")
st.markdown(
    "A user with two scores, on the minimal models, in tables of this run's own. What does "
    "`await session.delete(user)` followed by a flush do?"
)
views.predict_delete(ready)

st.subheader("The hardening: a cascade")
st.markdown(
    "`cascade=\"all, delete-orphan\"` makes the session delete a user's scores with the user (and a score "
    "removed from `user.scores`) instead of orphaning them. The lab's `User` declares it (`source/models.py`):"
)
views.hardening_diff()
st.markdown(
    "On the lab's models, three throwaway users, each with a profile and two skills, two of them with an "
    "assessment, deleted with `session.delete` and with a Core `DELETE FROM users`:"
)
views.delete_three_ways(ready)

st.subheader("Try it: create a user")
if ready:
    st.markdown("Every field is checked before anything reaches the database; each bad value gets a message "
                "by its field and nothing is written.")
    views.create_user_form()

st.subheader("Going further")
with st.expander("From relational algebra to a relationship"):
    st.markdown(
        "The assessments of one user $u$ are the join of `users` and `assessments` on the foreign key, "
        "restricted to that user, projected onto the assessments' columns:"
    )
    st.latex(
        r"\pi_{\text{assessments.*}}\left(\sigma_{\text{users.id} = u}\left(\text{users} "
        r"\bowtie_{\text{users.id} = \text{assessments.user\_id}} \text{assessments}\right)\right)"
    )
    st.markdown(
        "where $\\sigma$ is selection, $\\bowtie$ the join on the foreign key and $\\pi$ projection. "
        "SQLAlchemy derives the join condition from the `ForeignKey`; this is the SQL of "
        "`select(Assessment).join(Assessment.user).where(User.id == u)`:"
    )
    st.code(str(select(Assessment).join(Assessment.user).where(User.id == "u")), language="sql")
    st.markdown(
        "On a loaded user the same rows are `await user.awaitable_attrs.assessments`, or "
        "`selectinload(User.assessments)` in the query that loads the user. A plain `user.assessments` whose "
        "rows are not loaded yet raises an error (`MissingGreenlet`, which SQLite's driver hands on wrapped in "
        "a `StatementError`): an async session cannot wait for the database inside an attribute access."
    )
with st.expander("Every model, from the running code, and the four kinds of relationship"):
    st.graphviz_chart(diagram.schema_diagram(Base))
    sources = {m.class_: widgets.class_source(m.class_) for m in Base.registry.mappers}  # (line, source)
    models = sorted(sources, key=lambda cls: sources[cls][0])
    tabs = st.tabs([c.__name__ for c in models] + ["Base & TimestampMixin"])
    for tab, cls in zip(tabs, models, strict=False):
        tab.code(sources[cls][1], language="python")
    tabs[-1].code(widgets.class_source(Base)[1] + "\n\n" + widgets.class_source(TimestampMixin)[1], language="python")
    st.dataframe(pd.DataFrame(diagram.relationships(Base)), hide_index=True, width="stretch")
    st.markdown(
        "All four kinds meet at `users`. One user has many assessments and many scores (one-to-many, and "
        "many-to-one from the other side), at most one profile (one-to-one: `user_profiles.user_id` is both its "
        "primary key and its foreign key, and `Mapped[Profile | None]` makes `User.profile` a single object), and "
        "many skills that other users share (many-to-many: each row of the association table `user_skills` is one "
        "user-skill pair). `DomainEvent` has no foreign key on purpose: an event names its aggregate "
        "(`aggregate_type`, `aggregate_id`) so that it can describe anything."
    )
with st.expander("Two ways to cascade: the session's, and the database's ON DELETE CASCADE"):
    st.markdown(
        "- **ORM cascade** on `User.scores` and `User.assessments`: `session.delete(user)` loads both collections "
        "and sends a DELETE for their rows before the user's. Only the session does this: their foreign keys have "
        "no `ON DELETE`, so a Core `DELETE FROM users` for a user who has scores fails with an integrity error.\n"
        "- **`ON DELETE CASCADE` with `passive_deletes=True`** on `User.profile`: the database deletes the "
        "profile with the user, whichever way the user is deleted, and the session does not load the profile "
        "just to delete it (one it has already loaded, it deletes itself).\n\n"
        "For `User.skills`, `session.delete(user)` loads the user's skills and deletes their `user_skills` rows; "
        "the skills stay. Those foreign keys say `ON DELETE CASCADE` too, so a Core DELETE cannot leave pairs "
        "behind."
    )
    st.code(widgets.attribute_source(User, "profile"), language="python")

ui.knowledge_check("models", checks.MODELS)
