"""Forms that report every bad field at once, each message next to its widget.

    form = forms.Form("create_user_form")
    with st.form(form.key):
        email = st.text_input("Email", key="new_user_email")
        form.slot("email")                      # the message for "email" is drawn here
        years = st.number_input("Years", value=None, key="new_user_years")  # no min/max: see below
        form.slot("years_experience")
        submitted = st.form_submit_button("Create User")
    if submitted:
        form.start()                            # a new submission: the old messages go
        email = form.check("email", clean_email, email)
        years = form.within("years_experience", years, "Years of experience", 0, 80)
        if form.ok:
            with form.action():                 # a LabError naming a field lands by that field
                ...

Messages stay (in session state) until the form is submitted again, so a fixed field loses its
message at the next submission and the others keep theirs; opening another page drops them. Number inputs take no min_value or
max_value: a browser refuses to submit a form holding a number outside them, silently, so the range
is checked here instead and an out-of-range value gets a message like any other bad value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import streamlit as st

import ui
from source.errors import InvalidInput, LabError
from ui import widgets

T = TypeVar("T")


class Form:
    def __init__(self, key: str) -> None:
        self.key = key
        self._slots: dict[str, Any] = {}

    @property
    def errors(self) -> dict[str, str]:
        """The messages of the last submission, by field."""
        return st.session_state.setdefault(f"{self.key}{widgets.FORM_ERRORS}", {})

    @property
    def ok(self) -> bool:
        return not self.errors

    def slot(self, field: str, where: Any = None) -> None:
        """The place next to a widget where its message goes (drawn now if it has one)."""
        self._slots[field] = slot = (where or st).empty()
        if field in self.errors:
            slot.error(widgets.escape_markdown(self.errors[field]))

    def start(self) -> None:
        """A new submission: every old message goes."""
        self.errors.clear()
        for slot in self._slots.values():
            slot.empty()

    def fail(self, field: str, message: str) -> None:
        """Report `message` by the field's widget (the first message per field is kept)."""
        if field in self.errors:
            return
        self.errors[field] = message
        where = self._slots.get(field)
        (where or st).error(widgets.escape_markdown(message))

    def check(self, field: str, clean: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | None:
        """clean(*args, **kwargs), or None with its InvalidInput reported by the field's widget."""
        try:
            return clean(*args, **kwargs)
        except InvalidInput as bad:
            self.fail(field, bad.message)
            return None

    def within(self, field: str, value: float | None, label: str, low: float, high: float, *,
               whole: bool = False, required: bool = True) -> float | None:
        """The value if it lies in [low, high] (and is whole, if asked); else a message and None."""
        if value is None:
            if required:
                self.fail(field, f"{label}: enter a number from {low:g} to {high:g}.")
            return None
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not finite or not low <= value <= high or (whole and value != int(value)):
            kind = "a whole number" if whole else "a number"
            self.fail(field, f"{label} must be {kind} from {low:g} to {high:g}; you entered {value:g}."
                      if finite else f"{label} must be {kind} from {low:g} to {high:g}.")
            return None
        return int(value) if whole else value

    @contextmanager
    def action(self) -> Iterator[None]:
        """Run the form's action: a LabError that names one of this form's fields is reported by
        that field (and kept like the others); anything else as ui.errors_shown shows it."""
        with ui.errors_shown():
            try:
                yield
            except LabError as refused:
                if refused.field not in self._slots:
                    raise
                self.fail(refused.field, refused.message)
