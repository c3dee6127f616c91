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

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxline.audio.frame import AudioFrame, decode_mulaw, encode_mulaw
from voxline.transports.base import ClientEvent

log = logging.getLogger(__name__)

TWILIO_RATE = 8000


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
    if auth_token:
        proto = request.headers.get("x-forwarded-proto", request.url.scheme)
        url = str(request.url.replace(scheme=proto))
        if not valid_signature(auth_token, url, params, request.headers.get("x-twilio-signature", "")):
            return Response("invalid X-Twilio-Signature", status_code=403)
    host = request.headers.get("x-forwarded-host", request.url.netloc)
    ws_scheme = "wss" if request.headers.get("x-forwarded-proto", request.url.scheme) == "https" else "ws"
    stream_url = f"{ws_scheme}://{host}{stream_path}"
    twiml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Connect>'
             f"<Stream url={quoteattr(stream_url)}>"
             f'<Parameter name="callSid" value={quoteattr(params.get("CallSid", ""))}/>'
             "</Stream></Connect></Response>")
    return Response(twiml, media_type="application/xml")


class TwilioTransport:
    """One phone call on a Twilio bidirectional media stream."""

    def __init__(self, ws: WebSocket, mark_every_s: float = 0.2) -> None:
        self.ws = ws
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
        """Accept, then read `connected` and `start`. False if the stream ends or is malformed before that."""
        await self.ws.accept()
        try:
            while True:
                msg = await self._next()
                if msg is None:
                    return False
                if msg.get("event") == "start":
                    start = msg.get("start") or {}
                    self.stream_sid = str(msg.get("streamSid") or start.get("streamSid") or "")
                    self.call_sid = str(start.get("callSid", ""))
                    self.custom_parameters = dict(start.get("customParameters") or {})
                    fmt = start.get("mediaFormat") or {}
                    if fmt and (fmt.get("encoding") != "audio/x-mulaw" or int(fmt.get("sampleRate", 0)) != 8000):
                        log.warning("unexpected Twilio media format %s; expecting 8 kHz mu-law", fmt)
                    return bool(self.stream_sid)
        except WebSocketDisconnect:
            return False

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
        return payload if isinstance(payload, dict) else {}

    async def receive(self) -> AsyncIterator[AudioFrame | ClientEvent]:
        try:
            while (msg := await self._next()) is not None:
                event = msg.get("event")
                if event == "media":
                    media = msg.get("media") or {}
                    if media.get("track", "inbound") not in ("inbound", "inbound_track"):
                        continue
                    try:
                        payload = base64.b64decode(media.get("payload", ""), validate=True)
                    except (binascii.Error, ValueError):
                        log.warning("ignoring media with invalid base64 payload")
                        continue
                    stamp = float(media.get("timestamp") or 0) / 1000
                    if payload:
                        yield decode_mulaw(payload, TWILIO_RATE, timestamp=stamp)
                elif event == "mark":
                    played = self._played_from_mark(str((msg.get("mark") or {}).get("name", "")))
                    if played is not None:
                        yield ClientEvent("playback", {"played_ms": played})
                elif event == "dtmf":
                    digit = str((msg.get("dtmf") or {}).get("digit", ""))
                    if digit:
                        yield ClientEvent("dtmf", {"digit": digit})
                elif event == "stop":
                    return
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

    async def close(self) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close()
            except RuntimeError:
                pass
