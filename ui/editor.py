"""A code editor on the page: Ace, through the streamlit-code-editor component, with Python
highlighting, line numbers, and Tab that indents (four spaces).

The code the page works with is kept in session state under `code_key(key)`, not read from the
component alone: the component sends its text only when the learner leaves the editor (its "blur"
response: clicking "Run checks" does, so the click's run has the text they typed), and sends nothing
for text it was given and never edited. So: the editor's responses write that key, `put` writes it
when the page puts code in the editor (the starter, the learner's stored code), and a page test or a
client without a browser may write it too (AppTest cannot type into a component's iframe).

Why not streamlit-ace: its last release is 0.1.1 (2021); it sends its text only from its own
"Apply" button (a learner who clicks "Run checks" first would have the old code graded), or on
every pause in typing (a full page run each time, for every learner in a room), and it cannot be
given new text after it is drawn.
"""

from __future__ import annotations

import streamlit as st
from code_editor import code_editor

MIN_LINES, MAX_LINES = 14, 40


def code_key(key: str) -> str:
    return f"{key}:code"


def put(key: str, code: str) -> None:
    """Show `code` in the editor from its next draw (a fresh editor: the component shows new text
    only when it is made again), and make it the code the page works with."""
    state = st.session_state
    state[code_key(key)] = code
    state[f"{key}:shown"] = code
    state[f"{key}:version"] = state.get(f"{key}:version", 0) + 1


def editor(key: str, initial: str) -> str:
    """Draw the editor; return the code as the learner last left it (`initial` at first)."""
    state = st.session_state
    if code_key(key) not in state:
        put(key, initial)
    state.setdefault(f"{key}:shown", state[code_key(key)])
    response = code_editor(
        state[f"{key}:shown"], lang="python", key=f"{key}:editor:{state.get(f'{key}:version', 0)}",
        height=[MIN_LINES, MAX_LINES], response_mode="blur", shortcuts="vscode",
        options={"showLineNumbers": True, "tabSize": 4, "useSoftTabs": True, "wrap": False},
        # Ace's default 15 px scroll margin puts the line numbers half a line off the text once it scrolls.
        props={"scrollMargin": [0, 0, 0, 0]},
    ) or {}
    # Each response carries a new id; the same response comes back at every later run of the page.
    if (sent := response.get("id")) and sent != state.get(f"{key}:seen"):
        state[f"{key}:seen"] = sent
        state[code_key(key)] = response.get("text") or ""
    return state[code_key(key)]
