"""A fake Deepgram: live `/v1/listen` WebSocket, pre-recorded `POST /v1/listen`, `GET /v1/projects` (key check).

Wire format as documented (developers.deepgram.com: Live Audio reference, Finalize, KeepAlive, CloseStream,
Utterance End, Speech Started) and as deepgram-python-sdk parses it (`clients/listen/v1/websocket/response.py`):
`Results` with `channel.alternatives[0].{transcript, words}`, `is_final`, `speech_final`, `from_finalize`, `start`,
`duration`; `UtteranceEnd` with `last_word_end`; `SpeechStarted` with `timestamp`; `Metadata` after CloseStream.
Errors: `{"err_code", "err_msg", "request_id"}` bodies on refused handshakes; close code 1011 for a server error
and NET-0001 after 10 s without audio or KeepAlive.

Transcripts: each 0.4 s block of audio is one word, read from the audio itself (`voxline.fakes.audio`), or the next
word of `DeepgramScript.transcript` when a test set one. A final segment every `final_every` words; a pause ends a
segment with `speech_final` and, if asked, sends `UtteranceEnd`. Finalize gets its `from_finalize` result only when
there is something to finalize (a word pending, or 0.1 s or more of audio buffered).
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.fakes.audio import BLOCK_S, decode_block
from voxline.fakes.script import Fault, VendorScript, refuse


@dataclass
class DeepgramScript(VendorScript):
    transcript: str | None = None
    final_every: int = 3
    idle_timeout: float = 10.0


def _error(status: int, code: str, msg: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"err_code": code, "err_msg": msg, "request_id": str(uuid.uuid4())}, status_code=status,
                        headers=headers)


def _refusal(api_key: str, auth: str, fault: Fault | None) -> JSONResponse | None:
    return refuse(
        fault, auth == f"Token {api_key}",
        unauthorized=lambda: _error(401, "INVALID_AUTH", "Invalid credentials."),
        rate_limited=lambda after: _error(429, "TOO_MANY_REQUESTS", "Too many requests. Please try again later",
                                          {"Retry-After": after}),
        failed=lambda status: _error(status, "INTERNAL_SERVER_ERROR", "Internal server error."))


class _Words:
    """Where the words come from: the scripted transcript, one word per spoken block, while it lasts (per
    connection), then the word the audio's code spells."""

    def __init__(self, script: DeepgramScript) -> None:
        self._scripted = script.transcript.split() if script.transcript is not None else None

    def word(self, block: np.ndarray, rate: int) -> str | None:
        coded = decode_block(block, rate)
        if coded is None or self._scripted is None:
            return coded
        return self._scripted.pop(0) if self._scripted else coded


def _results(words: list[tuple[str, float, float]], start: float, end: float, *, is_final: bool,
             speech_final: bool = False, from_finalize: bool = False) -> dict[str, Any]:
    return {
        "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3), "start": round(start, 3),
        "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{
            "transcript": " ".join(w for w, _, _ in words), "confidence": 0.99 if words else 0.0,
            "words": [{"word": w, "start": round(s, 3), "end": round(e, 3), "confidence": 0.99,
                       "punctuated_word": w} for w, s, e in words]}]},
        "metadata": {"request_id": "fake", "model_info": {"name": "fake", "version": "0", "arch": "fake"},
                     "model_uuid": "00000000-0000-0000-0000-000000000000"},
    }


