"""Section 1's pieces, drawn: the relationships loaded live, the minimal models' delete after the
learner's prediction, the three ways of deleting a user on the lab's models, and the create-user
form. Each result stays in session state until the learner runs it again."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from labbench.cascade_demo import MINIMAL_OUTCOMES, DeleteRun, MinimalDelete, cascade_demo, minimal_delete
from labbench.relationship_examples import relationship_examples
from source import models, models_minimal
from source.errors import clean_email, clean_text
from source.services import create_user
from ui import forms, widgets


def loaded_live(ready: bool) -> None:
    """One example of each relationship kind, each awaited on its own: the one SELECT it sent."""
    if not ready:
        return
    with ui.errors_shown():
        examples = ui.run(relationship_examples(ui.database()))
        for example in examples:
            st.markdown(f"`{example.attribute}` ({example.kind}): {widgets.escape_markdown(example.loaded)}")
        with st.expander("The SELECT each one sent"):
            for example in examples:
                if example.sql:
                    st.code(example.sql, language="sql")


def predict_delete(ready: bool) -> None:
    """Predict, then run: `session.delete(user)` on the minimal models, for a user with two scores."""
    guess = st.radio("Your prediction", range(len(MINIMAL_OUTCOMES)), format_func=MINIMAL_OUTCOMES.__getitem__,
                     index=None, key="minimal_delete_guess")
    if st.button("Run it on the minimal models", key="minimal_delete", disabled=not ready or guess is None):
        with ui.errors_shown():
            st.session_state.minimal_delete_result = (ui.run(minimal_delete(ui.database())), guess)
    if guess is None and ready:
        st.caption("Choose a prediction to run it.")
    if shown := st.session_state.get("minimal_delete_result"):
        _minimal_delete(*shown)


def _minimal_delete(run: MinimalDelete, guess: int) -> None:
    happened = MINIMAL_OUTCOMES[run.outcome]
    verdict = "You predicted it." if guess == run.outcome else f"You predicted: {MINIMAL_OUTCOMES[guess]}."
    (st.error if run.error else st.success)(f"What happened: {happened}. {verdict}")
    st.code(";\n".join(run.sql) + ";", language="sql")
    refused = f" The database refused: {widgets.escape_markdown(run.error)}." if run.error else ""
    st.caption(
        f"The statements the delete sent, in order.{refused} Afterwards: {run.users_left} user, {run.scores_left} "
        "scores. Without a cascade the session keeps the scores and sets their `user_id` to NULL (the UPDATE's "
        "parameter), which the NOT NULL column refuses. Tables and rows were the run's own, rolled back after it."
    )


def hardening_diff() -> None:
    widgets.show_diff(widgets.attribute_source(models_minimal.User, "scores"),
                      widgets.attribute_source(models.User, "scores"),
                      before="source/models_minimal.py", after="source/models.py")


def delete_three_ways(ready: bool) -> None:
    if st.button("Delete throwaway users three ways", key="cascade_demo", disabled=not ready):
        with ui.errors_shown():
            st.session_state.cascade_runs = runs = ui.run(cascade_demo(ui.database()))
            ui.remember_figure("models", "cascade", f"a user deleted with their assessment, profile and skills in "
                               f"{len(runs[0].sql)} statements, {sum(runs[0].rows_left.values())} rows left behind")
    if runs := st.session_state.get("cascade_runs"):
        delete_runs(runs)


def delete_runs(runs: list[DeleteRun]) -> None:
    for run in runs:
        left = ", ".join(f"`{table}` {n}" for table, n in run.rows_left.items())
        st.markdown(f"**{run.how}**: {run.outcome}. That user's rows afterwards: {left}.")
        st.code(";\n".join(run.sql) + ";", language="sql")
    st.caption("The data statements each way sent, in order (transaction control not shown); the rows "
               "counted after it ended. The users were made for this run, and the run removed them.")


def create_user_form() -> None:
    """Every bad field reported at once, by its widget; nothing is written until all are good."""
    form = forms.Form("create_user_form")
    with st.form(form.key):
        email = st.text_input("Email", key="new_user_email", placeholder="ada@example.com")
        form.slot("email")
        name = st.text_input("Name", key="new_user_name", placeholder="Ada Lovelace")
        form.slot("name")
        occupation = st.text_input("Occupation code (optional)", key="new_user_occupation", placeholder="15-1252")
        form.slot("occupation_code")
        education = st.selectbox(
            "Education level (optional)", ["High school", "Bachelors", "Masters", "PhD"],
            index=None, placeholder="Not given", key="new_user_education",
        )
        years = st.number_input("Years of experience (optional)", value=None, step=0.5, key="new_user_years")
        form.slot("years_experience")
        submitted = st.form_submit_button("Create User")
    if submitted:
        form.start()
        st.session_state.pop("created_user_result", None)  # this submission replaces the last one's result
        form.check("email", clean_email, email)
        form.check("name", clean_text, name, field="name", label="name", max_length=255, required=True)
        form.check("occupation_code", clean_text, occupation, field="occupation_code", label="occupation code",
                   max_length=20, required=False)
        form.within("years_experience", years, "Years of experience", 0, 80, required=False)
        if form.ok:
            with form.action():
                user, statements = ui.run_recorded(create_user(
                    sessions=ui.database().sessions, email=email, name=name, occupation_code=occupation,
                    education_level=education, years_experience=years,
                ))
                st.session_state.created_user_id = user.id
                st.session_state.created_user_result = (user, statements)
                ui.mark_done("models")
    if shown := st.session_state.get("created_user_result"):
        user, statements = shown
        st.success(f"Created **{widgets.escape_markdown(user.name)}** with ID `{user.id}`.")
        st.dataframe(pd.DataFrame([{c: getattr(user, c) for c in (
            "id", "email", "name", "occupation_code", "education_level", "years_experience", "created_at",
        )}]), hide_index=True)
        widgets.show_statements(statements)
    if st.session_state.created_user_id:
        st.markdown(f"**Last created user ID:** `{st.session_state.created_user_id}` (kept for later sections)")
