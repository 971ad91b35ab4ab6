"""Alex's story: what each section wins him (the Introduction lists it) and, at the end of the lab,
the payoff in this learner's own figures (ui.remember_figure keeps them with their progress)."""

from __future__ import annotations

import streamlit as st

from ui import widgets

# Section -> what it wins Alex for the AI-R dashboard he is shipping (fast, and no event ever lost).
WINS = {
    "models": "a schema in which each score belongs to one user and a deleted user leaves nothing behind",
    "pooling": "connections reused, bounded under load, and replaced when the server drops them",
    "repository": "data access behind one interface, and pages read in a fixed number of queries",
    "cache": "the dashboard's hot reads served from Redis, and kept true after writes",
    "outbox": "events committed with the data they describe and delivered even when Redis fails",
    "event_design": "an event table whose order and retries are designed, not hoped for",
    "migrations": "a schema that follows the code, step by step, without losing rows",
}


def wins() -> None:
    st.markdown("\n".join(f"- **{widgets.PROGRESS[section]}**: {win}." for section, win in WINS.items()))


def payoff() -> None:
    """The end of the story, quoted from this learner's own runs; skipped sections said plainly."""
    figures = st.session_state.get("key_figures") or {}
    shown, skipped = [], []
    for section, label in widgets.PROGRESS.items():
        mine = figures.get(section) or {}
        if mine:
            quoted = "; ".join(widgets.escape_markdown(text) for text in mine.values())
            shown.append(f"- **{label}**: {quoted}.")
        else:
            skipped.append(label)
    if shown:
        st.markdown("Alex ships the AI-R dashboard. In your own run:\n" + "\n".join(shown))
    if skipped:
        st.info(f"Skipped so far (no figure of yours recorded): {', '.join(skipped)}. Run each one's key "
                "experiment and its figure appears here.")
    else:
        st.success("Every figure above is one you measured: the dashboard is served fast, and its events are "
                   "never lost.")
