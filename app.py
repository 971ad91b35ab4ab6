import streamlit as st

import ui

ui.page("Introduction")
st.title("Lab 2: Data Architecture & Persistence")
