"""Provider events for the session a call serves.

Providers and their reliability wrappers are shared by every session of a process, so they cannot hold a session's
observer. Which session a call serves is known from the asyncio context it runs in: `Session.run` enters
`reporting_to(session.emit)`, every task the session starts inherits it, and anything deep in a provider (a
retry, a fallback, a reconnect) calls `report(event)` to reach that session's caller and record. Outside a session
(start-up, a CLI run) `report` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Observer = Callable[[dict[str, Any]], None]

_listener: ContextVar[Observer | None] = ContextVar("voxline_session_listener", default=None)


@contextmanager
def reporting_to(observer: Observer) -> Iterator[None]:
    """Send the events reported in this context, and in the tasks it starts, to `observer`."""
    token = _listener.set(observer)
    try:
        yield
    finally:
        _listener.reset(token)


def report(event: dict[str, Any]) -> None:
    """Hand `event` to the observer of the current session, if any."""
    listener = _listener.get()
    if listener is not None:
        listener(event)


def current_observer() -> Observer | None:
    """The observer `report` hands events to in this context (None outside a session)."""
    return _listener.get()
