"""A fake ElevenLabs: streaming `POST /v1/text-to-speech/{voice_id}/stream`, the stream-input WebSocket
`/v1/text-to-speech/{voice_id}/stream-input`, and `GET /v1/user` (key check).

Wire format as documented (elevenlabs.io/docs/api-reference: Stream speech, WebSocket) and as elevenlabs-python
reads it (`realtime_tts.py`, `types/audio_output.py`, `types/normalized_alignment.py`): the first client message
`{"text": " ", "voice_settings": ...}`, text chunks (`try_trigger_generation`, `flush`), `{"text": ""}` to end;
server messages `{"audio": <base64>, "isFinal": null, "alignment": {...}, "normalizedAlignment": {...}}` with
`chars`, `charStartTimesMs`, `charDurationsMs` relative to the chunk, then `{"isFinal": true}`. Errors:
`{"detail": {"status", "message"}}` bodies; in-stream `{"error", "message", "code"}` before a 1011 close.

The voice is a tone lasting `len(text) / chars_per_second` seconds, encoded in the requested output_format
(pcm_<rate>, ulaw_8000, mp3_<rate>_<kbps>).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.audio.codecs import encode_audio
from voxline.audio.frame import encode_mulaw
from voxline.fakes.audio import tone
from voxline.fakes.script import Fault, VendorScript, refuse

FORMATS = {"pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "ulaw_8000", "mp3_22050_32",
           "mp3_44100_32", "mp3_44100_64", "mp3_44100_96", "mp3_44100_128", "mp3_44100_192"}


@dataclass
class ElevenLabsScript(VendorScript):
    chars_per_second: float = 15.0
    chunk_s: float = 0.1
    inactivity_timeout: float = 20.0


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status, headers=headers)


def _refusal(api_key: str, key: str, fault: Fault | None, fmt: str) -> JSONResponse | None:
    return refuse(
        fault, key == api_key,
        unauthorized=lambda: _error(401, "invalid_api_key", "Invalid API key"),
        invalid=(None if fmt in FORMATS
                 else _error(400, "invalid_output_format", f"output_format {fmt!r} is not supported")),
        rate_limited=lambda after: _error(429, "too_many_concurrent_requests",
                                          "Too many concurrent requests for your subscription.",
                                          {"Retry-After": after}),
        failed=lambda status: _error(status, "internal_error", "An internal server error occurred."))


def synthesize(text: str, fmt: str, cps: float) -> bytes:
    """The fake voice for `text` in `fmt`."""
    name, rate = fmt.split("_")[0], int(fmt.split("_")[1])
    frame = tone(len(text.strip()) / cps, rate)
    if name == "pcm":
        return frame.pcm()
    if name == "ulaw":
        return encode_mulaw(frame)
    return encode_audio(frame, "mp3", bitrate=f"{fmt.split('_')[2]}k")


def _bytes_per_second(fmt: str) -> int:
    parts = fmt.split("_")
    if parts[0] == "pcm":
        return 2 * int(parts[1])
    if parts[0] == "ulaw":
        return int(parts[1])
    return int(parts[2]) * 125


def alignment(text: str, cps: float, offset_ms: float = 0.0) -> dict[str, Any]:
    """Character timings for `text` spoken at `cps` characters per second (relative to its audio chunk)."""
    step = 1000.0 / cps
    return {"chars": list(text), "charStartTimesMs": [round(offset_ms + i * step) for i in range(len(text))],
            "charDurationsMs": [round(step)] * len(text)}


def routes(script: ElevenLabsScript, api_key: str) -> list[Route | WebSocketRoute]:
    async def stream(request: Request) -> Response:
        body, fault = await script.receive_json(request)
        fmt = request.query_params.get("output_format", "mp3_44100_128")
        refusal = _refusal(api_key, request.headers.get("xi-api-key", ""), fault, fmt)
        if refusal is not None:
            return refusal
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return _error(422, "invalid_request", "field required: text")
        audio = synthesize(body["text"], fmt, script.chars_per_second)
        step = max(1, int(_bytes_per_second(fmt) * script.chunk_s))

        async def chunks() -> AsyncIterator[bytes]:
            if fault and fault.kind == "slow_first_byte":
                await asyncio.sleep(fault.delay)
            for n, i in enumerate(range(0, len(audio), step)):
                if fault and n >= fault.after:
                    if fault.kind == "drop":
                        raise ConnectionAbortedError("fake ElevenLabs dropped the connection")
                    if fault.kind in ("error_mid_stream", "malformed"):
                        # a raw stream has no event framing: the server can only cut it short
                        raise ConnectionResetError("fake ElevenLabs failed mid-stream")
                yield audio[i:i + step]
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="audio/mpeg" if fmt.startswith("mp3") else "audio/basic")

    async def stream_input(ws: WebSocket) -> None:
        await script.on_connection(ws, websocket=True)
        script.record(ws)
        fault = script.next_fault()
        fmt = ws.query_params.get("output_format", "mp3_44100_128")
        refusal = _refusal(api_key, ws.headers.get("xi-api-key", ""), fault, fmt)
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        await ws.accept()
        try:
            await _stream_input(ws, script, fault, fmt)
        except WebSocketDisconnect:
            pass

    async def user(request: Request) -> Response:
        await script.on_connection(request)
        script.record(request)
        refusal = _refusal(api_key, request.headers.get("xi-api-key", ""), script.next_fault(), "pcm_16000")
        return refusal or JSONResponse({"subscription": {"tier": "fake", "character_count": 0,
                                                         "character_limit": 10000}, "user_id": "fake"})

    return [Route("/v1/text-to-speech/{voice_id}/stream", stream, methods=["POST"]),
            WebSocketRoute("/v1/text-to-speech/{voice_id}/stream-input", stream_input),
            Route("/v1/user", user)]


async def _stream_input(ws: WebSocket, script: ElevenLabsScript, fault: Fault | None, fmt: str) -> None:
    log = script.requests[-1].setdefault("messages", [])
    buffer = ""
    sent = 0
    first = True
    while True:
        try:
            async with asyncio.timeout(script.inactivity_timeout):
                raw = await ws.receive_text()
        except TimeoutError:
            await ws.close(1008, "Have not received new text for the inactivity timeout. Closing connection.")
            return
        message = json.loads(raw)
        log.append(message)
        text = message.get("text")
        if text is None:
            continue
        end = text == ""
        buffer += text
        # generate on sentence ends, on flush, at the end, or once enough text waits (chunk_length_schedule ~ 50)
        ready = end or message.get("flush") or buffer.rstrip().endswith((".", "!", "?")) or len(buffer) >= 50
        if not ready or not buffer.strip():
            if end:
                break
            continue
        piece, buffer = buffer, ""
        audio = synthesize(piece, fmt, script.chars_per_second)
        if first and fault and fault.kind == "slow_first_byte":
            await asyncio.sleep(fault.delay)
        first = False
        if fault and sent >= fault.after:
            if fault.kind == "drop":
                return  # no close frame: the connection just ends
            if fault.kind == "error_mid_stream":
                await ws.send_text(json.dumps({"error": "internal_error", "message": "An internal server error "
                                                                                     "occurred.", "code": 1011}))
                await ws.close(1011, "internal_error")
                return
            if fault.kind == "malformed":
                await ws.send_text('{"audio": "AAAA", "isFinal": ')
                fault = None
        align = alignment(piece, script.chars_per_second)
        await ws.send_text(json.dumps({"audio": base64.b64encode(audio).decode(), "isFinal": None,
                                       "alignment": align, "normalizedAlignment": align}))
        sent += 1
        if end:
            break
    await ws.send_text(json.dumps({"isFinal": True}))
    await ws.close(1000)
