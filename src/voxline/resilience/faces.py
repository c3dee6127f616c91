"""The kind-specific faces of a wrapper (TTS `synthesize`, LLM `stream`, STT `transcribe`/`stream`, VAD
`stream`), and the dispatch that gives a wrapper the face of the provider it wraps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from voxline.audio.frame import AudioFrame
from voxline.providers.base import LLMDelta, Message, PrefillingLLM, STTStream, Transcript, VADStream
from voxline.resilience.streams import _ResilientSTTStream, _ResilientVADStream
from voxline.resilience.wrapper import Kind, _aclose, _Wrapper, kind_of


class _TTSFace(_Wrapper):
    sample_rate: int

    def _setup_face(self) -> None:
        self.sample_rate = int(self.inner.sample_rate)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        make, resume = self._tts_plan(text, voice)
        it = self._iterate(make, AudioFrame, resume)
        try:
            async for frame in it:
                yield frame if frame.sample_rate == self.sample_rate else frame.resample(self.sample_rate)
        finally:
            await _aclose(it)


class _LLMFace(_Wrapper):
    def _setup_face(self) -> None:
        pass

    def prefill(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> None:
        """Passed to the first provider, the one that answers while it works."""
        if isinstance(self.inner, PrefillingLLM):
            self.inner.prefill(messages, max_tokens=max_tokens)

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()
                     ) -> AsyncIterator[LLMDelta]:
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "tools": tools}
        make, resume = self._llm_plan(list(messages), kwargs)
        it = self._iterate(make, LLMDelta, resume)
        try:
            async for delta in it:
                yield delta
        finally:
            await _aclose(it)


class _STTFace(_Wrapper):
    def _setup_face(self) -> None:
        pass

    async def transcribe(self, audio: AudioFrame, language: str | None = None) -> Transcript:
        return await self._call(lambda p: p.transcribe(audio, language), Transcript)

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> STTStream:
        return _ResilientSTTStream(self, self._stream_policy(), sample_rate, language)


class _VADFace(_Wrapper):
    frame_duration: float

    def _setup_face(self) -> None:
        self.frame_duration = float(self.inner.frame_duration)

    def stream(self) -> VADStream:
        return _ResilientVADStream(self)


_FACES: dict[Kind, type[_Wrapper]] = {"tts": _TTSFace, "llm": _LLMFace, "stt": _STTFace, "vad": _VADFace}
_CLASSES: dict[tuple[type, Kind], type] = {}


def _kinded(cls: type, kind: Kind) -> type:
    """`cls` combined with the face of `kind` (e.g. Retrying + TTS face = a class with `synthesize`)."""
    key = (cls, kind)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"{cls.__name__}{kind.upper()}", (cls, _FACES[kind]), {"__doc__": cls.__doc__})
    return _CLASSES[key]


class _KindDispatch:
    """`Wrapper(provider, ...)` builds an instance of the wrapper class with the provider kind's face."""

    def __new__(cls, *providers: Any, **kwargs: Any) -> Any:
        first = providers[0] if providers else kwargs.get("provider", kwargs.get("primary"))
        return object.__new__(_kinded(cls, kind_of(first)))
