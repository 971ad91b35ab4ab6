"""User text drawn in chromium with nothing in it live: a name and an email full of URLs, email
addresses, `:` directives, icons, emoji shortcodes, links, images, HTML and markdown come back on
the page character for character, as no link, image, icon, formula or script, and the browser
requests nothing outside the app (served by `streamlit run`, both backend pairs)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from harness.served import CHROMIUM, Learner, app_subprocess_env, launch_browser, served_app

pytestmark = pytest.mark.browser

HOSTILE = ("https://x.example/a www.x.example ada@x.example :red[red] :material/home: :smile: :+1: "
           "[link](http://x.example) ![img](http://x.example/i.png) <img src=x onerror=alert(1)> "
           "**bold** $x^2$ ~~gone~~ `code` # heading | a | b |")
LIVE = "a, img, svg image, iframe, script, .katex, [data-testid=stIconMaterial], [data-testid=stIconEmoji]"


async def visit(url: str) -> tuple[str, str, int, list[str], list[str]]:
    async with async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            requests, dialogs = [], []
            page.on("request", lambda request: requests.append(request.url))
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), asyncio.ensure_future(dialog.dismiss())))
            learner = Learner(page, 1)
            await learner.open(url)
            await learner.go("1. Data Models", "1. Defining the core data schema")
            await learner.fill("Email", HOSTILE)
            await learner.fill("Name", "Ada")
            await learner.click("Create User")
            main = page.get_by_test_id("stMain")
            # Wait for its text: checked as soon as the run ended, an error box with no text yet was seen now and then.
            await learner.wait_for("the bad email's message", lambda text: "is not a valid" in text,
                                   allowed_errors=("is not a valid",))
            error = await main.get_by_test_id("stAlertContentError").inner_text()
            await learner.fill("Email", f"inert.{uuid.uuid4().hex[:6]}@example.com")
            await learner.fill("Name", HOSTILE)
            await learner.click("Create User")
            success = await learner.wait_for(
                "the created user", lambda text: "Created " in text and " with ID " in text)
            await asyncio.sleep(2)  # Streamlit loads its emoji and formula plugins lazily: give them time
            success = await main.get_by_test_id("stAlertContentSuccess").inner_text()
            alerts = main.locator("[data-testid=stAlertContentError], [data-testid=stAlertContentSuccess]")
            live = sum([await alert.locator(LIVE).count() for alert in await alerts.all()])
            return error, success, live, requests, dialogs
        finally:
            await browser.close()


def test_user_text_renders_inert_in_chromium(initialised, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: install it (apt-get install chromium) to run the browser tests")
    env = app_subprocess_env({"REDIS_URL": "fakeredis://"} if initialised == "embedded" else {})
    with served_app(env, tmp_path) as app:
        error, success, live, requests, dialogs = asyncio.run(visit(app.url))
    assert error == f"'{HOSTILE.lower()}' is not a valid email address."
    assert success.startswith(f"Created {HOSTILE} with ID ")
    assert live == 0
    assert dialogs == []
    assert [url for url in requests if not url.startswith(app.url)] == []
