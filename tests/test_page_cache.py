"""Section 4 driven through AppTest on both backend pairs, with Redis up and down: the arc (the
problem measured, the minimal version run, a prediction, each failure on the minimal version and
on the hardened cache), each long action's status, results that stay, and the lab's cache in use."""

from __future__ import annotations

import json
import re

import pytest

import source
import ui
from harness.served import free_port
from source.redis_setup import RedisTarget
from source.repositories import UserRepository
from tests.pagekit import click, open_page, texts
from ui.views import cache_arc_views

PAGE = "../pages/4_Caching_with_Redis.py"


def status(at, label: str):
    """The status box of the action named `label`: it ran, and says so after its run."""
    [box] = [box for box in at.status if box.label.startswith(label)]
    assert box.state == "complete" and ": done in " in box.label, box.label
    return box


def test_on_a_fresh_database_a_first_visit_sets_it_up_and_shows_the_demo_user(app_env, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "")
    at = open_page(PAGE)
    assert at.status[0].label.startswith("Setting up the database on first use")
    assert "Demo user: **Jane Doe**" in texts(at.markdown)


def test_on_a_shared_server_a_fresh_database_is_left_to_the_instructor(app_env, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "a secret")
    at = open_page(PAGE)
    assert "that is the instructor's to do" in texts(at.info) and not at.status
    assert "Demo user" not in texts(at.markdown)


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
    assert "invalidated the cached latest score" in texts(at.success)
    at = click(at, "cache_fetch_score")
    # Never the stale HIT. Normally a MISS; on a machine so loaded that Redis misses the 50 ms
    # timeout, the read fails open to the database instead, which is just as fresh.
    assert "HIT" not in texts(at.success)
    assert "MISS" in texts(at.info) or "served from the database" in texts(at.warning)


def test_invalidating_deletes_the_keys(initialised):
    at = click(click(open_page(PAGE), "cache_fetch_user"), "cache_invalidate")
    assert "Invalidated both keys (1 held a cached value)" in texts(at.success)
    assert texts(at.caption).count("A write's tombstone") == 2


def test_traffic_experiment_reports_the_hit_ratio_and_the_update(initialised):
    at = open_page(PAGE)
    at.slider(key="cache_reads").set_value(200)
    at.slider(key="cache_users").set_value(20)
    at = click(at.run(), "cache_run_traffic")
    status(at, "Reading 200 times without, then with the cache")
    # Never the old value: normally a MISS; on a machine so loaded that Redis misses the cache's
    # 50 ms, the read fails open to the database instead, which is just as fresh.
    after = re.search(r"went from ([\d.]+) to ([\d.]+)\. Their next read was a \*\*(\w+)\*\* returning \*\*([\d.]+)\*\*",
                      texts(at.markdown))
    assert after and after[3] in ("MISS", "ERROR") and after[4] == after[2], texts(at.markdown)
    assert len(at.get("vega_lite_chart")) == 1  # the latency chart
    labels = [m.label for m in at.metric]
    assert "p50 read, database alone (ms)" in labels and "p50 read, through the cache (ms)" in labels
    figure = at.session_state["key_figures"]["cache"]["traffic"]
    assert figure.startswith("200 reads: hit ratio ") and "ms from the database alone" in figure
    if initialised == "servers":
        assert "INFO keyspace_hits + keyspace_misses) rose by" in texts(at.markdown)
        assert "for the midway write's invalidation (SET … GET)" in texts(at.markdown)
    else:
        assert "keeps no server statistics" in texts(at.caption)
    at = click(at, "cache_fetch_user")  # results stay until replaced
    assert after[0] in texts(at.markdown) and len(at.get("vega_lite_chart")) == 1


def test_the_minimal_version_runs_on_a_row_and_keys_of_the_learners_own(initialised):
    at = click(open_page(PAGE), "cache_minimal_run")
    status(at, "Running CacheAside on your own key")
    table = at.dataframe[0].value
    assert list(table["database statements"]) == [1, 0, 2, 1]
    assert list(table["returned"]) == ["Throwaway user v1", "Throwaway user v1", "", "Throwaway user v2"]
    assert "Your row and keys are gone again" in texts(at.caption)


