"""A learner is a row, not a tab: the token in the URL (`?learner=`) keys their progress marks,
quiz answers and the IDs they made (runtime.learners), so a refresh, a bookmark or a server
restart resumes them. ui.page calls `resume` first on every page; the places where something
changes call `save`, which writes only when the learner's state differs from what was written.
When the rows cannot be stored (the schema is below revision 0004, or the database is down),
progress stays in the browser session and the sidebar says so."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from runtime import learners
from source.errors import LabError, clean_text
from source.models import new_id
from ui import checks, widgets

log = logging.getLogger("lab2")
QUERY_KEY = "learner"
STATE_KEY = "learner_row"
TOUCH_SECONDS = 300  # an idle learner's last-seen time is written at most this often
QUESTIONS = {
    "models": checks.MODELS, "pooling": checks.POOLING, "repository": checks.REPOSITORY, "cache": checks.CACHE,
    "outbox": checks.OUTBOX, "event_design": checks.EVENT_DESIGN, "migrations": checks.MIGRATIONS,
}
# The IDs a learner made that later runs of the pages read from session state, and the key figures
# of their own runs (section -> name -> figure as shown), which the lab's last page quotes back.
MADE = ("created_user_id", "n1_cohort_tag", "n1_cohort_ids", "outbox_event_id", "key_figures")


@dataclass
class Me:
    token: str
    minted: bool  # made here, so no row can have it yet
    id: str | None = None  # None until the token is resolved against the database
    saved: learners.Saved | None = None  # what the rows hold, as last read or written
    written_at: float = 0.0
    note: str | None = None  # why nothing is stored, when it is not


def current() -> Me | None:
    return st.session_state.get(STATE_KEY)


def resume(db, run: Callable, *, storable: bool, why_not: str) -> None:
    """This session's learner: resumed from the URL's token, or a fresh one with a new token."""
    me = current()
    if me is None:
        token = st.query_params.get(QUERY_KEY)
        well_formed = learners.token_hash(token) is not None
        me = st.session_state[STATE_KEY] = Me(token=token if well_formed else learners.new_token(), minted=not well_formed)
    if not storable:
        me.note = why_not
    elif me.id is None:
        _resolve(db, run, me)
    elif me.note:  # storing works again: write everything (a downgrade may have dropped the rows)
        me.note = None
        save(db, run, force=True)
    elif time.monotonic() - me.written_at > TOUCH_SECONDS:
        _write(run, learners.touch(db, me.id), me)
    if st.query_params.get(QUERY_KEY) != me.token:  # also after a page link that dropped it
        st.query_params[QUERY_KEY] = me.token


def _resolve(db, run: Callable, me: Me) -> None:
    found = None
    if not me.minted:
        try:
            found = run(learners.load(db, me.token))
        except Exception:
            log.warning("could not load a learner's progress", exc_info=True)
            me.note = "The database did not answer, so your progress is kept in this browser tab only for now."
            return
        if found is None:  # unknown or forged: a fresh learner under a new token, never anyone's rows
            me.token, me.minted = learners.new_token(), True
    if found is not None:
        me.id, me.saved = found
        _restore(me.saved)
    else:
        me.id = new_id()
    me.note = None
    save(db, run, force=found is None)


def _restore(saved: learners.Saved) -> None:
    """The stored state into session state; what this tab did meanwhile (while nothing could be
    stored) is kept beside it and saved next."""
    state = st.session_state
    for section in saved.done:
        state[f"done_{section}"] = True
    for section in saved.passed:
        state[f"passed_{section}"] = True
    for section, answers in saved.answers.items():
        state.setdefault(f"answers_{section}", {}).update({q: choice for q, (choice, _) in answers.items()})
    for name, value in saved.made.items():
        if name in MADE and state.get(name) is None:
            state[name] = value
    if saved.display_name and not state.get("display_name"):
        state.display_name = saved.display_name


def snapshot() -> learners.Saved:
    state = st.session_state
    answers = {}
    for section, questions in QUESTIONS.items():
        chosen = state.get(f"answers_{section}") or {}
        if chosen:
            answers[section] = {q: (c, c == questions[q].answer) for q, c in chosen.items() if q < len(questions)}
    return learners.Saved(
        display_name=state.get("display_name") or None,
        done={s for s in QUESTIONS if state.get(f"done_{s}")},
        passed={s for s in QUESTIONS if state.get(f"passed_{s}")},
        answers=answers,
        made={name: state[name] for name in MADE if state.get(name) is not None},
    )


def save(db, run: Callable, *, force: bool = False) -> None:
    """Write what changed since the last write (nothing when nothing did)."""
    me = current()
    if me is None or me.id is None or me.note:
        return
    now = snapshot()
    if now == me.saved and not force:
        return
    _write(run, learners.save(db, me.id, me.token, now, None if force else me.saved), me)
    if not me.note:
        me.saved = now


def _write(run: Callable, coro, me: Me) -> None:
    try:
        run(coro)
        me.written_at = time.monotonic()
    except Exception:
        log.warning("could not save a learner's progress", exc_info=True)
        # Kept in this tab; the next run that can store writes everything again.
        me.note = "Your last change could not be saved (the database did not answer); it is kept in this tab."


def start_over(db, run: Callable) -> None:
    """Delete this learner's rows, forget their progress in this session, and give a new token."""
    me = current()
    if me is not None and me.id is not None and not me.note:
        run(learners.forget(db, me.id))
    state = st.session_state
    for key in list(state.keys()):
        if key.startswith(("done_", "passed_", "answers_", "check_")) or key in MADE or key == "display_name":
            del state[key]
    state[STATE_KEY] = Me(token=learners.new_token(), minted=True)


def sidebar(db, run: Callable) -> None:
    """Who the learner is, their display name, 'start over', and whether progress is stored."""
    me = current()
    widgets.progress()
    if me is None:
        return
    if me.note:
        st.caption(f"⚠ {widgets.escape_markdown(me.note)}")
    else:
        st.caption("Saved on this server under the link in your address bar: bookmark it to come back. "
                   "Anyone with that link sees your progress.")
    with st.expander("Your name and start over"):
        with st.form("display_name_form", border=False):
            typed = st.text_input("Display name (optional, shown to the instructor)", max_chars=40,
                                  value=st.session_state.get("display_name") or "", key="display_name_input")
            name_slot = st.empty()
            chosen = st.form_submit_button("Save name")
        if chosen:
            try:
                st.session_state.display_name = clean_text(typed, field="display_name", label="display name",
                                                           max_length=40, required=False)
                save(db, run)
                name_slot.success("Saved." if not me.note else "Kept in this tab.")
            except LabError as refused:
                name_slot.error(widgets.escape_markdown(refused.message))
        st.caption("Start over deletes your progress marks, answers and the IDs you made from this list "
                   "(the users and scores you created stay in the lab's data) and gives you a new link.")
        if st.button("Start over", key="start_over"):
            start_over(db, run)
            st.rerun()


def made(**values: Any) -> None:
    """Remember IDs the learner made (kept in session state; saved by the caller's `save`)."""
    st.session_state.update(values)
