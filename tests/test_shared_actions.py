"""One policy for shared actions: with LAB_INSTRUCTOR_KEY set, every action that changes what
other learners see or get needs the key (schema steps, Initialize when it would migrate, the
publisher's start and stop, broker faults, the relay crash, retrying failed events, reset), and a
learner's own experiments stay open. Wrong keys back off per session and per address."""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from streamlit.testing.v1 import AppTest

import ui
from labbench import migrations
from runtime import keyguard
from source import User, UserRepository
from tests.pagekit import click, count, open_page, texts

KEY = "letmein-instructor"
POOLING = "../pages/2_DB_Connectivity_and_Pooling.py"
OUTBOX = "../pages/5_Eventing_Outbox_Pattern.py"
SCHEMA = "../pages/6_Schema_Migrations.py"


@pytest.fixture
def keyed(initialised, monkeypatch):
    monkeypatch.setenv("LAB_INSTRUCTOR_KEY", KEY)
    yield initialised
    ui.publisher().stop()


def buttons(at: AppTest) -> set[str]:
    return {b.key for b in at.button}


def unlock(at: AppTest, key_input: str) -> AppTest:
    at.text_input(key=key_input).set_value(KEY).run()
    assert not at.exception
    return at


def revision() -> str | None:
    return ui.run(ui.database().current_revision())


def test_initialize_is_open_at_head_and_needs_the_key_when_it_would_migrate(keyed):
    head = migrations.revision_history()[-1].revision
    at = open_page(POOLING)
    assert "init_db" in buttons(at) and "init_key" not in {t.key for t in at.text_input}

    ui.run(migrations.step(ui.database(), direction="down"))  # the instructor stepped the schema back
    ui.backend_status.clear()
    at = open_page(POOLING)
    assert "init_db" not in buttons(at)
    assert "Migrating the schema changes the lab for everyone: it needs the instructor key." in texts(at.caption)
    at = click(unlock(at, "init_key"), "init_db")
    assert revision() == head


def test_reset_is_refused_without_the_key_and_done_with_it(keyed):
    async def add_learner():
        async with ui.database().sessions.begin() as session:
            await UserRepository(session).create(email="learner@example.com", name="Learner")

    ui.run(add_learner())
    at = open_page(POOLING)
    assert not buttons(at) & {"reset_lab"}
    at = unlock(at, "reset_key")
    at.checkbox(key="reset_confirm").check().run()
    at = click(at, "reset_lab")
    assert re.search(r"Lab data reset: deleted .*\b1 users\b", texts(at.success))
    assert count(User) == 2


def test_the_publisher_is_started_and_stopped_only_with_the_key(keyed):
    at = open_page(OUTBOX)
    assert not buttons(at) & {"outbox_start", "outbox_stop"}
    at = click(unlock(at, "outbox_stop_key"), "outbox_start")
    assert ui.publisher().running
    at = click(at, "outbox_stop")
    assert not ui.publisher().running


def test_a_learner_is_told_the_instructor_starts_the_publisher(keyed):
    at = click(open_page(OUTBOX), "outbox_create")
    assert "It goes through once the instructor starts the publisher." in texts(at.caption)


def test_faults_crash_and_retry_need_the_key(keyed):
    shared = {"outbox_crash", "outbox_retry", "outbox_discard", "outbox_poison", "outbox_replay"}
    switches = {"outbox_broker_down", "outbox_broker_refusing", "outbox_broker_hung"}
    at = open_page(OUTBOX)
    assert not buttons(at) & shared
    assert not {t.key for t in at.toggle} & switches
    assert "outbox_create" in buttons(at)  # the learner's own score and event stay open
    at = unlock(at, "outbox_fault_key")
    assert shared <= buttons(at)
    assert switches <= {t.key for t in at.toggle}
    at = click(at, "outbox_crash")
    assert ui.publisher().faults.crash_armed
    at = click(at, "outbox_retry")
    assert "0 failed event(s) are pending again." in texts(at.success)
    at.toggle(key="outbox_broker_down").set_value(True).run()
    assert ui.publisher().faults.broker_down
    at.toggle(key="outbox_broker_down").set_value(False).run()
    assert not ui.publisher().faults.broker_down


def test_schema_steps_need_the_key(keyed):
    at = open_page(SCHEMA)
    assert not buttons(at) & {"upgrade_step", "downgrade_step"}
    before = revision()
    at = click(unlock(at, "migrate_key"), "downgrade_step")
    assert revision() != before
    at = click(at, "upgrade_step")
    assert revision() == before


