"""Twilio Media Streams: phone calls into the same session engine.

`POST /twilio/voice` answers Twilio's call webhook with `<Connect><Stream>` TwiML (a bidirectional stream); Twilio
then opens `/twilio/stream` and speaks its Media Streams protocol: `connected`, `start`, `media` (base64 mu-law,
8 kHz), `mark`, `dtmf`, `stop` in; `media`, `mark`, `clear` out.

Playout tracking on calls: after every chunk of reply audio we send a `mark` named after the reply and the
position reached ("r3:1240" = reply 3, 1240 ms). Twilio echoes a mark when the audio before it has been played, so
the echoes tell the session exactly what the caller heard; on barge-in, `clear` drops Twilio's buffer (Twilio then
echoes the pending marks at once, which we ignore as they belong to a cleared reply).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxline.audio.frame import AudioFrame, decode_mulaw, encode_mulaw
from voxline.transports.base import ClientEvent

log = logging.getLogger(__name__)

TWILIO_RATE = 8000
CLOSE_POLICY = 1008


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each POST param's name and value, sorted by name))."""
    data = url + "".join(k + v for k, v in sorted(params.items()))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def valid_signature(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """Check a signature the way Twilio's own validators do: the URL as requested, without its port, and with the
    scheme's default port (proxies in front of the app add or drop it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    default_port = 443 if parts.scheme == "https" else 80
    candidates = {url, urlunsplit(parts._replace(netloc=host)),
                  urlunsplit(parts._replace(netloc=f"{host}:{parts.port or default_port}"))}
    return any(hmac.compare_digest(twilio_signature(auth_token, u, params), signature) for u in candidates)


async def voice_webhook(request: Request, auth_token: str | None, stream_path: str = "/twilio/stream") -> Response:
    """Answer the call webhook with TwiML that connects the call to our media stream (403 on a bad signature)."""
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    url = public_url(request)
    if auth_token and not valid_signature(auth_token, str(url), params, request.headers.get("x-twilio-signature", "")):
        return Response("invalid X-Twilio-Signature", status_code=403)
    stream_url = f"{'wss' if url.scheme == 'https' else 'ws'}://{url.netloc}{stream_path}"
    twiml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Connect>'
             f"<Stream url={quoteattr(stream_url)}>"
             f'<Parameter name="callSid" value={quoteattr(params.get("CallSid", ""))}/>'
             "</Stream></Connect></Response>")
    return Response(twiml, media_type="application/xml")


def public_url(request: Request) -> URL:
    """The URL Twilio requested, which is what it signs: behind a proxy, the scheme and host the proxy forwards
    (the first of each, for a chain of proxies); the stream URL in the TwiML is built on the same host."""
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip() or request.url.scheme
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip() or request.url.netloc
    return request.url.replace(scheme=proto, netloc=host)


class TwilioTransport:
    """One phone call on a Twilio bidirectional media stream."""

    def __init__(self, ws: WebSocket, mark_every_s: float = 0.2, start_timeout_s: float = 10.0) -> None:
        self.ws = ws
        self.start_timeout_s = start_timeout_s
        self.stream_sid = ""
        self.call_sid = ""
        self.custom_parameters: dict[str, str] = {}
        self.mark_every_s = mark_every_s
        self._reply = 0
        self._reply_sent_s = 0.0
        self._next_mark_s = 0.0
        self._reply_open = False

    @property
    def output_sample_rate(self) -> int:
        return TWILIO_RATE

    async def start(self) -> bool:
        """Accept, then read `connected` and `start` (within `start_timeout_s`, else closed with a reason). False if
        the stream ends, times out or has no `streamSid` before that."""
        await self.ws.accept()
        try:
            async with asyncio.timeout(self.start_timeout_s):
                while (msg := await self._next()) is not None:
                    if msg.get("event") == "start":
                        return await self._read_start(msg)
        except TimeoutError:
            await self.close(CLOSE_POLICY, f"no start event within {self.start_timeout_s:g} s")
        except WebSocketDisconnect:
            pass
        return False

    async def _read_start(self, msg: dict[str, Any]) -> bool:
        start = _object(msg.get("start"))
        self.stream_sid = str(msg.get("streamSid") or start.get("streamSid") or "")
        self.call_sid = str(start.get("callSid") or "")
        self.custom_parameters = {str(k): str(v) for k, v in _object(start.get("customParameters")).items()}
        fmt = _object(start.get("mediaFormat"))
        if fmt and (fmt.get("encoding") != "audio/x-mulaw" or str(fmt.get("sampleRate")) != str(TWILIO_RATE)):
            log.warning("unexpected Twilio media format %.200r; expecting 8 kHz mu-law", fmt)
        if not self.stream_sid:
            await self.close(CLOSE_POLICY, "the start event has no streamSid")
            return False
        return True

    async def _next(self) -> dict[str, Any] | None:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            return {}
        try:
            payload = json.loads(text)
        except ValueError:
            log.warning("ignoring malformed Twilio message %.80r", text)
            return {}
        if not isinstance(payload, dict):
            log.warning("ignoring Twilio message that is not a JSON object: %.80r", text)
            return {}
        return payload

    async def receive(self) -> AsyncIterator[AudioFrame | ClientEvent]:
        try:
            while (msg := await self._next()) is not None:
                event = msg.get("event")
                if event == "media":
                    if (frame := _media_frame(msg.get("media"))) is not None:
                        yield frame
                elif event == "mark":
                    name = _object(msg.get("mark")).get("name")
                    if not isinstance(name, str):
                        log.warning("ignoring mark without a name: %.80r", msg.get("mark"))
                    elif (played := self._played_from_mark(name)) is not None:
                        yield ClientEvent("playback", {"played_ms": played})
                elif event == "dtmf":
                    digit = _object(msg.get("dtmf")).get("digit")
                    if isinstance(digit, str) and digit:
                        yield ClientEvent("dtmf", {"digit": digit})
                    else:
                        log.warning("ignoring dtmf without a digit: %.80r", msg.get("dtmf"))
                elif event == "stop":
                    return
                elif msg:
                    log.debug("ignoring Twilio event %.40r", event)
        except WebSocketDisconnect:
            return

    def _played_from_mark(self, name: str) -> float | None:
        reply, _, ms = name.removeprefix("r").partition(":")
        if not reply.isdigit() or not ms.isdigit() or int(reply) != self._reply:
            return None  # not ours, or a mark of a reply already cleared
        return float(ms)

    async def send_audio(self, frame: AudioFrame) -> None:
        if not self._reply_open:
            self._reply, self._reply_open = self._reply + 1, True
            self._reply_sent_s, self._next_mark_s = 0.0, self.mark_every_s
        payload = base64.b64encode(encode_mulaw(frame.resample(TWILIO_RATE))).decode()
        await self._send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})
        self._reply_sent_s += frame.duration
        if self._reply_sent_s >= self._next_mark_s:
            await self._mark()
            self._next_mark_s = self._reply_sent_s + self.mark_every_s

    async def _mark(self) -> None:
        name = f"r{self._reply}:{round(self._reply_sent_s * 1000)}"
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_event(self, event: dict[str, Any]) -> None:
        """Twilio has no channel for events; a finished reply gets a last mark, so its end is tracked too."""
        if event.get("type") == "agent_done" and self._reply_open:
            if not event.get("interrupted"):
                await self._mark()
            self._reply_open = False

    async def clear(self) -> None:
        # A new reply number makes the marks Twilio echoes for the cleared audio stale, so they are not "played".
        self._reply, self._reply_open = self._reply + 1, False
        await self._send({"event": "clear", "streamSid": self.stream_sid})

    async def _send(self, message: dict[str, Any]) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            await self.ws.send_text(json.dumps(message, separators=(",", ":")))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, reason)
            except RuntimeError:
                pass


def _object(value: Any) -> dict[str, Any]:
    """A field that should hold a JSON object; anything else reads as empty, so a malformed message is skipped."""
    return value if isinstance(value, dict) else {}


def _media_frame(media: Any) -> AudioFrame | None:
    """The caller's audio of one `media` message; None (logged) for another track or a malformed message."""
    if not isinstance(media, dict):
        log.warning("ignoring media message without a media object: %.80r", media)
        return None
    if media.get("track", "inbound") not in ("inbound", "inbound_track"):
        return None
    payload, timestamp = media.get("payload", ""), media.get("timestamp") or 0
    try:
        if not isinstance(payload, str) or isinstance(timestamp, bool):
            raise TypeError
        data = base64.b64decode(payload, validate=True)
        stamp = float(timestamp) / 1000
        if not math.isfinite(stamp):
            raise ValueError
    except (binascii.Error, ValueError, TypeError):
        log.warning("ignoring malformed media message %.120r", media)
        return None
    return decode_mulaw(data, TWILIO_RATE, timestamp=stamp) if data else None
