"""The entry page renders on each backend pair and names the backends it really uses."""

from streamlit.testing.v1 import AppTest


def test_introduction_renders_and_names_its_backends(app_env):
    at = AppTest.from_file("../app.py", default_timeout=30).run()
    assert not at.exception
    captions = " ".join(c.value for c in at.sidebar.caption)
    if app_env == "embedded":
        assert "SQLite file" in captions and "embedded (fakeredis)" in captions
    else:
        assert "PostgreSQL" in captions and "server redis://" in captions
