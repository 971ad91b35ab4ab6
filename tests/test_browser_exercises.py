"""The exercise editor in chromium against `streamlit run app.py`, on both backend pairs: the editor
is Ace with line numbers, Python highlighting and Tab that indents four spaces; a solution typed
into it is graded by "Run checks" (the editor sends its text when the learner leaves it for the
button) and the results are drawn; a reload of the page (a new session, the same URL) brings back
the code in the editor and the results."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

import exercises
from harness.served import CHROMIUM, Learner, app_subprocess_env, launch_browser, served_app

pytestmark = pytest.mark.browser
SECTION, TITLE = "3. Repository Pattern & N+1", "3. The Repository Pattern"
EXERCISE = exercises.get("latest-scores")
TYPED = "# typed in the browser"
GRADED = "All 4 checks passed."
LAST_CHECK = "✓ Statements for 600 users: at most 3: 3 statements for 600 users (at most 3)."


async def the_editor(page):
    """The editor's iframe, once Ace is drawn in it."""
    for _ in range(300):
        frames = [frame for frame in page.frames if "code_editor" in frame.url]
        if frames and await frames[0].locator(".ace_content").count():
            return frames[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no code editor on the page")


async def editor_text(frame) -> str:
    return await frame.evaluate("() => document.querySelector('.ace_editor').env.editor.getValue()")


def graded(text: str) -> str | None:
    """The page's text once it shows the whole result (the summary comes first)."""
    return text if GRADED in text and LAST_CHECK in text else None


async def type_and_run(url: str) -> dict:
    seen: dict = {}
    async with async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
            learner = Learner(page, 1, timeout=180)
            await learner.open(url)
            await learner.go(SECTION, TITLE)
            editor = await the_editor(page)
            await editor.locator(".ace_content").click()
            seen["gutter"] = await editor.locator(".ace_gutter-cell").count()
            seen["keywords"] = await editor.locator(".ace_keyword").count()
            await page.keyboard.press("Control+a")
            await page.keyboard.press("Delete")
            await page.keyboard.press("Tab")
            seen["tab"] = await editor_text(editor)
            await page.keyboard.press("Control+a")
            await page.keyboard.insert_text(EXERCISE.answer_key)  # a paste: Ace adds no indent to pasted lines
            await page.keyboard.press("Control+End")
            await page.keyboard.type(TYPED)  # and typed, key by key
            seen["typed"] = await editor_text(editor)
            await learner.click("Run checks")
            seen["text"] = await learner.wait_for("the results", graded)

            await page.reload()  # a new session, the same URL (its ?learner= token)
            again = Learner(page, 1, timeout=180)
            seen["reloaded_text"] = await again.wait_for("the results after the reload", graded)
            seen["reloaded_code"] = await editor_text(await the_editor(page))
        finally:
            await browser.close()
    return seen


def test_a_solution_typed_into_the_editor_is_graded_and_comes_back_after_a_reload(initialised, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: install it (apt-get install chromium) to run the browser tests")
    env = app_subprocess_env({"REDIS_URL": "fakeredis://"} if initialised == "embedded" else {})
    with served_app(env, tmp_path) as app:
        seen = asyncio.run(type_and_run(app.url))
    assert seen["gutter"] >= len(EXERCISE.stub.splitlines()) // 2 and seen["keywords"] > 0
    assert seen["tab"] == "    "  # Tab indents, with four spaces
    assert seen["typed"] == EXERCISE.answer_key + TYPED
    assert "✓ Statements for 50 users: at most 2: 2 statements for 50 users (at most 2)." in seen["text"]
    assert seen["reloaded_code"] == EXERCISE.answer_key + TYPED
    assert "users: 600 · statements: 3 · at most: 3" in seen["reloaded_text"]
