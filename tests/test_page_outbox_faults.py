"""Section 5's fault figures through AppTest on both backend pairs: a poison entry appended from
the page is dead-lettered after the consumer's deliveries and shown with its error, the good
event beside it is applied, and the dead letter replays from the page."""

from __future__ import annotations

import ui
from labbench import outbox_health
from tests.pagekit import click, open_page, texts
from tests.test_page_outbox import PAGE, metrics, wait_for


def health():
    return ui.run(outbox_health.consumer_health(redis_client=ui.inspect_client(), stream=ui.publisher().stream))


def test_a_poison_entry_from_the_page_is_dead_lettered_and_shown_and_replays(initialised):
    at = open_page(PAGE)
    at.selectbox(key="outbox_poison_kind").set_value("no score_id").run()
    at = click(at, "outbox_poison")
    assert "dead-letters it after 3 deliveries" in texts(at.success)
    at = click(click(at, "outbox_create"), "outbox_start")
    settings = ui.publisher().consumer_settings  # the app's: claimed again after 5 s idle, 3 deliveries
    wait_for(lambda: health().dead_letter_count == 1 and ui.outbox_overview().applied == 1,
             timeout=settings.claim_min_idle * settings.max_deliveries + 15)
    at.run()
    shown = metrics(at)
    assert (shown["Dead letters"], shown["Unacknowledged (pending-entries list)"]) == ("1", "0")
    assert shown["Applied (inbox rows)"] == "1"  # the good event beside it
    letters = [df.value for df in at.dataframe if "dead letter" in df.value.columns]
    assert len(letters) == 1 and "score_id missing" in letters[0]["error"].iloc[0]
    assert letters[0]["deliveries"].iloc[0] == "3"
    assert "not applied" in texts(at.warning) and "missing or not an ID" in texts(at.warning)
    assert ui.publisher().snapshot().claimed >= 2

    at.selectbox(key="outbox_dead_letter").set_value(letters[0]["dead letter"].iloc[0]).run()
    at = click(at, "outbox_replay")
    assert "Appended again as" in texts(at.success)
    assert health().dead_letter_count == 0  # and, unfixed, it will be dead-lettered again
    wait_for(lambda: health().dead_letter_count == 1, timeout=settings.claim_min_idle * settings.max_deliveries + 15)
    assert ui.publisher().stop()