class _LiveSession:
    def __init__(self, ws: WebSocket, script: DeepgramScript, fault: Fault | None) -> None:
        q = ws.query_params
        self.ws = ws
        self.script = script
        self.fault = fault
        self.rate = int(q.get("sample_rate", "16000"))
        self.channels = int(q.get("channels", "1"))
        self.interim = q.get("interim_results", "false") == "true"
        self.vad_events = q.get("vad_events", "false") == "true"
        self.utterance_end = "utterance_end_ms" in q
        self.buffer = b""
        self.t = 0.0                 # end of the audio processed so far (s)
        self.segment_start = 0.0
        self.pending: list[tuple[str, float, float]] = []
        self.in_speech = False
        self.last_word_end = 0.0
        self.words = _Words(script)
        self.sent_first = False

    async def send(self, message: dict[str, Any]) -> None:
        if not self.sent_first and self.fault and self.fault.kind == "slow_first_byte":
            await asyncio.sleep(self.fault.delay)
        self.sent_first = True
        await self.ws.send_text(json.dumps(message))

    async def on_audio(self, data: bytes) -> bool:
        """Process whole blocks; False when a fault ends the session."""
        self.buffer += data
        block_bytes = round(BLOCK_S * self.rate) * 2 * self.channels
        while len(self.buffer) >= block_bytes:
            block, self.buffer = self.buffer[:block_bytes], self.buffer[block_bytes:]
            await self.on_block(block)
            f = self.fault
            if f and f.kind in ("drop", "error_mid_stream", "malformed") and self.t >= f.after - 1e-9:
                self.fault = None
                if f.kind == "drop":
                    return False  # returning without a close frame: the server drops the TCP connection
                if f.kind == "error_mid_stream":
                    await self.ws.close(1011, "NET-0000: The service encountered an internal error.")
                    return False
                await self.ws.send_text('{"type": "Results", "channel": {"alternatives": [')
        return True

    def _samples(self, block: bytes) -> np.ndarray:
        pcm = np.frombuffer(block, "<i2").astype(np.float32) / 32768.0
        return pcm.reshape(-1, self.channels).mean(axis=1)

    async def on_block(self, block: bytes) -> None:
        start, self.t = self.t, self.t + len(block) / (2 * self.channels * self.rate)
        word = self.words.word(self._samples(block), self.rate)
        if word is not None:
            if not self.in_speech and self.vad_events:
                await self.send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(start, 3)})
            self.in_speech = True
            self.pending.append((word, start + 0.02, self.t - 0.05))
            self.last_word_end = self.t - 0.05
            if len(self.pending) >= self.script.final_every:
                await self.final()
            elif self.interim:
                await self.send(_results(self.pending, self.segment_start, self.t, is_final=False))
            return
        if self.pending:
            await self.final(speech_final=True)
        elif not self.in_speech:
            self.segment_start = self.t
        if self.in_speech:
            self.in_speech = False
            if self.utterance_end:
                await self.send({"type": "UtteranceEnd", "channel": [0, 1],
                                 "last_word_end": round(self.last_word_end, 3)})

    async def final(self, *, speech_final: bool = False, from_finalize: bool = False) -> None:
        await self.send(_results(self.pending, self.segment_start, self.t, is_final=True,
                                 speech_final=speech_final, from_finalize=from_finalize))
        self.pending = []
        self.segment_start = self.t

    async def flush(self) -> None:
        """Finalize: the partial block left is decoded too, then one final result marked from_finalize; with no
        word pending and under 0.1 s buffered, no answer at all, as Deepgram warns ("not guaranteed if there is no
        significant amount of audio data to process", Finalize docs)."""
        significant = len(self.buffer) >= 0.1 * self.rate * 2 * self.channels
        if not significant and not self.pending:
            return
        if significant:
            block, self.buffer = self.buffer, b""
            samples = self._samples(block)
            start, self.t = self.t, self.t + samples.size / self.rate
            word = self.words.word(samples, self.rate)
            if word is not None:
                self.pending.append((word, start + 0.02, self.t - 0.02))
        await self.final(speech_final=True, from_finalize=True)

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.script.idle_timeout):
                    message = await self.ws.receive()
            except TimeoutError:
                await self.ws.close(1011, "NET-0001: Deepgram did not receive audio data or a text message within "
                                          "the timeout window.")
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                self.script.requests[-1].setdefault("audio_bytes", 0)
                self.script.requests[-1]["audio_bytes"] += len(message["bytes"])
                if not await self.on_audio(message["bytes"]):
                    return
                continue
            text = message.get("text") or ""
            try:
                kind = json.loads(text).get("type")
            except (ValueError, AttributeError):
                await self.ws.close(1008, "DATA-0000: The payload cannot be decoded as audio.")
                return
            self.script.requests[-1].setdefault("control", []).append(kind)
            if kind == "Finalize":
                await self.flush()
            elif kind == "CloseStream":
                if self.pending:
                    await self.final(speech_final=True)
                await self.send({"type": "Metadata", "transaction_key": "deprecated", "request_id": "fake",
                                 "sha256": "", "created": "2024-01-01T00:00:00.000Z", "duration": round(self.t, 3),
                                 "channels": self.channels})
                await self.ws.close(1000)
                return


def routes(script: DeepgramScript, api_key: str) -> list[Route | WebSocketRoute]:
    async def live(ws: WebSocket) -> None:
        await script.on_connection(ws, websocket=True)
        script.record(ws)
        fault = script.next_fault()
        refusal = _refusal(api_key, ws.headers.get("authorization", ""), fault)
        if refusal is None and ws.query_params.get("encoding", "linear16") != "linear16":
            refusal = _error(400, "Bad Request", "The fake supports encoding=linear16 only.")
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        await ws.accept()
        try:
            await _LiveSession(ws, script, fault).run()
        except WebSocketDisconnect:
            pass

    async def prerecorded(request: Request) -> Response:
        await script.on_connection(request)
        body = await request.body()
        script.record(request, {"bytes": len(body), "content_type": request.headers.get("content-type")})
        fault = script.next_fault()
        refusal = _refusal(api_key, request.headers.get("authorization", ""), fault)
        if refusal is not None:
            return refusal
        if fault and fault.kind == "slow_first_byte":
            await asyncio.sleep(fault.delay)
        try:
            samples, rate = sf.read(io.BytesIO(body), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            return _error(400, "Bad Request", "Bad Request: failed to process audio: corrupt or unsupported data")
        mono = samples.mean(axis=1)
        block = round(BLOCK_S * rate)
        words_src = _Words(script)
        words = []
        for i in range(0, mono.size, block):
            w = words_src.word(mono[i:i + block], rate)
            if w is not None:
                words.append((w, i / rate + 0.02, min(mono.size, i + block) / rate - 0.05))
        duration = mono.size / rate
        alt = _results(words, 0.0, duration, is_final=True)["channel"]["alternatives"][0]
        if fault and fault.kind == "malformed":
            return Response('{"metadata": {', media_type="application/json")
        return JSONResponse({
            "metadata": {"transaction_key": "deprecated", "request_id": str(uuid.uuid4()), "sha256": "",
                         "created": "2024-01-01T00:00:00.000Z", "duration": round(duration, 3), "channels": 1,
                         "models": ["fake"]},
            "results": {"channels": [{"alternatives": [alt],
                                      "detected_language": request.query_params.get("language", "en")}]},
        })

    async def projects(request: Request) -> Response:
        await script.on_connection(request)
        script.record(request)
        refusal = _refusal(api_key, request.headers.get("authorization", ""), script.next_fault())
        return refusal or JSONResponse({"projects": [{"project_id": "fake-project", "name": "fake"}]})

    return [WebSocketRoute("/v1/listen", live), Route("/v1/listen", prerecorded, methods=["POST"]),
            Route("/v1/projects", projects)]
