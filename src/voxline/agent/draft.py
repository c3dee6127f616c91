"""A reply drafted during the user's pause, before anyone knows the turn is over.

The turn detector may wait 0.6-1.6 s of silence before it ends a turn, and the words of the pause are often known
long before that (the speculative final). A `Draft` runs the LLM on those words meanwhile and keeps what it
streams. If the turn ends with the same words and nothing else changed in the conversation, the reply replays the
draft (tokens already there come at once, the rest as they are generated) instead of asking the LLM again; if the
user goes on speaking, or the final words differ, the draft is cancelled, which stops the LLM within a token.

The price is LLM work thrown away when the user only paused: local CPU time, or tokens billed by a cloud LLM
(`[agent] draft_replies = false` turns drafting off).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from voxline.providers.base import LLM, LLMDelta, Message


class Draft:
    """The LLM's reply to `user_text`, streamed into a buffer by a task of the session's task group."""

    def __init__(self, llm: LLM, messages: Sequence[Message], user_text: str, history_len: int, *,
                 tasks: asyncio.TaskGroup, max_tokens: int, temperature: float,
                 tools: Sequence[dict[str, Any]] = ()) -> None:
        self.user_text = user_text
        self.history_len = history_len
        """Messages in the conversation when the draft began: a draft answers that conversation only."""
        self._deltas: list[LLMDelta] = []
        self._changed = asyncio.Event()
        self._finished = False
        self._error: Exception | None = None
        self._cancelled = False
        stream = llm.stream(messages, max_tokens=max_tokens, temperature=temperature, tools=tools)
        self._task = tasks.create_task(self._pull(stream), name="draft-reply")

    def fits(self, user_text: str, history_len: int) -> bool:
        return user_text == self.user_text and history_len == self.history_len and not self._cancelled

    def cancel(self) -> None:
        self._cancelled = True
        self._task.cancel()

    async def _pull(self, stream: AsyncIterator[LLMDelta]) -> None:
        try:
            async for delta in stream:
                self._deltas.append(delta)
                self._changed.set()
        except Exception as exc:  # raised by `replay()`, where the reply handles it as it would a live stream's
            self._error = exc
        finally:
            self._finished = True
            self._changed.set()

    async def replay(self) -> AsyncIterator[LLMDelta]:
        """Everything the LLM has streamed so far, then the rest as it comes; stopping early cancels the draft."""
        served = 0
        try:
            while True:
                while served < len(self._deltas):
                    served += 1
                    yield self._deltas[served - 1]
                if self._finished:
                    if self._error is not None:
                        raise self._error
                    return
                self._changed.clear()
                if served == len(self._deltas):
                    await self._changed.wait()
        finally:
            self._task.cancel()
