"""The shared display pieces other pages use: the diff from a minimal pattern to its hardening, the
statement list's note drawn once per page run, and forms that report every bad field at once."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from source import models, models_minimal
from ui import widgets

STATEMENTS = '''
import streamlit as st
from labbench.recorder import RecordedStatement, StatementLog
from ui import widgets

widgets.start_run()
log = StatementLog([RecordedStatement("BEGIN", 0.001, "transaction"), RecordedStatement("SELECT 1", 0.002)])
widgets.show_statements(log, label="First")
widgets.show_statements(log, label="Second")
'''

FORM = '''
import streamlit as st
from source.errors import clean_email
from ui import forms

form = forms.Form("demo_form")
with st.form(form.key):
    email = st.text_input("Email", key="email")
    form.slot("email")
    count = st.number_input("Count", value=1, key="count")
    form.slot("count")
    share = st.number_input("Share", value=0.5, key="share")
    form.slot("share")
    sent = st.form_submit_button("Send")
if sent:
    form.start()
    form.check("email", clean_email, email)
    form.within("count", count, "Count", 1, 10, whole=True)
    form.within("share", share, "Share", 0, 1)
    if form.ok:
        st.success("sent")
'''


def test_the_diff_shows_what_the_hardening_adds_line_by_line():
    diff = widgets.code_diff(widgets.attribute_source(models_minimal.User, "scores"),
                             widgets.attribute_source(models.User, "scores"), before="a.py", after="b.py")
    lines = diff.splitlines()
    assert lines[:2] == ["--- a.py", "+++ b.py"]
    assert '-scores: Mapped[list[AIRScore]] = relationship(back_populates="user")' in lines
    assert any(line.startswith("+") and 'cascade="all, delete-orphan"' in line for line in lines)
    assert widgets.code_diff("same\n", "same\n") == ""


def test_the_statement_note_is_drawn_once_per_run_whatever_the_number_of_lists():
    at = AppTest.from_string(STATEMENTS).run()
    assert not at.exception
    headlines = [m.value for m in at.markdown if m.value.startswith("**")]
    assert [h.split(":")[0] for h in headlines] == ["**First", "**Second"]
    note = [c for c in at.caption if c.value.startswith("The pool's pre-ping")]
    assert len(note) == 1
    at.run()  # the next run draws it once again
    assert len([c for c in at.caption if c.value.startswith("The pool's pre-ping")]) == 1


def test_a_form_reports_each_bad_field_by_it_and_drops_each_message_once_fixed():
    at = AppTest.from_string(FORM).run()
    at.text_input(key="email").set_value("nope")
    at.number_input(key="count").set_value(11)
    at.number_input(key="share").set_value(1.5)
    at.button(key="FormSubmitter:demo_form-Send").click().run()
    assert [e.value for e in at.error] == ["'nope' is not a valid email address.",
                                           "Count must be a whole number from 1 to 10; you entered 11.",
                                           "Share must be a number from 0 to 1; you entered 1.5."]
    at.number_input(key="count").set_value(3)
    at.button(key="FormSubmitter:demo_form-Send").click().run()
    assert len(at.error) == 2 and not at.success
    at.text_input(key="email").set_value("yes@example.com")
    at.number_input(key="share").set_value(0.25)
    at.button(key="FormSubmitter:demo_form-Send").click().run()
    assert not at.error and at.success[0].value == "sent"
