"""Section 5 through AppTest on both backend pairs: the publisher is started and stopped from the
page, and the page's numbers follow what really happened, faults included."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

import ui
from source import run_db_setup_and_create_user
from tests.pagekit import click, open_page, texts

PAGE = "../pages/5_Eventing_Outbox_Pattern.py"


@pytest.fixture
def initialised(app_env):
    ui.run(run_db_setup_and_create_user(ui.database()))
    yield app_env
    assert ui.publisher().stop()  # app_env's reset stops it too; this checks it stops in time


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


async def relays_listening() -> int:
    """Connections of this database that ran LISTEN, as PostgreSQL's own view lists them."""
    async with ui.database().sessions() as session:
        return await session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'"))


def test_a_score_and_its_pending_event_are_stored_together(initialised):
    at = click(open_page(PAGE), "outbox_create")
    assert "in one transaction" in texts(at.success) and "pending" in texts(at.success)
    assert metrics(at)["Created (outbox rows)"] == "1" and metrics(at)["Pending"] == "1"
    assert at.session_state["done_outbox"] is True


def test_the_publisher_started_from_the_page_publishes_and_the_consumer_applies(initialised):
    at = click(open_page(PAGE), "outbox_create")
    assert "Start the publisher to watch it go through." in texts(at.caption)
    at = click(at, "outbox_start")
    assert ui.publisher().running
    # The run that started the publisher watched the event through the pipeline, then drew the figures.
    watched = texts(at.markdown)
    assert re.search(r"Your event `\w{8}`: \*\*published\*\* · appended to the stream (\d+\.\d\d) s after it "
                     r"was created · applied by the consumer (\d+\.\d\d) s after", watched), watched
    shown = metrics(at)
    assert (shown["Pending"], shown["Published"], shown["Appended to the stream"]) == ("0", "1", "1")
    assert (shown["Delivered to the consumer"], shown["Applied (inbox rows)"], shown["Duplicates dropped"]) == ("1", "1", "0")
    assert "running" in texts(at.sidebar.caption)

    at = click(at, "outbox_stop")
    assert not ui.publisher().running
    assert "stopped" in texts(at.sidebar.caption) and "Publisher stopped" in texts(at.markdown)


def test_an_event_stored_while_the_publisher_runs_wakes_it_by_notify_on_postgresql(initialised):
    at = click(open_page(PAGE), "outbox_start")
    assert ui.publisher().running
    if initialised == "servers":  # a commit before the relay LISTENs would be claimed by its first poll
        wait_for(lambda: ui.run(relays_listening()) >= 1)
    at = click(at, "outbox_create")  # stored while the relay sleeps: PostgreSQL's NOTIFY wakes it
    wait_for(lambda: ui.publisher().snapshot().applied == 1)
    at = click(at, "outbox_refresh")
    shown = texts(at.markdown)
    if initialised == "servers":
        assert "It wakes on LISTEN/NOTIFY at commit" in shown
        woken = re.search(r"\*\*Publisher running\*\* · woken by NOTIFY (\d+)×", shown)
        assert woken and int(woken.group(1)) >= 1, shown
        assert ui.publisher().snapshot().notify_wakeups == int(woken.group(1))
    else:
        assert "It wakes on a poll every" in shown and "woken by NOTIFY" not in shown


def test_a_relay_crash_after_append_delivers_again_and_the_duplicate_is_dropped(initialised):
    at = click(open_page(PAGE), "outbox_crash")
    assert "Armed" in texts(at.info)
    at = click(click(at, "outbox_create"), "outbox_start")
    wait_for(lambda: ui.outbox_overview().duplicates == 1 and ui.outbox_overview().pending == 0)
    at.run()
    shown = metrics(at)
    assert (shown["Appended to the stream"], shown["Applied (inbox rows)"], shown["Duplicates dropped"]) == ("2", "1", "1")
    assert ui.publisher().faults.crashes == 1


def test_broker_down_keeps_events_pending_until_it_returns_and_needs_the_instructor_key(initialised, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "letmein")
    at = open_page(PAGE)
    assert not [b for b in at.button if b.key in ("outbox_broker_down", "outbox_stop")]
    at.text_input(key="outbox_fault_key").set_value("letmein").run()
    at.text_input(key="outbox_stop_key").set_value("letmein").run()
    at = click(at, "outbox_broker_down")
    assert "The broker is **down**" in texts(at.markdown)
    at = click(click(at, "outbox_create"), "outbox_start")
    wait_for(lambda: ui.publisher().snapshot().retries_scheduled >= 2)
    at.run()
    assert metrics(at)["Pending"] == "1" and metrics(at)["Published"] == "0"
    assert "broker unreachable" in texts(at.sidebar.caption)
    assert ui.run(ui.redis_client().ping())  # everyone else's Redis traffic is unaffected

    at = click(at, "outbox_broker_up")
    wait_for(lambda: ui.outbox_overview().applied == 1, timeout=15)
    at.run()
    assert metrics(at)["Published"] == "1" and metrics(at)["Pending"] == "0"


def test_several_relays_run_from_the_page_in_aggregate_order_show_no_inversion(initialised):
    at = open_page(PAGE)
    at.number_input(key="relays_count").set_value(0)
    at = click(at, "relays_run")
    assert not at.exception and "Relays: Choose 1 to 8." in texts(at.error)
    assert "Inversions" not in metrics(at)
    at.number_input(key="relays_count").set_value(3)
    at.number_input(key="relays_events").set_value(1_000)
    at = click(at, "relays_run")
    assert not at.exception
    shown = metrics(at)
    assert (shown["Inversions"], shown["Duplicates"], shown["Not appended"]) == ("0", "0", "0")
    assert "3 relay(s), in aggregate order" in texts(at.caption)
    assert not ui.publisher().running  # the lab's publisher was not started or touched
