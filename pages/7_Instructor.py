import streamlit as st

import ui
from ui import gate
from ui.views import exercise_views
from ui.views import instructor_views as views

ui.page("7. Instructor")
st.title("7. Instructor: the room")

if not gate.instructor_key_set():
    st.info(
        "This page is for an instructor serving the lab to a room from one server. It is off: start the "
        "server with the environment variable `LAB_INSTRUCTOR_KEY` set to a secret (for example "
        "`LAB_INSTRUCTOR_KEY=… streamlit run app.py`), then open this page and enter that key. Until "
        "then it shows nothing of other learners, and the sections' shared actions are open to anyone."
    )
    st.stop()
if not gate.instructor_key_ok("This page", key="instructor_page_key", reason="shows every learner's progress"):
    st.stop()

st.markdown(
    "The room's progress, read now from the learners' rows, and the actions that change what every "
    "learner sees, gathered from sections 2, 5 and 6 (which keep them too, behind the same key). "
    "The page sets no timer: refresh it to read again."
)
st.button("Refresh", key="room_refresh")

st.subheader("Learners and their progress")
views.room_progress()

st.subheader("Knowledge checks: share of right answers")
views.answer_shares()

st.subheader("Backends and the outbox publisher")
views.health()

st.subheader("Room-wide actions")
st.markdown("**Schema** (section 2's Initialize, section 6's steps)")
views.schema_actions()
st.markdown("**Outbox** (section 5): the publisher, broker faults, relay crash, failed events")
views.outbox_actions()
st.markdown("**Reset lab data** (section 2)")
views.reset_action()

exercise_views.instructor_figures()
