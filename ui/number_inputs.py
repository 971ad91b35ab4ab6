"""Number inputs that a crafted client cannot crash with NaN or ±inf.

A browser's number input sends finite numbers, but any client may put NaN or ±inf into the
widget state it sends over its websocket. Streamlit 1.67's number_input deserializer then calls
`int(value)` for an integer input, which raises (ValueError for NaN, OverflowError for ±inf) inside
Streamlit's widget code, and the page shows an exception; a float input already falls back to its
default, silently. `install()` wraps that deserializer once per process: a non-finite value becomes
the widget's default, for integer and float inputs alike, and the page shows a toast saying so.
"""

from __future__ import annotations

import math
import threading

import streamlit as st
from streamlit.elements.widgets.number_input import NumberInputSerde

_installed = threading.Lock()


def _describe(number) -> str:
    return "none" if number is None else f"{number:g}"


def install() -> None:
    with _installed:
        original = NumberInputSerde.deserialize
        if getattr(original, "lab_tolerates_non_finite", False):
            return

        def deserialize(self: NumberInputSerde, ui_value):
            if isinstance(ui_value, float) and not math.isfinite(ui_value):
                st.toast(
                    f"A number sent to this page was not finite ({ui_value}): the input for values from "
                    f"{_describe(self.min_value)} to {_describe(self.max_value)} is back to its default "
                    f"({_describe(self.value)}).",
                    duration="long",
                )
                ui_value = None  # Streamlit's deserializer then returns the widget's default
            return original(self, ui_value)

        deserialize.lab_tolerates_non_finite = True  # type: ignore[attr-defined]
        NumberInputSerde.deserialize = deserialize  # type: ignore[method-assign]
