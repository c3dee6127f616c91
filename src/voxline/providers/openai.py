"""OpenAI, and every server that speaks its API (Ollama, vLLM, llama.cpp's server, LM Studio): chat completions as an
`LLM`, `/audio/speech` as a `TTS`, `/audio/transcriptions` as a batch `STT`.

    llm = OpenAILLM(model="gpt-4o-mini")                                        # OPENAI_API_KEY
    llm = OpenAILLM(base_url="http://localhost:11434/v1", model="llama3.2")      # Ollama: no key needed

`base_url` includes the `/v1` (as the openai SDK's does); the `OPENAI_BASE_URL` variable sets it too. The key is
required only for api.openai.com. Chat streams with `stream_options.include_usage`; tool calls arrive as
`delta.tool_calls` fragments (index, id, function.name, function.arguments) that are accumulated and emitted as one
`LLMDelta(tool_call=...)` each when the call is complete (the next call starts, at a new index or with a new id at
the same one, as Ollama sends parallel calls, or `finish_reason` arrives). A stream that ends before `[DONE]` dropped
mid-reply, unless its `finish_reason` had come: that reply is whole (at most its usage chunk is lost).
Reference: platform.openai.com API reference (Chat Completions streaming, Audio) and openai-python's
`src/openai/_streaming.py` (SSE framing, `[DONE]`, in-stream `error` objects).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from voxline.agent.tools import call_parts, openai_tools
from voxline.audio.codecs import encode_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError, ProviderError
from voxline.providers.base import LLMDelta, Message, Segment, ToolCall, Transcript
from voxline.providers.http import (
    HTTPProvider,
    Timeouts,
    audio_decoder,
    loads,
    malformed,
    redact,
    resolve_key,
    sse_events,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SPEECH_FORMATS = ("pcm", "wav", "mp3")


class _OpenAIClient(HTTPProvider):
    provider = "openai"
    check_path = "/models"

    def __init__(self, *, api_key: str | None, base_url: str | None, name: str, connect_timeout: float,
                 first_byte_timeout: float, idle_timeout: float = 30.0) -> None:
        base = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        secret = resolve_key(name, api_key, "OPENAI_API_KEY", required=base == DEFAULT_BASE_URL)
        headers = {"Authorization": f"Bearer {secret.reveal()}"} if secret else {}
        super().__init__(base_url=base, secret=secret, timeouts=Timeouts(connect_timeout, first_byte_timeout,
                                                                          idle_timeout), headers=headers)
        self.name = name
        self.provider = name

    async def check(self) -> dict[str, Any]:
        """A cheap authenticated request: the model list."""
        data = await self.request_json("GET", self.check_path)
        return {"models": len(data.get("data") or [])}


def openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """voxline messages -> chat completion messages (tool calls and tool results included)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            calls = []
            for c in m.tool_calls:
                cid, name, args = call_parts(c)
                calls.append({"id": cid, "type": "function",
                              "function": {"name": name, "arguments": json.dumps(args)}})
            out.append({"role": "assistant", "content": m.content or None, "tool_calls": calls})
        else:
            entry: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.name:
                entry["name"] = m.name
            out.append(entry)
    return out


