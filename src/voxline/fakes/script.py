"""What a fake vendor does next: the faults queued for its coming requests, delays, and a log of what it received.

Tests (and `voxline fakes serve` users, through `POST /_fakes/<vendor>`) queue `Fault`s; each request or WebSocket
session a fake receives takes the next one. Everything else the fakes send is deterministic.

What a fault does is the same at every vendor (`refuse`, `sse_stream`); only the wire format differs, so each fake
passes its own error bodies, header names and in-stream events.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

FaultKind = Literal["unauthorized", "rate_limit", "server_error", "error_mid_stream", "slow_first_byte", "malformed",
                    "drop"]
FAULT_KINDS: tuple[str, ...] = ("unauthorized", "rate_limit", "server_error", "error_mid_stream", "slow_first_byte",
                                "malformed", "drop")


@dataclass(frozen=True)
class Fault:
    """One injected failure, used by the next request.

    unauthorized: 401 with the vendor's error body (whatever key was sent). rate_limit: 429 + `Retry-After:
    retry_after`. server_error: HTTP `status` before anything streams. error_mid_stream: the vendor's in-stream error
    after `after` events (Deepgram: seconds of audio). slow_first_byte: headers at once, first body byte after
    `delay` s (WebSockets: the first message). malformed: an event that is not valid JSON after `after` events.
    drop: the connection closed without a proper end after `after` events.
    """

    kind: FaultKind
    after: float = 1
    delay: float = 2.0
    retry_after: float = 1.0
    status: int = 500


@dataclass
class VendorScript:
    """Per-vendor state of the fakes: queued faults, artificial connect delay, what was received."""

    connect_delay: float = 0.0
    faults: deque[Fault] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    _seen: set[tuple[str, int]] = field(default_factory=set, repr=False)

    def fail(self, *faults: Fault | FaultKind, **options: Any) -> None:
        """Queue faults for the next requests: `fail("rate_limit", retry_after=0.1)` or `fail(Fault(...), ...)`."""
        for f in faults:
            self.faults.append(f if isinstance(f, Fault) else Fault(f, **options))

    def next_fault(self) -> Fault | None:
        return self.faults.popleft() if self.faults else None

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()
        self.connect_delay = 0.0
        self.connections = 0
        self._seen.clear()

    async def on_connection(self, conn: HTTPConnection, *, websocket: bool = False) -> None:
        """Count TCP connections; the first request on a new one (every WebSocket) waits `connect_delay`, which
        stands in for the TCP + TLS handshakes to a distant vendor."""
        client = (conn.client.host, conn.client.port) if conn.client else ("?", 0)
        if websocket or client not in self._seen:
            self._seen.add(client)
            self.connections += 1
            if self.connect_delay:
                await asyncio.sleep(self.connect_delay)

    async def receive_json(self, request: Request) -> tuple[Any, Fault | None]:
        """Take a JSON request: its body (None when it is not JSON, for the fake to refuse in the vendor's words),
        logged, and the fault it gets."""
        await self.on_connection(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.record(request, body)
        return body, self.next_fault()

    def record(self, conn: HTTPConnection, body: Any = None) -> None:
        self.requests.append({"path": conn.url.path, "query": dict(conn.query_params),
                              "headers": {k: v for k, v in conn.headers.items()
                                          if k not in ("authorization", "xi-api-key", "x-api-key")},
                              "body": body})


def refuse(fault: Fault | None, authorized: bool, *, unauthorized: Callable[[], JSONResponse],
            rate_limited: Callable[[str], JSONResponse], failed: Callable[[int], JSONResponse],
            invalid: JSONResponse | None = None) -> JSONResponse | None:
    """The answer refusing a request before anything streams, or None: a wrong key or an `unauthorized` fault gets
    `unauthorized()`, then the vendor's own check of the request (`invalid`), then `rate_limit` gets
    `rate_limited(<Retry-After value>)` and `server_error` gets `failed(fault.status)`."""
    if (fault and fault.kind == "unauthorized") or not authorized:
        return unauthorized()
    if invalid is not None:
        return invalid
    if fault and fault.kind == "rate_limit":
        return rate_limited(f"{fault.retry_after:g}")
    if fault and fault.kind == "server_error":
        return failed(fault.status)
    return None


async def sse_stream(events: list[str], fault: Fault | None, chunk_delay: float, *, vendor: str, error: str,
                    malformed: str) -> AsyncIterator[str]:
    """Stream server-sent `events` as `fault` scripts it: the first late (`slow_first_byte`), or from event
    `fault.after` on a dropped connection, the vendor's in-stream `error` event, or its cut-off `malformed` one."""
    if fault and fault.kind == "slow_first_byte":
        await asyncio.sleep(fault.delay)
    for n, event in enumerate(events):
        if fault and n >= fault.after:
            if fault.kind == "drop":
                raise ConnectionAbortedError(f"fake {vendor} dropped the connection")
            if fault.kind == "error_mid_stream":
                yield error
                return
            if fault.kind == "malformed":
                yield malformed
                return
        yield event
        await asyncio.sleep(chunk_delay)
