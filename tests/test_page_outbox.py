"""Section 5 through AppTest on both backend pairs: the arc (the problem, the minimal outbox, the
failures against the minimal and the lab's code) and the live pipeline: the publisher started and
stopped from the page, and the page's numbers following what really happened, faults included."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

import ui
from labbench import outbox_health, relay_race
from labbench.relay_race import order_faults
from source import run_db_setup_and_create_user
from source.partitions import PARTITIONS
from tests.pagekit import click, open_page, texts
from ui.views.relay_race_views import spans

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


STEP = re.compile(r"(appended to the stream|appended again|marked published by the relay|applied by the consumer)"
                  r"[^·]*?(\d+\.\d\d) s after it was created")


def steps(at: AppTest) -> list[tuple[str, float]]:
    """The followed event's steps, as the page lists them: (what, seconds after it was created)."""
    line = next(text for text in (m.value for m in at.markdown) if text.startswith("Your event `"))
    return [(what, float(seconds)) for what, seconds in STEP.findall(line)]


def test_the_page_states_the_claim_design_that_runs_with_its_statements(initialised):
    at = open_page(PAGE)
    design = ui.publisher().settings.design
    assert f"Its relay claims **{design}**" in texts(at.markdown)
    shown = texts(at.code)
    if initialised == "servers":
        assert "relay_leases" in shown and "FOR SHARE" in shown and "FOR UPDATE" in shown and "SKIP LOCKED" not in shown
        assert "Read now from `relay_leases`: 0 relay(s) hold partitions." in texts(at.caption)  # not started
        # Started, the publisher's relay holds every partition, as the table says; stopped, it gives them back.
        ui.publisher().start()
        _wait_for(lambda: len(_holders()) == 1)
        [(holder, count)] = _holders().items()
        assert f"Read now from `relay_leases`: 1 relay(s) hold partitions: `{holder}` {count}." in texts(
            open_page(PAGE).caption)
        assert count == 32
        assert ui.publisher().stop() and _holders() == {}
    assert "ORDER BY" in shown and "sequence" in shown


def _holders() -> dict[str, int]:
    return ui.run(outbox_health.lease_holders(db=ui.database()))