def test_without_a_key_the_shared_actions_say_they_are_open(initialised, monkeypatch):
    monkeypatch.delenv("LAB_INSTRUCTOR_KEY", raising=False)
    at = open_page(OUTBOX)
    assert {"outbox_start", "outbox_crash", "outbox_retry"} <= buttons(at)
    assert "outbox_broker_down" in {t.key for t in at.toggle}
    assert "No LAB_INSTRUCTOR_KEY is set, so anyone may do it" in texts(at.caption)


# --- the key's back-off --------------------------------------------------------------------


def test_back_off_doubles_per_wrong_key_and_is_capped():
    assert [keyguard.back_off_seconds(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert keyguard.record_failure("x", "s1", "10.0.0.1", now=100.0) == 1
    assert keyguard.record_failure("x", "s1", "10.0.0.1", now=101.0) == 2
    assert keyguard.wait_seconds("s1", "10.0.0.1", now=102.0) == 1.0
    # Another session from the same address waits too; the same session from another address too.
    assert keyguard.wait_seconds("s2", "10.0.0.1", now=102.0) == 1.0
    assert keyguard.wait_seconds("s1", "10.0.0.2", now=102.0) == 1.0
    assert keyguard.wait_seconds("s2", "10.0.0.2", now=102.0) == 0.0
    assert keyguard.wait_seconds("s1", "10.0.0.1", now=103.0) == 0.0
    keyguard.record_success("s1", "10.0.0.1")
    assert keyguard.record_failure("x", "s1", "10.0.0.1", now=104.0) == 1


def test_guesses_sent_at_once_from_one_address_compare_one_key():
    """Twenty sessions of one address guess at the same moment: the back-off check, the comparison
    and the record are one step, so one key is compared and the other nineteen wait."""
    compared, start = [], threading.Barrier(20)

    def wrong() -> bool:
        compared.append(1)
        time.sleep(0.02)  # a slow comparison widens the window a check-then-record race would use
        return False

    def guess(n: int) -> keyguard.Verdict:
        start.wait()
        return keyguard.check("x", f"session-{n}", "10.0.0.9", wrong)

    with ThreadPoolExecutor(20) as pool:
        verdicts = list(pool.map(guess, range(20)))
    assert len(compared) == 1
    assert sum(v.checked for v in verdicts) == 1 and not any(v.right for v in verdicts)
    guesser = next(n for n, v in enumerate(verdicts) if v.checked)
    assert keyguard.check("x", f"session-{guesser}", "10.0.0.10", lambda: True).checked is False  # it waits elsewhere too


class Records(logging.Handler):
    """On the key guard's own logger: section 6's Alembic logging set-up replaces the root
    logger's handlers (pytest's caplog among them) while the page runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def key_log():
    handler = Records()
    logging.getLogger("lab2.instructor_key").addHandler(handler)
    yield handler.records
    logging.getLogger("lab2.instructor_key").removeHandler(handler)


def test_a_wrong_key_blocks_the_next_guess_from_this_session_and_address_and_is_logged_without_the_key(
    keyed, key_log
):
    at = open_page(SCHEMA)
    at.text_input(key="migrate_key").set_value("guess-one").run()
    assert "That is not the instructor key. The next key is checked in 1 s at the earliest." in texts(at.error)
    assert not buttons(at) & {"upgrade_step", "downgrade_step"}
    at.run()  # the same wrong value again at a rerun is not a new attempt
    assert len(key_log) == 1
    # The right key within the back-off is not even checked, from this session...
    at.text_input(key="migrate_key").set_value(KEY).run()
    assert "Too many wrong instructor keys" in texts(at.error)
    assert not buttons(at) & {"upgrade_step", "downgrade_step"}
    # ...nor from a fresh session state (AppTest gives every run the same session ID and no address,
    # so the per-address half is shown by test_back_off_doubles_per_wrong_key_and_is_capped).
    other = open_page(SCHEMA)
    other.text_input(key="migrate_key").set_value(KEY).run()
    assert "Too many wrong instructor keys" in texts(other.error)
    [record] = key_log
    assert "guess-one" not in record.getMessage() and KEY not in record.getMessage()
    assert "'Changing the schema'" in record.getMessage() and "address local" in record.getMessage()


def test_another_tabs_rerun_leaves_a_fault_switch_as_the_instructor_set_it(keyed):
    first, second = (unlock(open_page(OUTBOX), "outbox_fault_key") for _ in range(2))
    first.toggle(key="outbox_broker_refusing").set_value(True).run()
    assert ui.publisher().faults.broker_refusing
    second.run()  # drawn before the switch changed, this tab clicks nothing
    assert ui.publisher().faults.broker_refusing
    assert second.toggle(key="outbox_broker_refusing").value
    second.toggle(key="outbox_broker_refusing").set_value(False).run()
    assert not ui.publisher().faults.broker_refusing
    first.run()
    assert not ui.publisher().faults.broker_refusing
