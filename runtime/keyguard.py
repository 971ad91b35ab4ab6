"""Back-off for wrong instructor keys, per browser session and per client address.

After the n-th wrong key in a row from a session or an address, no key from it is checked for
BASE_S * 2**(n-1) seconds (at most MAX_S). The state is process-wide, in this module, so that no
client message (a cache clear, a new session) resets it; a right key clears it for that session
and that address. Failed attempts are logged with the action, session and address, never the key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

BASE_S = 1.0
MAX_S = 60.0
log = logging.getLogger("lab2.instructor_key")


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


_lock = threading.RLock()  # re-entrant: check() holds it around the calls below
_failures: dict[str, _Failures] = {}


def back_off_seconds(count: int) -> float:
    """How long a session or address waits after its count-th wrong key in a row."""
    return min(BASE_S * 2 ** (count - 1), MAX_S) if count > 0 else 0.0


def _identities(session_id: str, address: str | None) -> tuple[str, str]:
    return f"session:{session_id}", f"address:{address or 'local'}"


def wait_seconds(session_id: str, address: str | None, *, now: float | None = None) -> float:
    """Seconds until a key from this session and address is checked again (0: it is checked now)."""
    now = time.monotonic() if now is None else now
    with _lock:
        return max((max(0.0, f.blocked_until - now) for who in _identities(session_id, address)
                    if (f := _failures.get(who))), default=0.0)


def record_failure(action: str, session_id: str, address: str | None, *, now: float | None = None) -> float:
    """Count a wrong key; returns the back-off it starts (seconds)."""
    now = time.monotonic() if now is None else now
    with _lock:
        waits = []
        for who in _identities(session_id, address):
            failures = _failures.setdefault(who, _Failures())
            failures.count += 1
            failures.blocked_until = now + back_off_seconds(failures.count)
            waits.append(back_off_seconds(failures.count))
        wait = max(waits)
    log.warning("wrong instructor key for %r from session %s, address %s; keys from them are not checked "
                "for %g s", action, session_id, address or "local", wait)
    return wait


@dataclass(frozen=True)
class Verdict:
    checked: bool  # False: this session or address was still backing off, so the key was not compared
    right: bool
    wait: float  # seconds before the next key is checked (the back-off in force or just started)


def check(action: str, session_id: str, address: str | None, matches: Callable[[], bool],
          *, now: float | None = None) -> Verdict:
    """Compare a key unless this session or address is backing off, and record the outcome, as one
    step under the lock: guesses sent at once from many sessions of one address cannot all pass the
    back-off check before the first wrong one is recorded."""
    now = time.monotonic() if now is None else now
    with _lock:
        if wait := wait_seconds(session_id, address, now=now):
            return Verdict(checked=False, right=False, wait=wait)
        if matches():
            record_success(session_id, address)
            return Verdict(checked=True, right=True, wait=0.0)
        return Verdict(checked=True, right=False, wait=record_failure(action, session_id, address, now=now))


def record_success(session_id: str, address: str | None) -> None:
    with _lock:
        for who in _identities(session_id, address):
            _failures.pop(who, None)


def forget_all() -> None:
    """Tests only: start from no failures."""
    with _lock:
        _failures.clear()
