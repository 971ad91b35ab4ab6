"""A Streamlit page with nothing of the lab's in it: as many one-line markdown elements as the
URL's `elements` parameter asks for. bench.py reruns it beside each lab page, with as many
elements, to tell what Streamlit itself costs per rerun from what the page's own code costs."""

import streamlit as st

for number in range(int(st.query_params.get("elements", "1"))):
    st.markdown(f"Element {number}")