def test_the_stampede_needs_a_prediction_then_compares_it_with_the_loads_measured(initialised):
    at = click(open_page(PAGE), "cache_stampede_minimal")
    assert "Enter your prediction first." in texts(at.error) and not at.status
    at.number_input(key="cache_guess").set_value(1)
    at = click(at.run(), "cache_stampede_minimal")
    status(at, "Stampede")
    loads = re.search(r"You predicted \*\*1\*\*\. On the minimal version, 100 readers of one cold key made "
                      r"\*\*(\d+) database loads\*\*", texts(at.markdown))
    assert loads and int(loads[1]) > 1
    at = click(at, "cache_stampede_hardened")
    status(at, "Run 100 readers on the hardened cache")
    assert "On the hardened cache, 100 readers of one cold key made **1 database load**" in texts(at.markdown)
    assert "You predicted **1**" in texts(at.markdown)  # the minimal run's result stays


def test_a_stale_set_breaks_the_minimal_version_and_not_the_hardened_cache(initialised):
    at = click(open_page(PAGE), "cache_stale_minimal")
    status(at, "Race a write on the minimal version")
    assert "**Stale.** The database holds Throwaway user v2, but the next read returned **Throwaway user v1**" in texts(at.error)
    at = click(at, "cache_stale_hardened")
    status(at, "Race a write on the hardened cache")
    assert "The next read missed and loaded **Throwaway user v2**" in texts(at.success)
    assert "**Stale.**" in texts(at.error)  # still there: results stay until replaced


def test_a_hung_redis_fails_the_minimal_read_after_seconds_and_the_hardened_one_serves_the_database(initialised):
    at = click(open_page(PAGE), "cache_hung_minimal")
    status(at, "Hang Redis under the minimal version")
    assert re.search(r"\*\*The read failed after [5-9]\.\d s\*\* with TimeoutError", texts(at.error))
    at = click(at, "cache_hung_hardened")
    status(at, "Hang Redis under the hardened cache")
    assert "**Served from the database in" in texts(at.success) and "after the cache's 50 ms budget" in texts(at.success)


def test_each_failures_diff_is_taken_from_the_source_as_it_runs(initialised):
    at = open_page(PAGE)
    diffs = [block.value for block in at.code if block.language == "diff"]
    for failure in cache_arc_views.ANSWERS:
        assert cache_arc_views.answer_diff(failure) in diffs
    assert "+    with self.flights.reading(key):" in cache_arc_views.whole_diff()
    assert "+cached, asked_at, error = await self._get(key)  # hung Redis: fails open; stampede: one GET" in diffs[0]
    with pytest.raises(LookupError):
        cache_arc_views.statement(cache_arc_views.CacheAside.get, "no such line")


@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_an_unreachable_redis_for_my_reads_is_served_from_the_database(initialised, fault):
    at = open_page(PAGE)
    at.radio(key="cache_fault").set_value(fault).run()
    assert "They are served from the database" in texts(at.warning)
    at = click(at, "cache_fetch_user")
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


def latest_score_id() -> str:
    jane = ui_state_jane()

    async def read() -> str:
        async with ui.database().sessions() as session:
            return (await UserRepository(session).get_latest_score(jane)).id

    return ui.run(read())


def ui_state_jane() -> str:
    async def read() -> str:
        async with ui.database().sessions() as session:
            return (await UserRepository(session).get_by_email("jane.doe@innovateai.com")).id

    return ui.run(read())


def fetched_score_id(at) -> str:
    return json.loads(at.json[-1].value)["id"]


@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_a_write_while_my_reads_use_an_unreachable_redis_invalidates_the_labs_redis(initialised, fault):
    at = click(click(open_page(PAGE), "cache_fetch_score"), "cache_fetch_score")
    assert "HIT" in texts(at.success)  # the lab's Redis holds the latest score
    at.radio(key="cache_fault").set_value(fault).run()
    at = click(at, "cache_add_score")
    # Invalidated on the lab's Redis; on a machine so loaded that it misses the 50 ms reply
    # timeout, the page says the invalidation is queued, and it is sent before the next command.
    assert ("invalidated the cached latest score on the lab's Redis" in texts(at.success)
            or "The invalidation is queued" in texts(at.warning))
    at.radio(key="cache_fault").set_value("none").run()
    at = click(at, "cache_fetch_score")
    assert "HIT" not in texts(at.success)  # never the old score from the lab's Redis
    assert "MISS" in texts(at.info) or "served from the database" in texts(at.warning)
    assert fetched_score_id(at) == latest_score_id()