class OpenAILLM(_OpenAIClient):
    """Streaming chat completions from OpenAI or any OpenAI-compatible server."""

    def __init__(self, *, model: str = "gpt-4o-mini", api_key: str | None = None, base_url: str | None = None,
                 max_tokens_param: str = "max_tokens", connect_timeout: float = 5.0,
                 first_byte_timeout: float = 15.0, name: str = "openai", **extra_body: Any) -> None:
        super().__init__(api_key=api_key, base_url=base_url, name=name, connect_timeout=connect_timeout,
                         first_byte_timeout=first_byte_timeout)
        self.model = model
        self.max_tokens_param = max_tokens_param  # newer OpenAI models want "max_completion_tokens"
        self.extra_body = extra_body

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()
                     ) -> AsyncIterator[LLMDelta]:
        body: dict[str, Any] = {"model": self.model, "messages": openai_messages(messages), "stream": True,
                                "stream_options": {"include_usage": True}, **self.extra_body}
        if max_tokens is not None:
            body[self.max_tokens_param] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if tools:
            body["tools"] = openai_tools(tools)
        pending: dict[int, dict[str, str]] = {}
        finished = False  # [DONE] arrived, or a finish_reason did: the reply is whole, only usage may be missing
        async with self.open_stream("POST", "/chat/completions", json=body) as chunks:
            try:
                async for event in sse_events(chunks):
                    if event.data.strip() == "[DONE]":
                        finished = True
                        break
                    data = loads(self.name, "chat completion event", event.data, self._secret)
                    if isinstance(data.get("error"), dict):
                        raise self._stream_error(data["error"])
                    for choice in data.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield LLMDelta(text=delta["content"])
                        for fragment in delta.get("tool_calls") or []:
                            for call in self._add_fragment(pending, fragment):
                                yield LLMDelta(tool_call=call)
                        if choice.get("finish_reason"):
                            for done in sorted(pending):
                                yield LLMDelta(tool_call=self._finish(pending.pop(done)))
                            finished = True
                    usage = data.get("usage")
                    if isinstance(usage, dict):
                        yield LLMDelta(input_tokens=usage.get("prompt_tokens"),
                                       output_tokens=usage.get("completion_tokens"))
            except ProviderError:
                if not finished:
                    raise
                # Dropped after the finish_reason (before the usage chunk or [DONE]): the reply is complete, and
                # a retry would ask for a finished reply again (or repeat its tool calls).
        if not finished:
            raise ProviderError(f"{self.name} stream ended before [DONE]: the connection dropped mid-reply",
                                provider=self.name, retryable=True)
        for done in sorted(pending):
            yield LLMDelta(tool_call=self._finish(pending.pop(done)))

    def _add_fragment(self, pending: dict[int, dict[str, str]], fragment: dict[str, Any]) -> list[ToolCall]:
        """Add one `delta.tool_calls` fragment; returns the calls it shows to be complete.

        A fragment for a new index ends the calls before it. So does a new `id` at a pending index: Ollama's
        OpenAI-compatible API sends index 0 for every parallel call (older versions send no index at all), and
        merging those would make one call of two names and two argument objects.
        """
        index = int(fragment.get("index") or 0)
        new_id = fragment.get("id") or ""
        entry = pending.get(index)
        done: list[ToolCall] = []
        if entry is None or (new_id and entry["id"] and new_id != entry["id"]):
            done = [self._finish(pending.pop(i)) for i in sorted(pending)]
            entry = pending[index] = {"id": "", "name": "", "arguments": ""}
        fn = fragment.get("function") or {}
        entry["id"] = new_id or entry["id"]
        entry["name"] += fn.get("name") or ""
        entry["arguments"] += fn.get("arguments") or ""
        return done

    def _finish(self, entry: dict[str, str]) -> ToolCall:
        try:
            args = json.loads(entry["arguments"]) if entry["arguments"].strip() else {}
        except ValueError:
            raise malformed(self.name, f"tool call ({entry['name']}) argument JSON", entry["arguments"],
                            self._secret) from None
        if not isinstance(args, dict) or not entry["name"]:
            raise malformed(self.name, "tool call", json.dumps(entry), self._secret)
        return ToolCall(entry["id"], entry["name"], args)

    def _stream_error(self, error: dict[str, Any]) -> ProviderError:
        kind = str(error.get("type") or error.get("code") or "error")
        message = redact(str(error.get("message") or kind), self._secret)
        retryable = kind in ("server_error", "api_error", "overloaded_error", "rate_limit_exceeded", "requests")
        return ProviderError(f"{self.name} failed mid-stream: {message} ({kind})", provider=self.name,
                             retryable=retryable)


