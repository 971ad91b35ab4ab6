"""What the page tests (AppTest) share: open a page, click, read its text, count rows."""

from __future__ import annotations

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui


def open_page(path: str) -> AppTest:
    """Run the page (path relative to tests/) once; it must render without an exception."""
    at = AppTest.from_file(path, default_timeout=60).run()
    assert not at.exception
    return at


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception
    return at


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def count(model) -> int:
    """Rows of model in the app's database, read now."""

    async def scalar() -> int:
        async with ui.database().sessions() as session:
            return await session.scalar(select(func.count()).select_from(model))

    return ui.run(scalar())


def create_user_button(at: AppTest):
    """Section 1's "Create User" (the form's submit button; the page has other buttons before it)."""
    return next(button for button in at.button if button.label == "Create User")