def _wait_for(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_a_score_and_its_pending_event_are_stored_together(initialised):
    at = click(open_page(PAGE), "outbox_create")
    assert "in one transaction" in texts(at.success) and "pending" in texts(at.success)
    assert "no. 1 of its user" in texts(at.success)
    assert metrics(at)["Created (outbox rows)"] == "1" and metrics(at)["Pending"] == "1"
    assert at.session_state["done_outbox"] is True


def test_the_publisher_started_from_the_page_publishes_and_the_consumer_applies(initialised):
    at = click(open_page(PAGE), "outbox_create")
    assert "Start the publisher to watch it go through." in texts(at.caption)
    at = click(at, "outbox_start")
    assert ui.publisher().running
    # The run that started the publisher watched the event through the pipeline, in a status box that
    # stays, then drew the figures again.
    assert any(box.label.startswith("Your event `") and box.label.endswith("settled") for box in at.status)
    done = steps(at)
    assert [what for what, _ in done][0] == "appended to the stream" and len(done) == 3, done
    assert [seconds for _, seconds in done] == sorted(seconds for _, seconds in done)
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
        assert "wakes on LISTEN/NOTIFY at commit" in shown
        woken = re.search(r"\*\*Publisher running\*\* · woken by NOTIFY (\d+)×", shown)
        assert woken and int(woken.group(1)) >= 1, shown
        assert ui.publisher().snapshot().notify_wakeups == int(woken.group(1))
    else:
        assert "wakes on a poll every" in shown and "woken by NOTIFY" not in shown


def test_a_relay_crash_after_append_delivers_again_the_duplicate_is_dropped_and_the_times_read_in_order(
    initialised
):
    at = click(open_page(PAGE), "outbox_crash")
    assert "Armed" in texts(at.caption)
    at = click(click(at, "outbox_create"), "outbox_start")
    wait_for(lambda: ui.outbox_overview().duplicates == 1 and ui.outbox_overview().pending == 0)
    at.run()
    shown = metrics(at)
    assert (shown["Appended to the stream"], shown["Applied (inbox rows)"], shown["Duplicates dropped"]) == ("2", "1", "1")
    assert ui.publisher().faults.crashes == 1
    done = steps(at)  # no "applied" before the entry it applied was appended
    assert [what for what, _ in done][0] == "appended to the stream" and "appended again" in dict(done), done
    assert [seconds for _, seconds in done] == sorted(seconds for _, seconds in done)
    assert dict(done)["applied by the consumer"] >= dict(done)["appended to the stream"]


def test_broker_down_keeps_events_pending_until_it_returns_and_needs_the_instructor_key(initialised, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", "letmein")
    at = open_page(PAGE)
    assert not [b for b in at.button if b.key in ("outbox_broker_down", "outbox_stop")]
    assert not [t for t in at.toggle if t.key == "outbox_broker_down"]
    at.text_input(key="outbox_fault_key").set_value("letmein").run()
    at.text_input(key="outbox_stop_key").set_value("letmein").run()
    at.toggle(key="outbox_broker_down").set_value(True).run()
    assert "The relay's broker: **down**" in texts(at.caption)
    at = click(click(at, "outbox_create"), "outbox_start")
    wait_for(lambda: ui.publisher().snapshot().retries_scheduled >= 2)
    at.run()
    assert metrics(at)["Pending"] == "1" and metrics(at)["Published"] == "0"
    assert "broker unreachable" in texts(at.sidebar.caption)
    assert ui.run(ui.redis_client().ping())  # everyone else's Redis traffic is unaffected

    at.toggle(key="outbox_broker_down").set_value(False).run()
    wait_for(lambda: ui.outbox_overview().applied == 1, timeout=15)
    at.run()
    assert metrics(at)["Published"] == "1" and metrics(at)["Pending"] == "0"


def test_several_relays_run_from_the_page_one_stopped_show_what_the_stream_and_the_lease_table_hold(
    initialised, monkeypatch
):
    """The page's figures are the stream's and the tables' as the experiment read them: its reads
    (XRANGE and each user's order, the lease table) are recorded on the way."""
    read = {}

    def recording(entries, order):
        read["stream"], read["order"] = entries, order
        return order_faults(entries, order)

    monkeypatch.setattr(relay_race, "order_faults", recording)
    settled, leases = relay_race._settled, relay_race.leases

    async def settled_recorded(*args, **kwargs):
        read["settled"] = await settled(*args, **kwargs)
        return read["settled"]

    async def leases_recorded(db):
        read["leases"] = await leases(db)  # the last read: the take-over, once seen
        return read["leases"]

    monkeypatch.setattr(relay_race, "_settled", settled_recorded)
    monkeypatch.setattr(relay_race, "leases", leases_recorded)
    at = open_page(PAGE)
    at.number_input(key="relays_count").set_value(1)
    at.checkbox(key="relays_stop").check()
    at = click(at, "relays_run")
    assert "Relays: Choose 2 or more to stop one: another must take over." in texts(at.error)
    assert "Inversions" not in metrics(at)
    at.number_input(key="relays_count").set_value(2)
    at.number_input(key="relays_events").set_value(1_000)
    at.number_input(key="relays_users").set_value(40)
    at = click(at, "relays_run")
    assert any(box.label.startswith("2 relay(s) draining") and "done in" in box.label for box in at.status)
    ids = [fields["event_id"] for fields in read["stream"]]
    shown = metrics(at)
    assert shown["Duplicates"] == str(len(ids) - len(set(ids))) and shown["Not appended"] == str(
        len(read["order"]) - len(set(ids)))
    assert shown["Inversions"] == str(order_faults(read["stream"], read["order"])[1]) == "0"
    [table] = [df.value for df in at.dataframe if "published" in df.value.columns]
    assert table["published"].sum() == len(set(ids)) == 1_000
    caption = texts(at.caption)
    assert "2 relay(s), in aggregate order" in caption
    duplicates = int(shown["Duplicates"])
    if duplicates:  # relay 1 died with a batch appended: the stream has it twice
        assert f"The {duplicates:,} duplicate(s): relay 1 appended {duplicates} event(s)" in caption
    if ui.database().backend == "postgresql":
        def held_by(snapshot, relay):
            return tuple(p for p, holder in sorted(snapshot.items()) if holder and holder.startswith(f"relay-{relay}-"))

        assert table["users"].sum() == 40
        assert list(table["partitions"]) == [spans(held_by(read["settled"], 1)), spans(held_by(read["settled"], 2))]
        theirs = held_by(read["settled"], 1)
        assert len(theirs) == PARTITIONS // 2 and set(held_by(read["leases"], 2)) >= set(theirs)  # taken over, as last read
        assert f"holding partitions {spans(theirs)}; relay 2 took {spans(theirs)} at" in caption
    assert not ui.publisher().running  # the lab's publisher was not started or touched


# --- the arc, on the learner's own outbox ---------------------------------------------------


def test_the_problem_is_measured_a_commit_then_a_publish_loses_the_crashed_ones(initialised):
    at = click(open_page(PAGE), "outbox_problem_run")
    assert any(box.label.startswith("Storing 10 scores") and "done in" in box.label for box in at.status)
    assert "**10** scores committed, **8** announced: **2 lost**" in texts(at.markdown)


def test_a_prediction_is_asked_for_then_compared_with_the_measurement(initialised):
    at = click(open_page(PAGE), "outbox_predict_run")
    assert "Enter a prediction first" in texts(at.error) and not at.status
    at.number_input(key="outbox_guess").set_value(20).run()
    at = click(at, "outbox_predict_run")
    assert "Enter a prediction first" not in texts(at.error)
    assert "Measured: **20** applied twice (right)" in texts(at.markdown)


@pytest.mark.parametrize("failure", ["crash", "rollback"])
def test_each_failure_breaks_the_minimal_code_and_not_the_labs(initialised, failure):
    at = open_page(PAGE)
    at.radio(key="outbox_failure").set_value(failure).run()
    at = click(at, "outbox_break_run")
    assert len([box for box in at.status if "done in" in box.label]) == 2  # the minimal code, then the lab's
    [table] = [df.value for df in at.dataframe if "applied twice" in df.value.columns]
    minimal, lab = table.to_dict("records")
    assert (lab["lost"], lab["applied twice"], lab["out of order"]) == (0, 0, 0)
    assert (minimal["applied twice"] if failure == "crash" else minimal["lost"]) == 20
    at.run()  # the result stays until the experiment runs again
    assert [df for df in at.dataframe if "applied twice" in df.value.columns]
    assert at.session_state["key_figures"]["outbox"]
