"""A reply drafted during the user's pause, before anyone knows the turn is over.

The turn detector may wait 0.6-1.6 s of silence before it ends a turn, and the words of the pause are often known
long before that (the speculative final). A `Draft` runs the LLM on those words meanwhile and keeps what it
streams; given a TTS, it also synthesizes the reply's first piece as soon as the LLM has written it. If the turn
ends with the same words and nothing else changed in the conversation, the reply replays the draft (tokens and
audio already there come at once, the rest as they are made) instead of starting over; if the user goes on
speaking, or the final words differ, the draft is cancelled, which stops the LLM within a token and the TTS at
once.

The price is work thrown away when the user only paused: local CPU time, or the tokens and characters billed by
cloud providers (`[agent] draft_replies = false` turns drafting off). A dropped draft still reports what it was
billed for (`usage` events with `"draft": "dropped"`), so the session's cost meter counts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Generic, TypeVar

from voxline.agent.sentences import SentenceSplitter
from voxline.audio.frame import AudioFrame
from voxline.observe import Observer, current_observer, reporting_to
from voxline.providers.base import LLM, TTS, LLMDelta, Message

T = TypeVar("T")


class _Recording(Generic[T]):
    """Items a task produces, kept for one reader who may start late: what is there at once, the rest as it comes,
    then the producer's error if it failed."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()
        self._finished = False
        self._error: Exception | None = None

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    def finish(self, error: Exception | None = None) -> None:
        self._finished, self._error = True, error
        self._changed.set()

    async def replay(self) -> AsyncIterator[T]:
        served = 0
        while True:
            while served < len(self.items):
                served += 1
                yield self.items[served - 1]
            if self._finished:
                if self._error is not None:
                    raise self._error
                return
            self._changed.clear()
            if served == len(self.items):
                await self._changed.wait()


class _HeldReports:
    """What the draft's synthesis reports (a TTS cache hit, a retry), held until a reply adopts its audio: a cache
    hit credits characters that only a piece spoken is charged for, so a dropped draft's hit must credit nothing."""

    def __init__(self) -> None:
        self._held: list[dict[str, Any]] | None = []  # None once released
        self._target: Observer | None = None

    def served_from_cache(self) -> bool:
        """Whether a TTS cache served the synthesis (nobody is charged for it then)."""
        return any(e.get("type") == "tts_cache" and e.get("hit") for e in self._held or [])

    def __call__(self, event: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(event)
        elif self._target is not None:
            self._target(event)

    def release(self, target: Observer | None) -> None:
        """From now on, events go to `target` (the session's observer), those held first."""
        held, self._held, self._target = self._held or [], None, target
        for event in held:
            self(event)


class Draft:
    """The LLM's reply to `user_text` (and, with `tts`, the audio of its first piece), recorded by tasks of the
    session's task group."""

    def __init__(self, llm: LLM, messages: Sequence[Message], user_text: str, history_len: int, *,
                 tasks: asyncio.TaskGroup, max_tokens: int, temperature: float,
                 tools: Sequence[dict[str, Any]] = (), tts: TTS | None = None, voice: str | None = None) -> None:
        self.user_text = user_text
        self.history_len = history_len
        """Messages in the conversation when the draft began: a draft answers that conversation only."""
        self.voice = voice
        self._deltas: _Recording[LLMDelta] = _Recording()
        self._tasks = tasks
        self._tts = tts
        self._first_piece: str | None = None
        self._speech: _Recording[AudioFrame] | None = None
        self._reports = _HeldReports()
        self._speaking: asyncio.Task[None] | None = None
        self._cancelled = False
        self._llm_name = llm.name
        self._replayed = False  # a reply reads the LLM's deltas, and reports their usage, from then on
        self._observer = current_observer()  # the session's, for what a dropped draft was billed
        stream = llm.stream(messages, max_tokens=max_tokens, temperature=temperature, tools=tools)
        self._task = tasks.create_task(self._pull(stream), name="draft-reply")

    def fits(self, user_text: str, history_len: int) -> bool:
        return user_text == self.user_text and history_len == self.history_len and not self._cancelled

    def cancel(self) -> None:
        """Stop the LLM and the TTS (called on adopted drafts too, once their reply is done)."""
        if not self._cancelled:
            self._report_unused()
        self._cancelled = True
        self._task.cancel()
        if self._speaking is not None:
            self._speaking.cancel()

    def _report_unused(self) -> None:
        """The usage of the work no reply took over: the LLM's reported tokens if no reply read them, and the
        first piece's characters if it was synthesized (not from a cache) and never played. An LLM stream cut
        before it reported its usage reports nothing."""
        if self._observer is None:
            return
        if not self._replayed:
            for delta in self._deltas.items:
                if delta.input_tokens is not None or delta.output_tokens is not None:
                    self._observer({"type": "usage", "kind": "llm", "provider": self._llm_name, "draft": "dropped",
                                    "input_tokens": delta.input_tokens, "output_tokens": delta.output_tokens})
        if self._speech is not None and self._first_piece is not None and self._tts is not None \
                and not self._reports.served_from_cache():
            self._observer({"type": "usage", "kind": "tts", "provider": self._tts.name, "draft": "dropped",
                            "characters": len(self._first_piece)})

    async def _pull(self, stream: AsyncIterator[LLMDelta]) -> None:
        splitter = SentenceSplitter()  # the reply's own splitter finds the same first piece in the same tokens
        error: Exception | None = None
        try:
            async for delta in stream:
                self._deltas.add(delta)
                if delta.text and self._tts is not None and self._first_piece is None:
                    self._speak_ahead(splitter.push(delta.text))
            if self._tts is not None and self._first_piece is None:
                self._speak_ahead(splitter.flush())
        except Exception as exc:  # raised by `replay()`, where the reply handles it as it would a live stream's
            error = exc
        finally:
            self._deltas.finish(error)

    def _speak_ahead(self, pieces: list[str]) -> None:
        if self._tts is None or not pieces:
            return
        self._first_piece, self._speech = pieces[0], _Recording()
        self._speaking = self._tasks.create_task(self._synthesize(self._tts, pieces[0], self._speech),
                                                 name="draft-speech")

    async def _synthesize(self, tts: TTS, piece: str, speech: _Recording[AudioFrame]) -> None:
        error: Exception | None = None
        try:
            with reporting_to(self._reports):
                async for frame in tts.synthesize(piece, voice=self.voice):
                    speech.add(frame)
        except Exception as exc:  # raised where the reply plays it
            error = exc
        finally:
            speech.finish(error)

    async def replay(self) -> AsyncIterator[LLMDelta]:
        """Everything the LLM has streamed so far, then the rest as it comes; stopping early stops the LLM."""
        self._replayed = True
        try:
            async for delta in self._deltas.replay():
                yield delta
        finally:
            self._task.cancel()

    def speech(self, piece: str, voice: str | None) -> AsyncIterator[AudioFrame] | None:
        """The audio of `piece` in `voice`, if this draft synthesized it (once: the reply's first piece)."""
        if self._speech is None or piece != self._first_piece or voice != self.voice:
            return None
        speech, self._speech = self._speech, None
        self._reports.release(current_observer())  # adopted: what its synthesis reported counts for this reply
        return speech.replay()
