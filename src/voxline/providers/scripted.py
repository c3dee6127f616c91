"""Scripted providers: deterministic STT, LLM and TTS with fixed delays.

They implement the same protocols as the real providers, so a whole conversation can run with no model at all: for
framework-overhead benchmarks (shared/bench/SCENARIO.md: whatever remains beyond the fixed delays is the engine's own
cost), for fast tests of the session logic, and for trying a transport without waiting for models.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxline.audio.frame import AudioFrame
from voxline.providers.base import LLMDelta, Message, ToolCall, Transcript


class ScriptedSTTStream:
    def __init__(self, stt: ScriptedSTT) -> None:
        self._stt = stt
        self._results: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self._audio_s = 0.0

    async def send(self, frame: AudioFrame) -> None:
        before, self._audio_s = self._audio_s, self._audio_s + frame.duration
        after = self._stt.interim_after_s
        if after is not None and before < after <= self._audio_s:
            self._results.put_nowait(Transcript(self._stt.peek(), is_final=False, duration=self._audio_s))

    async def finalize(self) -> None:
        await asyncio.sleep(self._stt.final_delay_s)
        self._results.put_nowait(Transcript(self._stt.text_for(self._audio_s), is_final=True,
                                            duration=self._audio_s))

    async def close(self) -> None:
        self._results.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Transcript]:
        while (item := await self._results.get()) is not None:
            yield item


@dataclass
class ScriptedSTT:
    """Emits `text` (or the next of `texts`, one per turn) `final_delay_s` after the turn is finalized, and the same
    text as an interim result once `interim_after_s` of audio has arrived (None: no interim results)."""

    text: str = "what time is it"
    texts: list[str] = field(default_factory=list)
    final_delay_s: float = 0.100
    interim_after_s: float | None = None
    name: str = "scripted-stt"

    def peek(self) -> str:
        return self.texts[0] if self.texts else self.text

    def text_for(self, audio_s: float) -> str:
        return self.texts.pop(0) if self.texts else self.text

    async def transcribe(self, audio: AudioFrame, language: str | None = None) -> Transcript:
        await asyncio.sleep(self.final_delay_s)
        return Transcript(self.text_for(audio.duration), is_final=True, duration=audio.duration)

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> ScriptedSTTStream:
        return ScriptedSTTStream(self)


@dataclass
class ScriptedLLM:
    """Waits `first_token_s`, then streams `reply` one word (with its trailing space) every `token_interval_s`.

    With `tool_call` set and tools offered, the first round says `tool_preamble` and asks for that call instead;
    once the conversation holds a tool result, it replies with `reply`.
    """

    reply: str = "It is ten past four. Anything else?"
    first_token_s: float = 0.200
    token_interval_s: float = 0.010
    tool_call: ToolCall | None = None
    tool_preamble: str = "Let me check."
    name: str = "scripted-llm"
    calls: list[list[Message]] = field(default_factory=list)

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()
                     ) -> AsyncIterator[LLMDelta]:
        self.calls.append(list(messages))
        if self.tool_call is not None and tools and messages[-1].role != "tool":
            await asyncio.sleep(self.first_token_s)
            yield LLMDelta(text=self.tool_preamble)
            yield LLMDelta(tool_call=self.tool_call)
            return
        tokens = [w + " " for w in self.reply.split(" ")]
        tokens[-1] = tokens[-1].rstrip()
        if max_tokens is not None:
            tokens = tokens[:max_tokens]
        await asyncio.sleep(self.first_token_s)
        for i, token in enumerate(tokens):
            if i:
                await asyncio.sleep(self.token_interval_s)
            yield LLMDelta(text=token)
        yield LLMDelta(input_tokens=sum(len(m.content.split()) for m in messages), output_tokens=len(tokens))


@dataclass
class ScriptedTTS:
    """Waits `first_audio_s` per sentence, then emits a quiet tone, `seconds_per_word` per word, in `chunk_s` chunks."""

    sample_rate: int = 24000
    first_audio_s: float = 0.080
    seconds_per_word: float = 0.040
    chunk_s: float = 0.020
    name: str = "scripted-tts"

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        words = len(text.split())
        if not words:
            return
        await asyncio.sleep(self.first_audio_s)
        n = round(words * self.seconds_per_word * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        tone = (0.1 * np.sin(2 * math.pi * 220.0 * t)).astype(np.float32)
        for frame in AudioFrame.from_float(tone, self.sample_rate).chunks(self.chunk_s):
            yield frame
