"""What a hostile or careless learner can type or send, on both backend pairs: invisible and
control characters are refused with a message and nothing is written; a value the database
itself refuses is named as such, not as an unreachable database; NaN and ±inf sent to any
number input give no exception."""

from __future__ import annotations

import math
import uuid

import pytest
from sqlalchemy.exc import DBAPIError
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

import ui
from harness.served import app_subprocess_env, served_app
from harness.wsclient import StreamlitClient
from source import AIRScore, User
from tests.pagekit import count, create_user_button, texts
from ui import checks

MODELS = "../pages/1_Data_Models.py"
NUMBER_PAGES = ["Data_Models", "DB_Connectivity_and_Pooling", "Repository_Pattern_and_N+1", "Caching_with_Redis",
                "Eventing_Outbox_Pattern", "b_Event_Design_Workbench"]  # Streamlit drops "5" from 5b_...

HIDDEN = {
    "NUL": "\x00",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "word joiner": "\u2060",
    "BOM": "\ufeff",
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
    "escape": "\x1b",
}


def submit(at: AppTest, **typed: str) -> AppTest:
    values = {"new_user_email": f"ok.{uuid.uuid4().hex[:6]}@example.com", "new_user_name": "Ok",
              "new_user_occupation": "", **typed}
    for key, value in values.items():
        at.text_input(key=key).set_value(value)
    create_user_button(at).click().run()
    assert not at.exception
    return at


@pytest.mark.parametrize("field", ["new_user_email", "new_user_name", "new_user_occupation"])
def test_control_and_format_characters_are_refused_and_nothing_is_written(initialised, field):
    at = AppTest.from_file(MODELS, default_timeout=60).run()
    label = {"new_user_email": "email", "new_user_name": "name", "new_user_occupation": "occupation code"}[field]
    for what, ch in HIDDEN.items():
        value = f"ad{ch}a@example.com" if field == "new_user_email" else f"Ad{ch}a"
        at = submit(at, **{field: value})
        shown = texts(at.error)
        assert f"The {label} contains an invisible or control character (U+{ord(ch):04X}" in shown, what
        assert "not reachable" not in shown and not at.success, what
        assert count(User) == 2, what


@pytest.mark.parametrize(("value", "message"), [
    ("\u200b\u200b", "contains an invisible or control character (U+200B, ZERO WIDTH SPACE) at position 1"),
    (" \u2060 ", "contains an invisible or control character (U+2060, WORD JOINER) at position 1"),
    ("\u0301\u0301", "has no visible character"),  # combining accents with nothing to sit on
    ("\u3164\u3164", "has no visible character"),  # Hangul fillers: letters that draw nothing
    ("\u2800", "has no visible character"),  # the blank Braille pattern
])
def test_a_name_or_email_with_nothing_visible_is_refused(initialised, value, message):
    at = AppTest.from_file(MODELS, default_timeout=60).run()
    for field, label in (("new_user_email", "email"), ("new_user_name", "name")):
        at = submit(at, **{field: value})
        assert f"The {label} {message}" in texts(at.error), field
        assert count(User) == 2


def test_a_visible_name_with_accents_and_other_scripts_is_stored(initialised):
    at = submit(AppTest.from_file(MODELS, default_timeout=60).run(), new_user_name="José Ñúñez 李雷 عمر")
    assert not at.error and count(User) == 3


def test_a_value_the_database_refuses_is_reported_as_refused_not_unreachable(initialised):
    async def score_for_nobody():
        async with ui.database().sessions.begin() as session:  # a foreign key the database enforces
            session.add(AIRScore(user_id=str(uuid.uuid4()), occupation_code="X", vr_score=1, hr_score=1,
                                 synergy_score=1, air_score=1, ci_lower=0, ci_upper=2, parameter_version="v"))

    with pytest.raises(DBAPIError) as refused:
        ui.run(score_for_nobody())
    message = ui.error_message(refused.value)
    assert "refused a value in the request" in message and "nothing was written" in message
    assert "not reachable" not in message
    assert count(AIRScore) == 0


@pytest.mark.parametrize("app_env", ["servers"], indirect=True)
def test_a_nul_byte_postgresql_refuses_is_reported_as_a_refused_value(initialised):
    """Validation stops NUL before it is sent; this sends one anyway, as code that skipped
    validation would, to check what the learner would read."""

    async def nul_name():
        async with ui.database().sessions.begin() as session:
            session.add(User(email="nul@example.com", name="A\x00B"))

    with pytest.raises(DBAPIError) as refused:
        ui.run(nul_name())
    message = ui.error_message(refused.value)
    assert "refused a value in the request" in message and "not reachable" not in message
    assert count(User) == 2


def test_nan_and_infinity_into_every_number_input_give_no_exception(initialised, tmp_path):
    """Sent as a crafted client would, over the served app's websocket, to every number input of
    every page that has one (inside forms too: forms only batch what a browser sends)."""
    env = app_subprocess_env({"REDIS_URL": "fakeredis://"} if initialised == "embedded" else {})
    seen = 0
    with served_app(env, tmp_path) as app:
        client = StreamlitClient(app.url)
        try:
            for page in NUMBER_PAGES:
                drawn = client.run(page)
                inputs = [label for label, kind in drawn.kinds.items() if kind == "number_input"]
                assert inputs, page
                for label in inputs:
                    for bad in (math.nan, math.inf, -math.inf):
                        after = client.set_number(drawn, label, bad)
                        assert not after.exceptions, (page, label, bad, after.exceptions)
                        assert "was not finite" in after.text(), (page, label, bad)
                        seen += 1
                    client.values.clear()
        finally:
            client.close()
    # page 1: 1 input, page 2: 9 (the lookups' 3 and the experiment's 6), page 3: 4 (the cohort's 2, the
    # prediction, the workbench's limit), page 4: 7 (the prediction, the comparison's 6), page 5: 4 (the
    # prediction, the relays), page 5b: 2
    assert seen == 3 * 27
    assert "Traceback" not in app.log()


def test_an_error_inside_streamlit_shows_no_details(app_env, tmp_path):
    """client.showErrorDetails = "none": an index a browser never sends makes Streamlit's own radio
    code raise; the page's exception box then names no type, message or line of code."""
    env = app_subprocess_env({"REDIS_URL": "fakeredis://"} if app_env == "embedded" else {})
    with served_app(env, tmp_path) as app:
        client = StreamlitClient(app.url)
        try:
            drawn = client.run("Schema_Migrations")
            radio = checks.MIGRATIONS[0].prompt  # the knowledge check's first radio
            client.values = {drawn.widgets[radio]: WidgetState(id=drawn.widgets[radio], int_value=999)}
            [shown] = client.run().exceptions
        finally:
            client.close()
    assert shown.startswith(": This app has encountered an error. The original error message is redacted")
    assert "TypeError" not in shown and "File " not in shown and ".py" not in shown
    assert "TypeError: 'str' object cannot be interpreted as an integer" in app.log()  # the log keeps it
