"""The session's recovery rules: canned phrases synthesized at start-up, what counts as no speech, and a
bounded number of recoveries per session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from voxline.audio.frame import AudioFrame
from voxline.errors import ProviderError
from voxline.providers.base import TTS, Transcript
from voxline.resilience.wrapper import Observer, _aclose

DEFAULT_PHRASES: Mapping[str, str] = {
    "not_understood": "Sorry, I didn't catch that. Could you repeat?",
    "error": "Sorry, I'm having trouble right now. Please try again in a moment.",
    "still_there": "Are you still there?",
    "goodbye": "Sorry, something went wrong on my side. Goodbye for now.",
}


class FallbackPhrases:
    """A few sentences synthesized once at start-up, kept as audio in memory, played when all else fails.

    `await phrases.prepare()` at start-up (a failure there is an error at start-up, not in the middle of a call);
    then `phrases.frames("error")` is instant, and `phrases.guard(tts_stream)` passes a synthesis through and
    plays the "error" phrase in its place if it fails before any audio came out.
    """

    def __init__(self, tts: TTS, phrases: Mapping[str, str] | None = None, *, voice: str | None = None,
                 observer: Observer | None = None) -> None:
        self.tts, self.voice, self.observer = tts, voice, observer
        self.texts: dict[str, str] = dict(DEFAULT_PHRASES if phrases is None else phrases)
        self._audio: dict[str, tuple[AudioFrame, ...]] = {}

    async def prepare(self) -> None:
        """Synthesize every phrase (raises `ProviderError` naming the phrase that failed)."""
        for key, text in self.texts.items():
            try:
                frames = tuple([f async for f in self.tts.synthesize(text, voice=self.voice)])
            except Exception as exc:
                raise ProviderError(f"cannot prepare the fallback phrase {key!r} with "
                                    f"{getattr(self.tts, 'name', 'the TTS')}: {exc}") from exc
            if not frames or sum(f.duration for f in frames) <= 0:
                raise ProviderError(f"the TTS produced no audio for the fallback phrase {key!r}")
            self._audio[key] = frames

    @property
    def ready(self) -> bool:
        return bool(self._audio) and set(self._audio) == set(self.texts)

    def frames(self, key: str) -> tuple[AudioFrame, ...]:
        if key not in self.texts:
            raise KeyError(f"no fallback phrase {key!r}; known: {', '.join(sorted(self.texts))}")
        if key not in self._audio:
            raise ProviderError(f"fallback phrase {key!r} is not prepared: call `await phrases.prepare()` at start")
        return self._audio[key]

    def text(self, key: str) -> str:
        return self.texts[key]

    async def play(self, key: str) -> AsyncIterator[AudioFrame]:
        frames = self.frames(key)
        if self.observer is not None:
            self.observer({"type": "provider", "event": "phrase", "phrase": key, "text": self.texts[key]})
        for frame in frames:
            yield frame

    async def guard(self, frames: AsyncIterator[AudioFrame], key: str = "error") -> AsyncIterator[AudioFrame]:
        """`frames`, or the `key` phrase if they fail before any audio; a failure after some audio just ends."""
        produced = False
        try:
            async for frame in frames:
                produced = True
                yield frame
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.observer is not None:
                self.observer({"type": "provider", "event": "failure", "provider": getattr(self.tts, "name", ""),
                               "error": str(exc), "after_audio": produced})
            if not produced:
                async for frame in self.play(key):
                    yield frame
        finally:
            await _aclose(frames)


def is_no_speech(transcript: Transcript | str | None, *, min_chars: int = 2, min_duration_s: float = 0.0) -> bool:
    """True when a final transcript should be handled as "no speech": empty, only punctuation or noise tags
    ("[BLANK_AUDIO]", "(music)"), fewer than `min_chars` letters, or audio shorter than `min_duration_s`."""
    if transcript is None:
        return True
    text = transcript if isinstance(transcript, str) else transcript.text
    if isinstance(transcript, Transcript) and min_duration_s and 0 < transcript.duration < min_duration_s:
        return True
    depth, letters = 0, 0
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth = max(0, depth - 1)
        elif depth == 0 and ch.isalnum():
            letters += 1
    return letters < min_chars


class RetryBudget:
    """A bounded number of recoveries per session (re-asks, fallback phrases): after `limit`, give up politely.

    `take()` returns True while budget is left; `ok()` after a good turn refills one (`refill_on_success`).
    """

    def __init__(self, limit: int = 3, *, refill_on_success: bool = True) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self.limit, self.used, self.refill = limit, 0, refill_on_success

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def ok(self) -> None:
        if self.refill and self.used:
            self.used -= 1
