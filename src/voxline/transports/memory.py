"""An in-process transport: the application pushes caller audio and reads the agent's output from queues.

For embedding voxline in another program (no network hop), for benchmarks that must measure the engine and not a
socket, and for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from voxline.audio.frame import AudioFrame
from voxline.transports.base import ClientEvent

_HANGUP = object()


class MemoryTransport:
    def __init__(self, output_sample_rate: int = 24000, max_input: int = 500) -> None:
        self._output_rate = output_sample_rate
        self._input: asyncio.Queue[AudioFrame | ClientEvent | object] = asyncio.Queue(max_input)
        self.events: list[dict[str, Any]] = []
        self.audio: list[AudioFrame] = []
        self.first_audio_at: float | None = None
        """monotonic time of the first reply audio handed to this transport"""
        self.event_arrived = asyncio.Event()

    @property
    def output_sample_rate(self) -> int:
        return self._output_rate

    # ---- application side ---------------------------------------------------------------------------------------

    async def push(self, item: AudioFrame | ClientEvent) -> None:
        await self._input.put(item)

    def hangup(self) -> None:
        self._input.put_nowait(_HANGUP)

    async def wait_for(self, event_type: str, within_s: float = 30.0) -> dict[str, Any]:
        """Wait until an event of `event_type` has been sent, and return the first such event."""
        async with asyncio.timeout(within_s):
            while True:
                for event in self.events:
                    if event.get("type") == event_type:
                        return event
                self.event_arrived.clear()
                await self.event_arrived.wait()

    # ---- session side -------------------------------------------------------------------------------------------

    async def receive(self) -> AsyncIterator[AudioFrame | ClientEvent]:
        while (item := await self._input.get()) is not _HANGUP:
            assert isinstance(item, AudioFrame | ClientEvent)
            yield item

    async def send_audio(self, frame: AudioFrame) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        self.audio.append(frame)

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.event_arrived.set()

    async def clear(self) -> None:
        await self.send_event({"type": "clear"})
