"""Process-wide resources that no client message can drop or duplicate.

Streamlit's `st.cache_resource` is cleared by a `clear_cache` message, which any browser may send
over its own websocket in every server mode. Resources cached there (the event loop, the app's
engine, the outbox publisher) would then be made again beside the old ones: a second loop thread,
a second pool, a second publisher with fresh fault switches while the first keeps running. So they
live here instead, in module globals under a lock, and only code (tests switching backends,
through `clear()`) ever forgets them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def process_wide(factory: F) -> F:
    """Like `st.cache_resource`, but Streamlit knows nothing of it: one value per argument tuple
    for the life of the process, made once even when sessions ask at the same moment.
    `wrapper.clear()` forgets the values (the caller disposes of them first)."""
    made: dict[tuple, Any] = {}
    lock = threading.RLock()  # reentrant: a factory may ask for another process-wide value

    @functools.wraps(factory)
    def wrapper(*args: Any) -> Any:
        try:
            return made[args]
        except KeyError:
            pass
        with lock:
            if args not in made:
                made[args] = factory(*args)
            return made[args]

    def clear() -> None:
        with lock:
            made.clear()

    wrapper.clear = clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
