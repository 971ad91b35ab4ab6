"""Section 4 driven through AppTest on both backend pairs, with Redis up and down."""

from __future__ import annotations

import pytest

import ui
from tests.pagekit import click, open_page, texts

PAGE = "../pages/4_Caching_with_Redis.py"


def test_without_initialised_data_it_points_to_section_2(app_env):
    at = open_page(PAGE)
    assert "Initialise the database" in texts(at.info)


def test_fetches_miss_then_hit_and_show_the_stored_json_and_ttl(initialised):
    at = click(open_page(PAGE), "cache_fetch_user")
    assert "MISS" in texts(at.info) and "Jane Doe" in texts(at.json)
    at = click(at, "cache_fetch_user")
    assert "HIT" in texts(at.success)
    assert "Expires in" in texts(at.caption) and '"name": "Jane Doe"' in texts(at.code)
    assert [m.value for m in at.metric[:5]] == ["1", "1", "0", "1", "0.50"]  # your reads
    assert "T_{avg} = 0.50" in texts(at.latex)


def test_the_latest_score_exists_and_a_new_score_makes_the_next_fetch_miss(initialised):
    at = click(open_page(PAGE), "cache_fetch_score")
    at = click(at, "cache_fetch_score")
    assert "HIT" in texts(at.success)
    at = click(at, "cache_add_score")
    assert "deleted the cached latest score" in texts(at.success)
    at = click(at, "cache_fetch_score")
    # Never the stale HIT. Normally a MISS; on a machine so loaded that Redis misses the 50 ms
    # timeout, the read fails open to the database instead, which is just as fresh.
    assert "HIT" not in texts(at.success)
    assert "MISS" in texts(at.info) or "served from the database" in texts(at.warning)


def test_invalidating_deletes_the_keys(initialised):
    at = click(click(open_page(PAGE), "cache_fetch_user"), "cache_invalidate")
    assert "Deleted 1 of 2 keys" in texts(at.success)
    assert "Not in Redis" in texts(at.caption)


def test_traffic_experiment_reports_the_hit_ratio_and_the_update(initialised):
    at = open_page(PAGE)
    at.slider(key="cache_reads").set_value(200)
    at.slider(key="cache_users").set_value(20)
    at = click(at.run(), "cache_run_traffic")
    assert "Their next read was a **MISS**" in texts(at.markdown)
    assert len(at.get("vega_lite_chart")) == 1  # the latency chart
    if initialised == "servers":
        assert "keyspace_hits" in " ".join(at.dataframe[0].value.columns)
    else:
        assert "keeps no server statistics" in texts(at.caption)


@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_an_unreachable_redis_for_my_reads_is_served_from_the_database(initialised, fault):
    at = open_page(PAGE)
    at.radio(key="cache_fault").set_value(fault).run()
    at = click(at, "cache_fetch_user")
    assert "served from the database" in texts(at.warning)
    assert "ERROR" in texts(at.warning) and "Jane Doe" in texts(at.json)


def test_with_the_labs_redis_down_reads_are_served_from_the_database(initialised, monkeypatch):
    if initialised == "embedded":
        import source.redis_setup

        monkeypatch.setattr(source.redis_setup.FAKE_SERVER, "connected", False)
    else:
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens there
        ui.reset_resources()
    at = click(open_page(PAGE), "cache_fetch_user")
    assert "Redis is not answering" in texts(at.warning)
    assert "ERROR → served from the database" in texts(at.warning) and "Jane Doe" in texts(at.json)
    assert "did not answer" in texts(at.error)  # the key inspection names Redis
