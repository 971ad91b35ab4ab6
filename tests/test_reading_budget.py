"""The reading budget: each page, opened once after setup, shows at most BUDGET words of prose
before any experiment (counted as tests/reading.py says). Depth goes into collapsed "Going
further" expanders, where a learner who wants it finds it."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.reading import BUDGET, prose, visible_words, words
from ui import SECTIONS

PAGES = [path for path, _label in SECTIONS]


def test_the_count_takes_a_code_span_as_one_word_and_markup_as_none():
    assert words("The relay claims with `FOR UPDATE SKIP LOCKED` in **batches** of 100.") == 9
    assert words("| tool | role |\n|---|---|\n| Redis | cache |") == 4


def test_the_count_skips_collapsed_expanders_later_tabs_and_the_knowledge_check(initialised):
    script = '''
import streamlit as st
st.markdown("one two three")
with st.expander("Going further"):
    st.markdown("hidden " * 50)
with st.expander("Open", expanded=True):
    st.caption("four five")
first, second = st.tabs(["a", "b"])
first.info("six")
second.markdown("hidden " * 50)
with st.form("check_form_demo"):
    st.markdown("hidden " * 50)
    st.form_submit_button("Check")
st.code("hidden " * 50)
'''
    at = AppTest.from_string(script).run()
    assert visible_words(at) == 6


@pytest.mark.parametrize("page", PAGES)
def test_a_page_shows_at_most_the_budget_of_prose_before_any_experiment(initialised, page, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "")
    at = AppTest.from_file(f"../{page}", default_timeout=60).run()
    assert not at.exception
    count = visible_words(at)
    assert count <= BUDGET, f"{page}: {count} words of visible prose (budget {BUDGET}):\n" + "\n".join(prose(at.main))
