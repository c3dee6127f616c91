"""A caller on the agent's WebSocket: speaks audio in real time and keeps everything the agent sends, with the
arrival time of each reply chunk (for the silences a caller would hear)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets

from voxline.audio.frame import AudioFrame


class Caller:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.event_times: list[float] = []
        self.audio = bytearray()
        self.audio_times: list[float] = []
        """time.monotonic() at the arrival of each binary (audio) message."""
        self.arrived = asyncio.Event()

    async def listen(self) -> None:
        async for message in self.ws:
            if isinstance(message, bytes):
                self.audio += message
                self.audio_times.append(time.monotonic())
            else:
                self.events.append(json.loads(message))
                self.event_times.append(time.monotonic())
            self.arrived.set()

    async def say(self, audio: AudioFrame, speed: float = 1.0) -> None:
        for frame in audio.chunks(0.02):
            await self.ws.send(frame.pcm())
            await asyncio.sleep(0.02 / speed)

    async def wait_for(self, kind: str, count: int = 1, within_s: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            while len(found := [e for e in self.events if e["type"] == kind]) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return found[count - 1]

    def arrival(self, kind: str) -> float:
        """When the first event of `kind` arrived (time.monotonic())."""
        return next(t for e, t in zip(self.events, self.event_times, strict=True) if e["type"] == kind)
