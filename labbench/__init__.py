"""The lab's instruments and infrastructure around `source`: no Streamlit here, and nothing connects at import."""
