"""Domain errors: each carries a message a learner can read as it is."""

from __future__ import annotations

import math
import re
import unicodedata
import uuid

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


class LabError(Exception):
    """An error whose message is safe and useful to show on the page."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(LabError):
    pass


class DuplicateEmail(LabError):
    def __init__(self, email: str) -> None:
        super().__init__(f"A user with the email {email} already exists.", field="email")


class NotFound(LabError):
    pass


# Control characters (NUL, newlines, escapes), format characters (bidi overrides and isolates such
# as U+202E, zero-width spaces and joiners, U+FEFF) and lone surrogates: invisible or reordering
# text, or refused by PostgreSQL (NUL). `strip()` keeps every one of them.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs"}
# A visible character: a letter, mark-carrying letter, digit, punctuation or symbol ...
VISIBLE_CATEGORIES = ("L", "N", "P", "S")
# ... except the letters and the symbol that draw nothing: the Hangul fillers and the blank
# Braille pattern, often used to make a name look empty.
BLANK_LOOKING = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def check_visible(value: str, *, field: str, label: str) -> str:
    """InvalidInput for text with a control or format character, or with nothing visible."""
    for position, ch in enumerate(value, start=1):
        if unicodedata.category(ch) in HIDDEN_CATEGORIES:
            name = unicodedata.name(ch, "a control character")
            raise InvalidInput(
                f"The {label} contains an invisible or control character (U+{ord(ch):04X}, {name}) at "
                f"position {position}: type it again without it.", field=field,
            )
    if not any(unicodedata.category(ch).startswith(VISIBLE_CATEGORIES) and ch not in BLANK_LOOKING for ch in value):
        raise InvalidInput(f"The {label} has no visible character.", field=field)
    return value


def clean_email(email: str | None) -> str:
    value = (email or "").strip().lower()
    if not value:
        raise InvalidInput("Enter an email address.", field="email")
    check_visible(value, field="email", label="email")
    if len(value) > 255:
        raise InvalidInput("The email is longer than 255 characters.", field="email")
    if not EMAIL_PATTERN.match(value):
        raise InvalidInput(f"'{value}' is not a valid email address.", field="email")
    return value


def clean_text(value: str | None, *, field: str, label: str, max_length: int, required: bool) -> str | None:
    value = (value or "").strip()
    if not value:
        if required:
            raise InvalidInput(f"Enter a {label}.", field=field)
        return None
    check_visible(value, field=field, label=label)
    if len(value) > max_length:
        raise InvalidInput(
            f"The {label} is {len(value)} characters long; at most {max_length} fit.", field=field
        )
    return value


def clean_years(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or not 0 <= value <= 80:
        raise InvalidInput("Years of experience must be between 0 and 80.", field="years_experience")
    return float(value)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def clean_id(value: str | None, *, label: str = "ID") -> str:
    """A canonical UUID string, or InvalidInput for anything that is not one."""
    if isinstance(value, str) and _CANONICAL_UUID(value):
        return value  # already canonical (every ID the lab hands out): no parsing per read
    text = (value or "").strip()
    if not text:
        raise InvalidInput(f"Enter a {label}.", field="id")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidInput(f"'{text[:60]}' is not a valid {label} (expected a UUID).", field="id") from None
