"""An OpenAI-Realtime-compatible WebSocket (`/v1/realtime`), on voxline's own session engine and providers.

Speaks the Realtime API's beta event dialect (the one `client.beta.realtime.connect()` of the official SDK uses):
client events are dispatched through a small decorator registry to handlers that turn them into audio frames and
session controls; the session's own events are translated back into Realtime server events.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxline.audio.frame import AudioFrame, decode_alaw, decode_mulaw, encode_alaw, encode_mulaw
from voxline.errors import AudioError
from voxline.transports.base import ClientEvent

log = logging.getLogger(__name__)

MAX_APPEND_BYTES = 15 * 1024 * 1024  # OpenAI's own limit on one input_audio_buffer.append
FORMATS = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}

Handler = Callable[["RealtimeTransport", dict[str, Any]], Awaitable[list[AudioFrame | ClientEvent]]]
HANDLERS: dict[str, Handler] = {}


def on(event_type: str) -> Callable[[Handler], Handler]:
    """Register the handler of one client event type."""

    def register(handler: Handler) -> Handler:
        HANDLERS[event_type] = handler
        return handler

    return register


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class RealtimeError(Exception):
    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


@dataclass
class _Response:
    id: str = field(default_factory=lambda: _id("resp"))
    item_id: str = field(default_factory=lambda: _id("item"))
    transcript: list[str] = field(default_factory=list)
    started: bool = False
    cancel_reason: str = "turn_detected"
    """Why a cancelled response ended: the VAD heard new speech, unless the client sent `response.cancel`."""


class RealtimeTransport:
    """One Realtime API connection, as a voxline transport."""

    def __init__(self, ws: WebSocket, model: str = "voxline") -> None:
        self.ws = ws
        self.model = model
        self.session_id = _id("sess")
        self.config: dict[str, Any] = {
            "id": self.session_id, "object": "realtime.session", "model": model, "modalities": ["audio", "text"],
            "instructions": "", "voice": "default", "input_audio_format": "pcm16", "output_audio_format": "pcm16",
            "input_audio_transcription": None,
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500, "create_response": True, "interrupt_response": True},
            "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf"}
        self._input_ms = 0.0
        self._user_item: str | None = None
        self._last_item: str | None = None
        self._response: _Response | None = None

    @property
    def output_sample_rate(self) -> int:
        return FORMATS[self.config["output_audio_format"]]

    @property
    def _input_rate(self) -> int:
        return FORMATS[self.config["input_audio_format"]]

    @property
    def _server_vad(self) -> bool:
        """With `turn_detection: null` the client ends turns itself; OpenAI then sends no VAD events."""
        return self.config["turn_detection"] is not None

    async def start(self, system_prompt: str) -> None:
        # Browsers offer "realtime" (beside the key subprotocols) and fail a handshake that selects none.
        offered = self.ws.scope.get("subprotocols") or ()
        await self.ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        self.config["instructions"] = system_prompt
        await self._send({"type": "session.created", "session": self.config})

    # ---- inbound ------------------------------------------------------------------------------------------------

    async def receive(self) -> AsyncIterator[AudioFrame | ClientEvent]:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                event: dict[str, Any] = {}
                try:
                    text = message.get("text")
                    if text is None:
                        raise RealtimeError("binary messages are not part of the Realtime protocol; send JSON "
                                            "events", "invalid_message")
                    try:
                        event = json.loads(text)
                    except ValueError as exc:
                        raise RealtimeError(f"malformed JSON: {exc}", "invalid_json") from None
                    if not isinstance(event, dict):
                        raise RealtimeError("an event must be a JSON object", "invalid_message")
                    handler = HANDLERS.get(str(event.get("type")))
                    if handler is None:
                        raise RealtimeError(f"Invalid value: '{event.get('type')}'. Supported values are: "
                                            + ", ".join(f"'{t}'" for t in HANDLERS), "invalid_value", "type")
                    for item in await handler(self, event):
                        yield item
                except RealtimeError as exc:
                    await self._error(str(exc), exc.code, exc.param, event.get("event_id"))
        except WebSocketDisconnect:
            return

    async def _error(self, message: str, code: str, param: str | None = None, event_id: Any = None) -> None:
        await self._send({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                     "message": message, "param": param, "event_id": event_id}})

    # ---- outbound: session events -> Realtime server events ----------------------------------------------------

    async def send_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("speech_started", "turn_ended") and not self._server_vad:
            return  # the detector still runs, but in manual mode only the client's commit ends a turn
        if kind == "speech_started":
            self._user_item = _id("item")
            await self._send({"type": "input_audio_buffer.speech_started", "item_id": self._user_item,
                              "audio_start_ms": round(event["time"] * 1000)})
        elif kind == "turn_ended" and self._user_item:
            await self._send({"type": "input_audio_buffer.speech_stopped", "item_id": self._user_item,
                              "audio_end_ms": round(event["time"] * 1000)})
            await self._commit_user_item()
        elif kind == "transcript" and event.get("final"):
            item = self._user_item or self._last_item or _id("item")
            await self._send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                              "content_index": 0, "transcript": event.get("text", ""),
                              "usage": {"type": "duration", "seconds": 0}})
            self._user_item = None
        elif kind == "reply_started":
            await self._open_response()
        elif kind == "agent_text" and self._response is not None:
            r = self._response
            r.transcript.append(event["text"])
            await self._send({"type": "response.audio_transcript.delta", "response_id": r.id, "item_id": r.item_id,
                              "output_index": 0, "content_index": 0,
                              "delta": event["text"] if len(r.transcript) == 1 else " " + event["text"]})
        elif kind == "agent_done" and self._response is not None:
            await self._close_response(event)
        elif kind == "error":
            await self._error(str(event.get("message", "error")), str(event.get("code") or "server_error"))

    async def _commit_user_item(self) -> None:
        item = self._user_item or _id("item")
        await self._send({"type": "input_audio_buffer.committed", "item_id": item,
                          "previous_item_id": self._last_item})
        await self._send({"type": "conversation.item.created", "previous_item_id": self._last_item,
                          "item": {"id": item, "object": "realtime.item", "type": "message", "role": "user",
                                   "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}})
        self._last_item = item

    async def _open_response(self) -> None:
        r = self._response = _Response()
        item = {"id": r.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        await self._send({"type": "response.created", "response": {"id": r.id, "object": "realtime.response",
                                                                   "status": "in_progress", "output": []}})
        await self._send({"type": "response.output_item.added", "response_id": r.id, "output_index": 0,
                          "item": item})
        await self._send({"type": "conversation.item.created", "previous_item_id": self._last_item, "item": item})
        await self._send({"type": "response.content_part.added", "response_id": r.id, "item_id": r.item_id,
                          "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
        self._last_item = r.item_id

    async def _close_response(self, event: dict[str, Any]) -> None:
        r, self._response = self._response, None
        assert r is not None
        cancelled = bool(event.get("interrupted"))
        transcript = event.get("text", "") if cancelled else " ".join(r.transcript)
        ids = {"response_id": r.id, "item_id": r.item_id, "output_index": 0, "content_index": 0}
        await self._send({"type": "response.audio.done", **ids})
        await self._send({"type": "response.audio_transcript.done", **ids, "transcript": transcript})
        part = {"type": "audio", "transcript": transcript}
        await self._send({"type": "response.content_part.done", **ids, "part": part})
        item = {"id": r.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "incomplete" if cancelled else "completed", "content": [part]}
        await self._send({"type": "response.output_item.done", "response_id": r.id, "output_index": 0, "item": item})
        status = "cancelled" if cancelled else "completed"
        details = {"type": "cancelled", "reason": r.cancel_reason} if cancelled else None
        await self._send({"type": "response.done", "response": {
            "id": r.id, "object": "realtime.response", "status": status, "status_details": details,
            "output": [item], "output_audio_format": self.config["output_audio_format"]}})

    async def send_audio(self, frame: AudioFrame) -> None:
        if self._response is None:
            return
        fmt = self.config["output_audio_format"]
        data = frame.pcm() if fmt == "pcm16" else encode_mulaw(frame) if fmt == "g711_ulaw" else encode_alaw(frame)
        await self._send({"type": "response.audio.delta", "response_id": self._response.id,
                          "item_id": self._response.item_id, "output_index": 0, "content_index": 0,
                          "delta": base64.b64encode(data).decode()})

    async def clear(self) -> None:
        """Realtime clients stop playback themselves on speech_started; nothing extra goes on the wire."""

    async def _send(self, event: dict[str, Any]) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            await self.ws.send_text(json.dumps({"event_id": _id("event"), **event}, separators=(",", ":")))

    async def close(self) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close()
            except RuntimeError:
                pass

    def decode_input(self, data: bytes) -> AudioFrame:
        fmt = self.config["input_audio_format"]
        stamp = self._input_ms / 1000
        if fmt == "pcm16":
            frame = AudioFrame.from_pcm(data, 24000, timestamp=stamp)
        elif fmt == "g711_ulaw":
            frame = decode_mulaw(data, 8000, timestamp=stamp)
        else:
            frame = decode_alaw(data, 8000, timestamp=stamp)
        self._input_ms += frame.duration * 1000
        return frame


# ---- client event handlers ------------------------------------------------------------------------------------


@on("session.update")
async def _session_update(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    update = event.get("session")
    if not isinstance(update, dict):
        raise RealtimeError("session.update needs a 'session' object", "missing_required_parameter", "session")
    for key in ("input_audio_format", "output_audio_format"):
        if key in update and not isinstance(update[key], str):
            raise RealtimeError(f"{key} must be a string", "invalid_type", f"session.{key}")
        if key in update and update[key] not in FORMATS:
            raise RealtimeError(f"Invalid value: '{update[key]}'. Supported values are: 'pcm16', 'g711_ulaw', "
                                "and 'g711_alaw'.", "invalid_value", f"session.{key}")
    if "instructions" in update and not isinstance(update["instructions"], str):
        raise RealtimeError("instructions must be a string", "invalid_type", "session.instructions")
    control: dict[str, Any] = {}
    if "turn_detection" in update:
        td = update["turn_detection"]
        if td is None:
            control.update(auto_end_turns=False, auto_respond=False)
        elif isinstance(td, dict):
            if td.get("type", "server_vad") not in ("server_vad", "semantic_vad"):
                raise RealtimeError(f"unsupported turn_detection type {td.get('type')!r}", "invalid_value",
                                    "session.turn_detection.type")
            turn: dict[str, Any] = {"detector": "silero" if td.get("type", "server_vad") == "server_vad" else "smart"}
            if isinstance(td.get("threshold"), int | float):
                turn["threshold"] = float(td["threshold"])
            if isinstance(td.get("silence_duration_ms"), int | float):
                turn["silence_s"] = max(0.05, td["silence_duration_ms"] / 1000)
            control.update(turn=turn, auto_end_turns=True, auto_respond=bool(td.get("create_response", True)))
        else:
            raise RealtimeError("turn_detection must be an object or null", "invalid_type", "session.turn_detection")
    if isinstance(update.get("instructions"), str):
        control["system_prompt"] = update["instructions"]
    merged = {**t.config, **{k: v for k, v in update.items() if k in t.config}}
    if isinstance(merged.get("turn_detection"), dict) and isinstance(t.config.get("turn_detection"), dict):
        merged["turn_detection"] = {**t.config["turn_detection"], **merged["turn_detection"]}
    t.config = merged
    await t._send({"type": "session.updated", "session": t.config})
    return [ClientEvent("configure", control)] if control else []


@on("input_audio_buffer.append")
async def _append(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise RealtimeError("input_audio_buffer.append needs base64 'audio'", "missing_required_parameter", "audio")
    if len(audio) * 3 // 4 > MAX_APPEND_BYTES:
        raise RealtimeError(f"audio of one append must not exceed {MAX_APPEND_BYTES} bytes", "invalid_value",
                            "audio")
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError("audio is not valid base64", "invalid_value", "audio") from None
    try:
        return [t.decode_input(data)] if data else []
    except AudioError as exc:
        raise RealtimeError(str(exc), "invalid_value", "audio") from None


@on("input_audio_buffer.commit")
async def _commit(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    if t._user_item is None:
        t._user_item = _id("item")
    await t._commit_user_item()
    return [ClientEvent("commit")]


@on("input_audio_buffer.clear")
async def _clear(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    t._user_item = None
    await t._send({"type": "input_audio_buffer.cleared"})
    return [ClientEvent("clear_input")]


@on("conversation.item.create")
async def _item_create(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    item = event.get("item")
    if not isinstance(item, dict) or item.get("type", "message") != "message" or item.get("role") != "user":
        raise RealtimeError("only user message items can be created here", "invalid_value", "item")
    content = item.get("content") or []
    if not isinstance(content, list):
        raise RealtimeError("item.content must be an array of content parts", "invalid_type", "item.content")
    texts = []
    for i, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") in ("input_text", "text"):
            if not isinstance(text := part.get("text", ""), str):
                raise RealtimeError("text must be a string", "invalid_type", f"item.content[{i}].text")
            texts.append(text)
    if not texts:
        raise RealtimeError("the item has no input_text content", "invalid_value", "item.content")
    item_id = str(item.get("id") or _id("item"))
    await t._send({"type": "conversation.item.created", "previous_item_id": t._last_item,
                   "item": {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                            "status": "completed", "content": [{"type": "input_text", "text": " ".join(texts)}]}})
    t._last_item = item_id
    return [ClientEvent("text", {"text": " ".join(texts), "respond": False})]


@on("response.create")
async def _response_create(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    return [ClientEvent("respond")]


@on("response.cancel")
async def _response_cancel(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    if t._response is not None:
        t._response.cancel_reason = "client_cancelled"
    return [ClientEvent("interrupt")]


@on("conversation.item.truncate")
async def _truncate(t: RealtimeTransport, event: dict[str, Any]) -> list[AudioFrame | ClientEvent]:
    end_ms = event.get("audio_end_ms")
    if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
        raise RealtimeError("audio_end_ms must be a non-negative integer", "invalid_value", "audio_end_ms")
    item_id = str(event.get("item_id", ""))
    await t._send({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                   "audio_end_ms": end_ms})
    if t._response is not None and item_id != t._response.item_id:
        return []  # an earlier reply's item, already ended (and cut where the barge-in stopped it): not this one's
    return [ClientEvent("truncate", {"played_ms": end_ms})]

