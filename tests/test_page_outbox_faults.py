"""Section 5's fault figures through AppTest on both backend pairs: a poison entry appended from
the page is dead-lettered after the consumer's deliveries and shown with its error, the good
event beside it is applied, and the dead letter replays from the page."""

from __future__ import annotations

import time

from sqlalchemy import select

import ui
from labbench import outbox_health
from source import DomainEvent
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
    assert "not applied" in texts(at.warning) and "score\\_id missing" in texts(at.warning)
    assert ui.publisher().snapshot().claimed >= 2

    at.selectbox(key="outbox_dead_letter").set_value(letters[0]["dead letter"].iloc[0]).run()
    at = click(at, "outbox_replay")
    assert "Appended again as" in texts(at.success)
    assert health().dead_letter_count == 0  # and, unfixed, it will be dead-lettered again
    wait_for(lambda: health().dead_letter_count == 1, timeout=settings.claim_min_idle * settings.max_deliveries + 15)
    assert ui.publisher().stop()


def test_a_parked_event_shows_its_user_held_back_until_discarded(initialised):
    at = click(click(open_page(PAGE), "outbox_create"), "outbox_create")  # two events of one user

    async def park_the_first() -> str:  # as the relay leaves an event the broker kept refusing
        async with ui.database().sessions.begin() as session:
            first = (await session.scalars(select(DomainEvent).order_by(DomainEvent.created_at).limit(1))).one()
            first.status, first.attempts, first.last_error = "failed", 6, "refused: ResponseError: OOM"
            return first.id

    first = ui.run(park_the_first())
    at = click(at, "outbox_start")
    wait_for(lambda: ui.publisher().snapshot().batches == 0 and ui.outbox_overview().pending == 1, timeout=5)
    time.sleep(1.0)  # the relay has looked: the second event stays pending behind the first
    at.run()
    assert metrics(at)["Pending"] == "1" and metrics(at)["Published"] == "0"
    held = [df.value for df in at.dataframe if "blocking event" in df.value.columns]
    assert len(held) == 1 and held[0]["blocking event"].iloc[0] == f"{first[:8]} (no. 1)"
    assert held[0]["events waiting behind it"].iloc[0] == 1 and "parked as failed" in held[0]["why"].iloc[0]

    at = click(at, "outbox_discard")
    assert "1 failed event(s) discarded" in texts(at.success)
    wait_for(lambda: ui.outbox_overview().applied == 1, timeout=15)
    at.run()
    assert metrics(at)["Published"] == "1" and metrics(at)["Failed"] == "0"
    assert not [df for df in at.dataframe if "blocking event" in df.value.columns]
    assert ui.publisher().stop()


def test_the_page_reports_the_servers_eviction_policy_or_that_it_cannot_tell(initialised):
    at = open_page(PAGE)
    if initialised == "embedded":
        assert "does not answer `CONFIG GET`" in texts(at.caption)
    else:
        told = ui.run(ui.inspect_client().config_get("*"))
        policy, limit = told["maxmemory-policy"], int(told["maxmemory"])
        shown = texts(at.caption) + texts(at.warning)
        assert f"`maxmemory-policy` **{policy}**" in shown and f'`save` "{told["save"]}"' in shown
        assert ("evicts any key" in texts(at.warning)) == (policy.startswith("allkeys") and limit > 0)
        assert ("With no `maxmemory`, Redis neither evicts" in shown) == (limit == 0)
