"""voxline's WebSocket protocol (docs/protocol.md): binary PCM16 both ways, JSON events, one session per socket.

The transport guards the server against the caller: a bad message gets an `error` event (the call goes on), a
missing or impossible sample rate closes the socket with a clear reason, audio far ahead of real time and a caller
that stops reading are bounded (closed with an error) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError
from voxline.transports.base import ClientEvent

log = logging.getLogger(__name__)

CLIENT_EVENTS = frozenset({"text", "playback", "interrupt", "end"})
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 1 << 20
    """A binary message larger than this (1 MiB = 32 s of 16 kHz audio) is refused."""
    max_ahead_s: float = 60.0
    """Audio may arrive faster than real time (files, tests), but at most this far ahead of the wall clock."""
    max_outbound: int = 512
    """Messages queued for a caller that does not read; past this the caller is disconnected."""
    start_timeout_s: float = 10.0


class ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class WebSocketTransport:
    """A caller on voxline's WebSocket protocol. Call `start()` first: it reads and answers `session.start`."""

    def __init__(self, ws: WebSocket, *, default_output_rate: int = 24000, limits: Limits | None = None) -> None:
        self.ws = ws
        self.limits = limits or Limits()
        self.input_rate = 0
        self._output_rate = default_output_rate
        self._outbound: asyncio.Queue[bytes | str | None] = asyncio.Queue(self.limits.max_outbound)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def output_sample_rate(self) -> int:
        return self._output_rate

    async def start(self, session_id: str) -> bool:
        """Accept the socket and read the `session.start` message. False if the caller never sent a good one."""
        await self.ws.accept()
        self._writer = asyncio.create_task(self._write_loop())
        started = False
        try:
            started = await self._read_start(session_id)
        finally:
            if not started:  # every failed start (a disconnect, a bad message, an exception) stops the writer
                await self.close()
        return started

    async def _read_start(self, session_id: str) -> bool:
        try:
            message = await asyncio.wait_for(self.ws.receive(), self.limits.start_timeout_s)
            if message["type"] == "websocket.disconnect":
                return False
            start = self._parse_json(message.get("text"))
            if start.get("type") != "session.start":
                raise ProtocolViolation(CLOSE_POLICY, "the first message must be {\"type\": \"session.start\", "
                                                      "\"sample_rate\": N}")
            self.input_rate = _rate(start.get("sample_rate"), "sample_rate")
            if "output_sample_rate" in start:
                self._output_rate = _rate(start["output_sample_rate"], "output_sample_rate")
        except TimeoutError:
            await self.close(CLOSE_POLICY, "no session.start within "
                                           f"{self.limits.start_timeout_s:.0f} s")
            return False
        except ProtocolViolation as exc:
            await self.send_event({"type": "error", "code": "bad_start", "message": exc.reason})
            await self.close(exc.code, exc.reason)
            return False
        await self.send_event({"type": "session.started", "session_id": session_id,
                               "sample_rate": self.input_rate, "output_sample_rate": self._output_rate})
        return True

    async def receive(self) -> AsyncIterator[AudioFrame | ClientEvent]:
        started, audio_s = time.monotonic(), 0.0
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if (data := message.get("bytes")) is not None:
                    if len(data) > self.limits.max_message_bytes:
                        await self.close(CLOSE_TOO_BIG, f"audio message of {len(data)} bytes exceeds "
                                                        f"{self.limits.max_message_bytes}")
                        return
                    try:
                        frame = AudioFrame.from_pcm(data, self.input_rate, timestamp=audio_s)
                    except AudioError as exc:
                        await self.send_event({"type": "error", "code": "bad_audio", "message": str(exc)})
                        continue
                    audio_s += frame.duration
                    if audio_s - (time.monotonic() - started) > self.limits.max_ahead_s:
                        await self.send_event({"type": "error", "code": "too_fast", "message":
                                               f"audio arrives more than {self.limits.max_ahead_s:.0f} s ahead "
                                               "of real time"})
                        await self.close(CLOSE_POLICY, "audio far ahead of real time")
                        return
                    yield frame
                elif (text := message.get("text")) is not None:
                    try:
                        payload = self._parse_json(text)
                        kind = payload.get("type")
                        if not isinstance(kind, str) or kind not in CLIENT_EVENTS:
                            raise ProtocolViolation(CLOSE_POLICY, f"unknown event type {kind!r}; expected one of "
                                                                  f"{', '.join(sorted(CLIENT_EVENTS))}")
                        _check_fields(kind, payload)
                    except ProtocolViolation as exc:
                        await self.send_event({"type": "error", "code": "bad_event", "message": exc.reason})
                        continue
                    if kind == "end":
                        return
                    yield ClientEvent(kind, payload)
        except WebSocketDisconnect:
            return

    @staticmethod
    def _parse_json(text: str | None) -> dict[str, Any]:
        if text is None:
            raise ProtocolViolation(CLOSE_POLICY, "expected a JSON text message")
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise ProtocolViolation(CLOSE_POLICY, f"malformed JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise ProtocolViolation(CLOSE_POLICY, "a JSON message must be an object with a \"type\"")
        return payload

    # ---- outbound -----------------------------------------------------------------------------------------------

    async def send_audio(self, frame: AudioFrame) -> None:
        self._enqueue(frame.pcm())

    async def send_event(self, event: dict[str, Any]) -> None:
        self._enqueue(json.dumps(event, separators=(",", ":")))

    async def clear(self) -> None:
        # Drop our own queued audio first, then tell the caller to drop its buffer.
        kept = [m for m in _drain(self._outbound) if not isinstance(m, bytes)]
        for m in kept:
            self._outbound.put_nowait(m)
        await self.send_event({"type": "clear"})

    def _enqueue(self, message: bytes | str) -> None:
        if self._closed:
            return
        try:
            self._outbound.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("caller is not reading; closing the connection")
            self._closed = True
            asyncio.get_running_loop().create_task(self._abort())

    async def _abort(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(CLOSE_POLICY, "client is not reading (outbound queue full)")

    async def _write_loop(self) -> None:
        try:
            while (message := await self._outbound.get()) is not None:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Flush what is queued, then close (idempotent)."""
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.QueueFull):
                self._outbound.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer, 2.0)
            self._writer.cancel()
        self._closed = True
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)


def _rate(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 8000 <= value <= 48000:
        raise ProtocolViolation(CLOSE_POLICY, f"{name} must be an integer between 8000 and 48000 Hz, got {value!r}")
    return value


def _check_fields(kind: str, payload: dict[str, Any]) -> None:
    """The session trusts the types of what it is given: a wrong one is the caller's error, not a crash."""
    if kind == "text" and not isinstance(payload.get("text"), str):
        raise ProtocolViolation(CLOSE_POLICY, f"\"text\" must be a string, got {payload.get('text')!r}")
    played = payload.get("played_ms")
    if kind == "playback" and (isinstance(played, bool) or not isinstance(played, int | float)):
        raise ProtocolViolation(CLOSE_POLICY, f"\"played_ms\" must be a number, got {played!r}")


def _drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
