"""A learner is a row, not a tab, in chromium against `streamlit run app.py` on both backend
pairs: a learner creates a user, answers a quiz and gets a progress mark; a reload, and a restart
of the server on the same database, bring all of it back under the URL's token; a second learner
sees none of it; a forged or unknown token in the URL gets a fresh learner and a new token."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import async_playwright

from harness.served import CHROMIUM, Learner, app_subprocess_env, launch_browser, served_app
from runtime import learners
from ui import checks

pytestmark = pytest.mark.browser
TITLE = "1. Defining the core data schema"
RIGHT = [q.answer for q in checks.MODELS]
CHOSEN = RIGHT[:-1] + [(RIGHT[-1] + 1) % 4]  # the last one wrong
WRONG = ("Question 3: not quite.",)  # its feedback is an error element


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("learner", [""])[0]


def radios(learner: Learner):
    """The knowledge check's radio groups (section 1 also asks for a prediction with one, outside it)."""
    quiz = learner.page.get_by_test_id("stMain").get_by_test_id("stForm").filter(
        has=learner.page.get_by_role("button", name="Check answers"))
    return quiz.get_by_role("radiogroup")


async def chosen(learner: Learner) -> list[int | None]:
    picked = []
    for q in range(len(RIGHT)):
        options = radios(learner).nth(q).get_by_role("radio")
        states = [await options.nth(i).is_checked() for i in range(await options.count())]
        picked.append(states.index(True) if True in states else None)
    return picked


async def first_visit(page, url: str) -> tuple[Learner, str]:
    """Open the app, go to section 1; returns the learner and their token from the address bar."""
    learner = Learner(page, 1)
    await learner.open(url)
    await learner.go("1. Data Models", TITLE)
    return learner, token_of(page.url)


async def reopened(page, url: str) -> tuple[Learner, str, str, list[int | None]]:
    """A visit of `url` (a reload or a bookmark): the learner, token, page text and quiz choices."""
    learner = Learner(page, 1)
    await page.goto(url)
    await learner.wait_for("the page after the visit", lambda t: TITLE in t, allowed_errors=WRONG)
    await learner.wait_for("the quiz", lambda t: "Check your understanding" in t, allowed_errors=WRONG)
    await asyncio.sleep(0.5)  # the radios are drawn with the rest of the run
    return learner, token_of(page.url), await learner.text(), await chosen(learner)


async def do_things(url: str, tmp: dict) -> None:
    async with async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            page = await (await browser.new_context()).new_page()
            learner, token = await first_visit(page, url)
            assert learners.token_hash(token), f"no learner token in {page.url}"
            await learner.fill("Email", f"resume.{uuid.uuid4().hex[:6]}@example.com")
            await learner.fill("Name", "Resuming Ada")
            await learner.click("Create User")
            created = await learner.wait_for("the created user", lambda t: t if "Last created user ID:" in t else None)
            tmp["user_id"] = created.split("Last created user ID:")[1].split()[0]
            for q, choice in enumerate(CHOSEN):
                await radios(learner).nth(q).locator("label").nth(choice).click()
            await learner.click("Check answers")
            await learner.wait_for("the quiz's feedback", lambda t: "2 of 3 right." in t, allowed_errors=WRONG)
            tmp["url"], tmp["token"] = page.url, token

            # a reload: a new Streamlit session, the same URL
            again, token_after, text, picked = await reopened(page, page.url)
            tmp["reload"] = (token_after, text, picked, await again.sidebar())
        finally:
            await browser.close()


async def visit_bookmark(url: str) -> tuple:
    async with async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            page = await (await browser.new_context()).new_page()
            learner, token, text, picked = await reopened(page, url)
            return token, text, picked, await learner.sidebar()
        finally:
            await browser.close()


async def strangers(url: str, real_token: str) -> list[tuple[str, str, str]]:
    """A second learner, then visits with an unknown, a malformed and a truncated token: each one's
    token after the visit, its section 1 text and its sidebar."""
    seen = []
    async with async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            for given in ("", learners.new_token(), "not-a-token", real_token[:-1]):
                page = await (await browser.new_context()).new_page()
                learner = Learner(page, 2)
                await learner.open(f"{url}/?learner={given}" if given else url)
                await learner.go("1. Data Models", TITLE)
                await learner.wait_for("the quiz", lambda t: "Check your understanding" in t)
                seen.append((token_of(page.url), await learner.text(), await learner.sidebar()))
        finally:
            await browser.close()
    return seen


def test_a_reload_and_a_restart_resume_a_learner_and_no_one_else_gets_their_data(initialised, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: install it (apt-get install chromium) to run the browser tests")
    env = app_subprocess_env({"REDIS_URL": "fakeredis://"} if initialised == "embedded" else {})
    made: dict = {}
    with served_app(env, tmp_path) as app:
        asyncio.run(do_things(app.url, made))
        others = asyncio.run(strangers(app.url, made["token"]))
    token, user_id = made["token"], made["user_id"]
    token_after, text, picked, sidebar = made["reload"]
    assert token_after == token
    assert f"Last created user ID: {user_id}" in text and "2 of 3 right." in text
    assert "Question 3: not quite." in text and picked == CHOSEN
    assert "◐ 1. Data Models" in sidebar  # the key action done, the check not passed

    with served_app(env, tmp_path) as restarted:  # a new server process on the same database
        bookmark = made["url"].replace(made["url"].split("/")[2], restarted.url.split("/")[2], 1)
        token_after, text, picked, sidebar = asyncio.run(visit_bookmark(bookmark))
    assert token_after == token
    assert f"Last created user ID: {user_id}" in text and "2 of 3 right." in text and picked == CHOSEN
    assert "◐ 1. Data Models" in sidebar

    assert len({seen_token for seen_token, _, _ in others} | {token}) == len(others) + 1  # all new tokens
    for seen_token, text, sidebar in others:
        assert learners.token_hash(seen_token)
        assert user_id not in text and "right." not in text and "not quite" not in text
        assert "○ 1. Data Models" in sidebar and "◐" not in sidebar.split("✓ key action")[0]
