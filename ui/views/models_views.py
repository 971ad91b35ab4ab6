"""Section 1's results, drawn: the three ways of deleting a user, each with what it sent."""

from __future__ import annotations

import streamlit as st

from labbench.cascade_demo import DeleteRun


def delete_runs(runs: list[DeleteRun]) -> None:
    for run in runs:
        left = ", ".join(f"`{table}` {n}" for table, n in run.rows_left.items())
        st.markdown(f"**{run.how}**: {run.outcome}. That user's rows afterwards: {left}.")
        st.code(";\n".join(run.sql) + ";", language="sql")
    st.caption("The data statements each way sent, in order (transaction control not shown); the rows "
               "counted after it ended. The users were made for this run, and the run removed them.")