class OpenAITTS(_OpenAIClient):
    """`/audio/speech` streamed: pcm (24 kHz s16le, lowest latency), wav or mp3, decoded to frames as they come."""

    sample_rate = 24000

    def __init__(self, *, model: str = "gpt-4o-mini-tts", voice: str = "alloy", response_format: str = "pcm",
                 instructions: str | None = None, speed: float | None = None, api_key: str | None = None,
                 base_url: str | None = None, connect_timeout: float = 5.0, first_byte_timeout: float = 10.0,
                 name: str = "openai-tts") -> None:
        super().__init__(api_key=api_key, base_url=base_url, name=name, connect_timeout=connect_timeout,
                         first_byte_timeout=first_byte_timeout)
        if response_format not in SPEECH_FORMATS:
            raise ConfigError(f"{name}: response_format must be one of {', '.join(SPEECH_FORMATS)}")
        self.model, self.voice, self.response_format = model, voice, response_format
        self.instructions, self.speed = instructions, speed

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        if not text.strip():
            return
        body: dict[str, Any] = {"model": self.model, "input": text, "voice": voice or self.voice,
                                "response_format": self.response_format}
        if self.instructions:
            body["instructions"] = self.instructions
        if self.speed is not None:
            body["speed"] = self.speed
        decoder = audio_decoder(self.response_format if self.response_format != "pcm" else "pcm_24000")
        async with self.open_stream("POST", "/audio/speech", json=body) as chunks:
            async for chunk in chunks:
                for frame in _decoded(self.name, decoder.feed, chunk):
                    yield frame
        for frame in _decoded(self.name, lambda _: decoder.flush(), b""):
            yield frame


def _decoded(name: str, feed: Any, chunk: bytes) -> list[AudioFrame]:
    from voxline.errors import AudioDecodeError

    try:
        return list(feed(chunk))
    except AudioDecodeError as exc:
        raise ProviderError(f"{name} sent audio that does not decode: {exc}", provider=name,
                            retryable=True) from None


class OpenAISTT(_OpenAIClient):
    """`/audio/transcriptions` (whisper-1, gpt-4o-transcribe, ...): batch transcription; `stream()` buffers a turn
    and transcribes it at `finalize()` (no interim results)."""

    def __init__(self, *, model: str = "gpt-4o-mini-transcribe", language: str | None = None,
                 prompt: str | None = None, api_key: str | None = None, base_url: str | None = None,
                 connect_timeout: float = 5.0, first_byte_timeout: float = 30.0, name: str = "openai-stt") -> None:
        super().__init__(api_key=api_key, base_url=base_url, name=name, connect_timeout=connect_timeout,
                         first_byte_timeout=first_byte_timeout)
        self.model, self.language, self.prompt = model, language, prompt

    async def transcribe(self, audio: AudioFrame, language: str | None = None) -> Transcript:
        if audio.num_frames == 0:
            return Transcript("", is_final=True)
        wav = await asyncio.to_thread(encode_audio, audio.to_mono(), "wav")
        verbose = self.model == "whisper-1"
        data: dict[str, str] = {"model": self.model, "response_format": "verbose_json" if verbose else "json"}
        if language or self.language:
            data["language"] = str(language or self.language)
        if self.prompt:
            data["prompt"] = self.prompt
        body = await self.request_json("POST", "/audio/transcriptions", data=data,
                                       files={"file": ("audio.wav", wav, "audio/wav")})
        text = body.get("text")
        if not isinstance(text, str):
            raise malformed(self.name, "transcription (no text)", json.dumps(body)[:200], self._secret)
        segments = tuple(Segment(str(s.get("text", "")).strip(), float(s.get("start", 0.0)), float(s.get("end", 0.0)))
                         for s in body.get("segments") or [])
        return Transcript(text.strip(), is_final=True, segments=segments,
                          language=body.get("language") or language or self.language,
                          duration=float(body.get("duration") or audio.duration))

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> BufferedSTTStream:
        return BufferedSTTStream(self, language)


class BufferedSTTStream:
    """A live stream over a batch STT: keeps the turn's audio, transcribes it on `finalize()`."""

    def __init__(self, stt: OpenAISTT, language: str | None) -> None:
        self._stt = stt
        self._language = language
        self._frames: list[AudioFrame] = []
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._closed = False

    async def send(self, frame: AudioFrame) -> None:
        if self._closed:
            raise ProviderError(f"send() on a closed {self._stt.name} stream", provider=self._stt.name)
        self._frames.append(frame.to_mono())

    async def finalize(self) -> None:
        frames, self._frames = self._frames, []
        rate = frames[0].sample_rate if frames else 16000
        audio = AudioFrame.concat([f.resample(rate) for f in frames]) if frames else AudioFrame.silence(0, rate)
        try:
            self._out.put_nowait(await self._stt.transcribe(audio, self._language))
        except ProviderError as exc:
            self._out.put_nowait(exc)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Transcript]:
        while (item := await self._out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
