"""ui.run_showing: a long action says what it does while it runs, and its box stays after it."""

from streamlit.testing.v1 import AppTest

SCRIPT = '''
import asyncio
import streamlit as st
import ui

async def experiment(report, fail):
    for step in range(3):
        report(f"step {step + 1} of 3", step / 3)
        await asyncio.sleep(0.3)
    if fail:
        raise ValueError("broken")
    return 42

fail = st.session_state.get("fail", False)
try:
    st.write(ui.run_showing(lambda report: experiment(report, fail), label="Measuring", about=1))
except ValueError:
    st.write("it failed")
'''


def test_the_status_box_stays_after_the_run_with_the_time_it_took():
    at = AppTest.from_string(SCRIPT, default_timeout=30).run()
    assert not at.exception
    [box] = at.status
    assert box.label.startswith("Measuring: done in ") and box.state == "complete"
    assert any("step" in c.value for c in box.caption)  # the last step it reported
    assert at.markdown[-1].value == "`42`"


def test_a_failed_run_says_so_in_its_box():
    at = AppTest.from_string(SCRIPT, default_timeout=30)
    at.session_state["fail"] = True
    at.run()
    [box] = at.status
    assert box.label == "Measuring: failed" and box.state == "error"
    assert at.markdown[-1].value == "it failed"
