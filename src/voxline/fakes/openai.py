"""A fake OpenAI: `POST /v1/chat/completions` (streamed), `POST /v1/audio/speech`, `POST /v1/audio/transcriptions`,
`GET /v1/models` (key check).

Wire format as documented (platform.openai.com API reference: Chat streaming, Create speech, Create transcription)
and as openai-python reads it (`_streaming.py`: SSE `data:` lines, `[DONE]`, an `error` object in a data line
raises): `chat.completion.chunk` objects with `choices[0].delta.content` / `delta.tool_calls[{index, id, type,
function: {name, arguments}}]` fragments, `finish_reason`, and with `stream_options.include_usage` a last chunk with
empty `choices` and `usage`. Errors: `{"error": {"message", "type", "param", "code"}}`.

Replies: `OpenAIScript.reply`, streamed a word per chunk; `tool_call = (name, arguments)` makes the first turn of a
conversation a tool call instead (a turn whose last message is a tool result gets the text reply).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from voxline.audio.codecs import encode_audio
from voxline.fakes.audio import BLOCK_S, decode_block, tone
from voxline.fakes.script import Fault, VendorScript, refuse, sse_stream


@dataclass
class OpenAIScript(VendorScript):
    reply: str = "Hello! How can I help you today?"
    tool_call: tuple[str, dict[str, Any]] | None = None
    transcript: str | None = None
    chars_per_second: float = 15.0
    chunk_delay: float = 0.0


def _error(status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status, headers=headers)


def _refusal(api_key: str, auth: str, fault: Fault | None) -> JSONResponse | None:
    # the real 401 echoes a masked form of the key; this fake echoes all of it, to prove redaction
    return refuse(
        fault, auth == f"Bearer {api_key}",
        unauthorized=lambda: _error(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')}. You can find "
                                         "your API key at https://platform.openai.com/account/api-keys.",
                                    "invalid_request_error", "invalid_api_key"),
        rate_limited=lambda after: _error(429, "Rate limit reached for requests. Please try again later.",
                                          "requests", "rate_limit_exceeded", {"retry-after": after}),
        failed=lambda status: _error(status, "The server had an error while processing your request. Sorry about that!",
                                     "server_error", None))


def _chunk(model: str, delta: dict[str, Any] | None, finish: str | None = None,
           usage: dict[str, int] | None = None) -> str:
    body: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "system_fingerprint": "fp_fake",
                            "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                                  "finish_reason": finish}]}
    if usage is not None or delta is None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def chat_events(script: OpenAIScript, body: dict[str, Any]) -> list[str]:
    """The SSE lines of one streamed reply (before faults)."""
    model = body.get("model", "gpt-fake")
    messages = body.get("messages", [])
    events = [_chunk(model, {"role": "assistant", "content": ""})]
    wants_tool = script.tool_call is not None and body.get("tools") and not (
        messages and messages[-1].get("role") == "tool")
    out_tokens = 0
    if wants_tool:
        assert script.tool_call is not None
        name, args = script.tool_call
        text = json.dumps(args)
        third = max(1, len(text) // 3)
        events.append(_chunk(model, {"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function",
                                                     "function": {"name": name, "arguments": ""}}]}))
        for i in range(0, len(text), third):
            events.append(_chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": text[i:i + third]}}]}))
            out_tokens += 1
        events.append(_chunk(model, {}, "tool_calls"))
    else:
        words = script.reply.split(" ")
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit:
            words = words[:limit]
        for i, w in enumerate(words):
            events.append(_chunk(model, {"content": w if i == 0 else " " + w}))
        out_tokens = len(words)
        events.append(_chunk(model, {}, "length" if limit and limit < len(script.reply.split()) else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        events.append(_chunk(model, None, usage={"prompt_tokens": prompt, "completion_tokens": out_tokens,
                                                 "total_tokens": prompt + out_tokens}))
    events.append("data: [DONE]\n\n")
    return events


def routes(script: OpenAIScript, api_key: str) -> list[Route]:
    async def chat(request: Request) -> Response:
        body, fault = await script.receive_json(request)
        refusal = _refusal(api_key, request.headers.get("authorization", ""), fault)
        if refusal is not None:
            return refusal
        if not isinstance(body, dict) or not body.get("messages"):
            return _error(400, "'messages' is a required property", "invalid_request_error", None)
        events = chat_events(script, body)
        if not body.get("stream"):
            return _error(400, "the fake serves stream=true only", "invalid_request_error", None)
        return StreamingResponse(sse_stream(
            events, fault, script.chunk_delay, vendor="OpenAI",
            error=('data: {"error": {"message": "The server had an error while processing your request.", '
                   '"type": "server_error", "param": null, "code": null}}\n\n'),
            malformed='data: {"id": "chatcmpl-fake", "choices": [{"delta": \n\n'), media_type="text/event-stream")

    async def speech(request: Request) -> Response:
        await script.on_connection(request)
        body = await request.json()
        script.record(request, body)
        fault = script.next_fault()
        refusal = _refusal(api_key, request.headers.get("authorization", ""), fault)
        if refusal is not None:
            return refusal
        fmt = body.get("response_format", "mp3")
        frame = tone(len(str(body.get("input", "")).strip()) / script.chars_per_second, 24000)
        if fmt == "pcm":
            audio = frame.pcm()
        elif fmt in ("wav", "mp3", "flac"):
            audio = encode_audio(frame, fmt)
        else:
            return _error(400, f"Invalid response_format {fmt!r}", "invalid_request_error", None)
        step = 4800

        async def chunks() -> AsyncIterator[bytes]:
            if fault and fault.kind == "slow_first_byte":
                await asyncio.sleep(fault.delay)
            for n, i in enumerate(range(0, len(audio), step)):
                if fault and n >= fault.after and fault.kind in ("drop", "error_mid_stream", "malformed"):
                    raise ConnectionAbortedError("fake OpenAI dropped the connection")
                yield audio[i:i + step]
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type=f"audio/{fmt}")

    async def transcriptions(request: Request) -> Response:
        await script.on_connection(request)
        form = await request.form()
        upload = form.get("file")
        fields = {k: v for k, v in form.items() if k != "file"}
        script.record(request, fields)
        fault = script.next_fault()
        refusal = _refusal(api_key, request.headers.get("authorization", ""), fault)
        if refusal is not None:
            return refusal
        if upload is None or isinstance(upload, str):
            return _error(400, "you must provide a file", "invalid_request_error", None)
        data = await upload.read()
        try:
            samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            return _error(400, "Audio file might be corrupted or unsupported", "invalid_request_error",
                          "invalid_value")
        mono = samples.mean(axis=1)
        block = round(BLOCK_S * rate)
        decoded = [decode_block(mono[i:i + block], rate) for i in range(0, mono.size, block)]
        text = script.transcript if script.transcript is not None else " ".join(w for w in decoded if w)
        duration = mono.size / rate
        if fault and fault.kind == "malformed":
            return Response('{"text": ', media_type="application/json")
        fmt = fields.get("response_format", "json")
        if fmt == "text":
            return Response(text, media_type="text/plain")
        if fmt == "verbose_json":
            return JSONResponse({"task": "transcribe", "language": fields.get("language") or "english",
                                 "duration": duration, "text": text,
                                 "segments": [{"id": 0, "start": 0.0, "end": duration, "text": text}]})
        return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": int(np.ceil(duration))}})

    async def models(request: Request) -> Response:
        await script.on_connection(request)
        script.record(request)
        refusal = _refusal(api_key, request.headers.get("authorization", ""), script.next_fault())
        return refusal or JSONResponse({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "fake"}]})

    return [Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/models", models)]
