"""The instructor gate: actions that change what everyone on this server sees (schema steps, the
publisher, broker faults, resets) need LAB_INSTRUCTOR_KEY when one is set. Wrong keys back off
per browser session and per client address (runtime.keyguard)."""

from __future__ import annotations

import hashlib
import hmac
import math
import os

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from runtime import keyguard


def instructor_key_set() -> bool:
    """True when LAB_INSTRUCTOR_KEY is set: shared actions are the instructor's."""
    return bool(os.environ.get("LAB_INSTRUCTOR_KEY", ""))


def instructor_key_ok(action: str, *, key: str, reason: str = "changes the lab for everyone") -> bool:
    """Gate for actions that change the lab for every session on this server (resetting data,
    stopping the publisher, injecting a fault, stepping the schema). With LAB_INSTRUCTOR_KEY
    set they need that key; without it the server is taken to be one learner's own."""
    expected = os.environ.get("LAB_INSTRUCTOR_KEY", "")
    if not expected:
        st.caption(
            f"{action} changes the lab for everyone using this server. No LAB_INSTRUCTOR_KEY is "
            "set, so anyone may do it; an instructor serving a room sets one."
        )
        return True
    entered = st.text_input(f"Instructor key ({action.lower()})", type="password", key=key)
    if not entered:
        st.caption(f"{action} {reason}: it needs the instructor key.")
        return False
    # Wrong keys back off per session and per address (runtime.keyguard). A key left in the box
    # is checked again at every rerun: only a new wrong value counts as another attempt.
    session_id, address = _session_id(), st.context.ip_address
    address = address if isinstance(address, str) else None  # None on loopback (and in AppTest)
    digest = hashlib.sha256(entered.encode()).hexdigest()
    if st.session_state.get(f"{key}__wrong") == digest:
        st.error("That is not the instructor key.")
        return False
    verdict = keyguard.check(action, session_id, address, lambda: hmac.compare_digest(entered.encode(), expected.encode()))
    if not verdict.checked:
        st.error(f"Too many wrong instructor keys from this browser or address: the key is checked "
                 f"again in {math.ceil(verdict.wait)} s.")
        return False
    if not verdict.right:
        st.session_state[f"{key}__wrong"] = digest
        st.error(f"That is not the instructor key. The next key is checked in {verdict.wait:g} s at the earliest.")
        return False
    return True


def _session_id() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else "none"
