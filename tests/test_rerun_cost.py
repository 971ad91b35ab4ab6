"""What a rerun does not redo: section 6 renders each offline SQL preview and loads the
migration scripts once, not on every rerun, yet shows a new or edited revision (sections 2 and 5
and the instructor page read them through the same cache); and the app's
Alembic calls leave logging alone (no INFO lines per page run in a served app's log: see
tests/test_room.py). On both backend pairs (AppTest)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import streamlit as st

import labbench.migrations
from tests.pagekit import open_page, texts

PAGE = "../pages/6_Schema_Migrations.py"
VERSIONS = Path(__file__).resolve().parent.parent / "alembic" / "versions"


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How often section 6 asks Alembic for the history, a script's source and offline SQL;
    the caches start empty."""
    counted = {"revision_history": 0, "migration_source": 0, "offline_sql": 0}
    for name in counted:
        real = getattr(labbench.migrations, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            counted[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(labbench.migrations, name, counting)
    st.cache_data.clear()
    labbench.migrations.forget_loaded_scripts()
    yield counted
    st.cache_data.clear()
    labbench.migrations.forget_loaded_scripts()


def test_reruns_reuse_the_rendered_sql_and_the_history(initialised, calls):
    at = open_page(PAGE)
    first = dict(calls)  # the history is read by the page and by offline_sql itself
    assert first["offline_sql"] == 1 and first["migration_source"] == len(list(VERSIONS.glob("*.py")))
    for _ in range(3):
        at.run()
        assert not at.exception
    assert calls == first
    assert "DROP TABLE" in texts(at.code)  # the cached preview is still shown (downgrade to base)


def test_another_target_renders_its_own_sql(initialised, calls):
    at = open_page(PAGE)
    targets = at.selectbox(key="sql_target").options
    assert len(targets) >= 2
    at.selectbox(key="sql_target").set_value(targets[1]).run()
    assert not at.exception
    assert calls["offline_sql"] == 2
    at.selectbox(key="sql_target").set_value(targets[0]).run()
    assert calls["offline_sql"] == 2  # the first target's SQL, from the cache


def test_an_edited_revision_is_read_again(initialised, calls):
    at = open_page(PAGE)
    loaded = calls["revision_history"]
    script = sorted(VERSIONS.glob("*.py"))[0]
    before = script.stat()
    try:
        os.utime(script, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        at.run()
        assert not at.exception
        assert calls["revision_history"] > loaded and calls["offline_sql"] == 2
    finally:
        os.utime(script, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_the_app_rendering_sql_leaves_logging_as_it_was(initialised, calls):
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    before = (list(root.handlers), root.level, alembic.level, list(alembic.handlers))
    open_page(PAGE)
    assert calls["offline_sql"] == 1
    assert (list(root.handlers), root.level, alembic.level, list(alembic.handlers)) == before


@pytest.mark.parametrize("page", ["../pages/2_DB_Connectivity_and_Pooling.py", "../pages/5_Eventing_Outbox_Pattern.py"])
def test_other_pages_read_the_scripts_once(initialised, calls, page):
    at = open_page(page)
    first = dict(calls)
    assert first["revision_history"] + first["migration_source"] >= 1  # the page does show them
    for _ in range(3):
        at.run()
        assert not at.exception
    assert calls == first
