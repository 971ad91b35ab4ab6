"""Drives the served app from outside, as learners would: a served process, a browser walk of every
section, the load run. Used by the tests and bench.py; imports Playwright and Streamlit's protocol."""
