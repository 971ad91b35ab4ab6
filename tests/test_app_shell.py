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


def test_a_database_that_is_down_gets_a_banner_naming_it_and_no_traceback(app_env, monkeypatch):
    import ui

    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://lab:secret@127.0.0.1:9/nowhere")
    ui.reset_resources()
    for page in ("../app.py", "../pages/3_Repository_Pattern_and_N+1.py", "../pages/6_Schema_Migrations.py"):
        at = AppTest.from_file(page, default_timeout=30).run()
        assert not at.exception
        banner = " ".join(e.value for e in at.error)
        assert "Database unreachable: PostgreSQL 127.0.0.1:9/nowhere" in banner
        shown = (*at.error, *at.markdown, *at.caption, *at.code, *at.sidebar.caption, *at.sidebar.code)
        everything = " ".join(str(e.value) for e in shown)
        assert "secret" not in everything and "Traceback" not in everything


def test_serving_the_pages_parses_no_python(initialised, monkeypatch):
    """Each learner's script runs in its own thread of one process, and CPython before 3.11.8 and
    3.12.2 builds ast.parse's objects in state all threads share (python/cpython#106905): under a
    workshop's load, a page that parses fails now and then with "AST constructor recursion
    depth mismatch". So no page may parse while it serves, nor Streamlit's magic before it."""
    import ast
    import glob
    import traceback

    parsed_by: list[str] = []
    real_parse = ast.parse

    def parse(*args, **kwargs):
        caller = traceback.extract_stack(limit=2)[0]
        parsed_by.append(f"{caller.filename}:{caller.lineno}")
        return real_parse(*args, **kwargs)

    pages = ("../app.py", *sorted(f"../{p}" for p in glob.glob("pages/*.py")))
    for page in pages:  # first imports parse once per process (numpy does), as the first learner loads
        AppTest.from_file(page, default_timeout=60).run()
    with monkeypatch.context() as patched:
        patched.setattr(ast, "parse", parse)
        results = [AppTest.from_file(page, default_timeout=60).run() for page in pages]
    assert len(results) == 9 and not any(at.exception for at in results)
    assert parsed_by == []
