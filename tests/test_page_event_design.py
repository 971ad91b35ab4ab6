"""Section 5b through AppTest on both backend pairs, with the default choices: the table definition
follows the choices, each experiment's figures come from its run, and the knowledge check's
feedback cites them."""

from __future__ import annotations

import re

from streamlit.testing.v1 import AppTest

import ui
from labbench import event_table
from tests.pagekit import click, open_page, texts
from ui import checks
from ui.views import event_design_views as views

PAGE = "../pages/5b_Event_Design_Workbench.py"


def codes(at: AppTest) -> list[str]:
    return [c.value.strip() for c in at.code]


def frames(at: AppTest) -> list[list[dict]]:
    return [f.value.to_dict("records") for f in at.dataframe]


def answer(at: AppTest, choices: list[int]) -> AppTest:
    for number, choice in enumerate(choices):
        at.radio(key=f"check_event_design_{number}").set_value(choice)
    return at.button(key="FormSubmitter:check_form_event_design-Check answers").click().run()


def test_the_table_definition_follows_the_choices(app_env):
    at = open_page(PAGE)
    backend = ui.database().backend
    default = event_table.Design()
    assert event_table.model_code(default).strip() in codes(at)
    assert event_table.alembic_ddl(default, backend).strip() in codes(at)
    at.radio(key="evd_finish").set_value("Delete the row").run()
    at.checkbox(key="evd_versioned").uncheck().run()
    changed = event_table.Design(status_column=False, versioned=False)
    assert event_table.alembic_ddl(changed, backend).strip() in codes(at)
    assert not any("status VARCHAR" in code or "schema_version" in code for code in codes(at))
    wake = at.radio(key="evd_wake")
    assert list(wake.options) == (["Polling", "LISTEN/NOTIFY"] if backend == "postgresql" else ["Polling"])
    # Answered before anything was measured, the feedback says so instead of citing figures.
    at = answer(at, [q.answer for q in checks.EVENT_DESIGN])
    feedback = texts(at.success)
    assert feedback.count(views.NOT_MEASURED) == len(checks.EVENT_DESIGN) and "{" not in feedback


def test_the_default_run_shows_each_choice_measured_and_the_check_cites_it(app_env):
    at = open_page(PAGE)
    before = texts(at.markdown)
    assert "pairs out of commit order" not in str(frames(at))
    assert "○ 5b. Event Table Design (Create)" in texts(at.sidebar.caption)
    at = click(at, "evd_run")
    assert at.session_state["done_event_design"] is True
    assert any(box.label.startswith("Running your design's workload: done in") for box in at.status)
    tables = frames(at)
    retention, ordering = tables[0], tables[1]
    assert [row["rows left"] for row in retention] == [20, 0]
    assert [row["published events still listed"] for row in retention] == [20, 0]
    assert retention[0]["design"] == "status column (your choice)"
    by_time, by_sequence = (row["pairs out of commit order"] for row in ordering)
    assert by_time > 0 and by_sequence == 0
    versioning, wake = tables[3], tables[4]
    assert [row["rejected"] for row in versioning] == [0, 5]
    assert [row["relay"].split(" ")[0] for row in wake] == (
        ["polling", "LISTEN/NOTIFY"] if ui.database().backend == "postgresql" else ["polling"])
    assert all(row["appended"] == 5 for row in wake)
    assert before != texts(at.markdown)

    at = click(at, "evd_pubsub")
    shown = texts(at.markdown)
    assert "Sent while away: **5** · lost by Pub/Sub: **5** · lost by the stream: **0**" in shown
    at = click(at, "evd_crash")
    assert any(box.label.startswith("Storing scores four ways") and "done in" in box.label for box in at.status)
    crash = {row["strategy"]: (row["lost events"], row["phantom events"], row["entries appended again"])
             for row in frames(at)[-1]}
    assert crash == {"dual write": (0, 2, 0), "publish after commit": (2, 0, 0), "outbox": (0, 0, 0),
                     "outbox, relay crashes": (0, 0, 10)}

    at = answer(at, [q.answer for q in checks.EVENT_DESIGN])
    feedback = texts(at.success)
    assert feedback.count("right.") == len(checks.EVENT_DESIGN)
    # The sidebar is drawn before the check is marked, as on every page: the next run shows it.
    assert "✓ 5b. Event Table Design (Create)" in texts(at.run().sidebar.caption)
    assert f"ordering 40 events by `created_at` put {by_time} pairs out of commit order" in feedback
    assert "Pub/Sub lost 5, the stream lost 0" in feedback
    assert "dual write announced 2 phantom scores, publish-after-commit lost 2 events, the outbox lost 0" in feedback
    assert "it lost 0 and appended 10 entries again" in feedback
    assert views.NOT_MEASURED not in feedback and "{" not in feedback
    assert "found the request's 3 events and the causation ids their order; without them, 0." in feedback
    assert re.search(r"polling sent \d+\.\d\d queries per idle second", feedback)