def test_section_3s_sample_scores_invalidate_the_cached_latest_score(initialised):
    at = click(click(open_page(PAGE), "cache_fetch_score"), "cache_fetch_score")
    assert "HIT" in texts(at.success)
    old = fetched_score_id(at)
    section_3 = open_page("../pages/3_Repository_Pattern_and_N+1.py")
    section_3.text_input(key="n1_user_id_input").set_value(ui_state_jane()).run()
    assert "Added 3 scores" in texts(click(section_3, "add_scores").success)
    at = click(at, "cache_fetch_score")
    assert "HIT" not in texts(at.success)
    assert "MISS" in texts(at.info) or "served from the database" in texts(at.warning)
    assert fetched_score_id(at) == latest_score_id() != old


def test_the_strategy_comparison_shows_a_row_per_strategy_and_a_chart(initialised):
    at = open_page(PAGE)
    for name, value in (("reads", 200), ("users", 10), ("readers", 8), ("ttl_seconds", 300)):
        at.number_input(key=f"cache_cmp_{name}").set_value(value)
    at = click(at.run(), "cache_compare")
    box = status(at, "Comparing the five strategies")
    assert "write-behind: strategy 5 of 5" in texts(box.caption)
    table = at.dataframe[-1].value
    assert list(table["strategy"]) == ["cache-aside", "TTL only", "write-through", "refresh-ahead", "write-behind"]
    assert "Write-behind's loss window" in texts(at.markdown)
    assert len(at.get("vega_lite_chart")) == 1


def test_a_bad_comparison_control_gets_a_message_under_it_and_runs_nothing(initialised):
    at = open_page(PAGE)
    at.number_input(key="cache_cmp_readers").set_value(0)
    at = click(at.run(), "cache_compare")
    assert "Concurrent readers: choose 1 to 64 (got 0)" in texts(at.error)
    assert not at.dataframe and not at.get("vega_lite_chart")


def test_the_structures_panel_shows_the_live_keys_as_redis_reports_them(initialised):
    at = click(click(open_page(PAGE), "cache_fetch_user"), "cache_structures")
    table = at.dataframe[-1].value
    assert list(table["TYPE"]) == ["string", "hash", "zset", "list", "set", "none", "(a channel, not a key)"]
    assert "section 5's relay creates it" in table["content"][5]  # no event published yet
    assert '"name": "Jane Doe"' in table["content"][0]
    assert "years_experience (after HSET) = 6.0" in table["content"][1]
    assert "after it left reached 0" in table["content"][6]
    if initialised == "servers":  # a Redis server reports both; fakeredis implements neither
        assert table["OBJECT ENCODING"][1] == "listpack" and int(table["MEMORY USAGE (bytes)"][0]) > 0
    else:
        assert "implements neither OBJECT ENCODING nor MEMORY USAGE" in texts(at.caption)


@pytest.mark.parametrize("page, button, done", [
    ("../pages/3_Repository_Pattern_and_N+1.py", "add_scores", "Added 3 scores"),
    ("../pages/5_Eventing_Outbox_Pattern.py", "outbox_create", "AIRScore"),
])
def test_a_score_written_on_another_page_says_when_the_labs_redis_did_not_take_its_invalidation(
        initialised, monkeypatch, page, button, done):
    closed = source.cache.cache_client(RedisTarget("server", "closed", "test", f"redis://127.0.0.1:{free_port()}/0"))
    unanswered = source.RedisCache(closed)  # nothing listens there: its invalidations are queued
    monkeypatch.setattr(ui, "redis_cache", lambda fault="none": unanswered)
    at = click(open_page(page), button)
    assert done in texts(at.success)
    assert "The invalidation is queued" in texts(at.warning)
