"""A local file as the caller: its audio is the user's speech, the reply is collected into one frame.

Used by `voxline chat --in question.wav --out reply.wav` and by tests. The file is followed by enough silence for the
turn detector to end the turn; the transport hangs up once the agent has answered `turns` times (or on timeout).
The body of the file goes in as fast as the session takes it, but its last `realtime_tail_s` seconds and the
silence after it flow at real-time speed, so that turn-taking and the latency timeline behave as with a live caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from voxline.audio.frame import AudioFrame
from voxline.transports.base import ClientEvent


class FileTransport:
    def __init__(self, audio: AudioFrame, *, output_sample_rate: int = 24000, frame_s: float = 0.02,
                 trailing_silence_s: float = 2.0, realtime_tail_s: float = 1.5, turns: int = 1,
                 timeout_s: float = 60.0) -> None:
        self.audio = audio.to_mono()
        self._output_rate = output_sample_rate
        self.frame_s, self.trailing_silence_s, self.realtime_tail_s = frame_s, trailing_silence_s, realtime_tail_s
        self.turns, self.timeout_s = turns, timeout_s
        self.events: list[dict[str, Any]] = []
        self.reply: list[AudioFrame] = []
        self._answered = asyncio.Event()
        self._done_count = 0

    @property
    def output_sample_rate(self) -> int:
        return self._output_rate

    async def receive(self) -> AsyncIterator[AudioFrame | ClientEvent]:
        padded = AudioFrame.concat([self.audio, AudioFrame.silence(self.trailing_silence_s, self.audio.sample_rate)])
        loop = asyncio.get_running_loop()
        paced_from = max(0.0, self.audio.duration - self.realtime_tail_s)
        clock: float | None = None  # loop time at which stream time `paced_from` is due
        for frame in padded.chunks(self.frame_s):
            if frame.timestamp >= paced_from:
                clock = clock if clock is not None else loop.time()
                await asyncio.sleep(max(0.0, clock + frame.timestamp - paced_from - loop.time()))
            else:
                await asyncio.sleep(0)
            yield frame
        # Keep the line open (with silence) until the agent has finished answering.
        silence = AudioFrame.silence(self.frame_s, self.audio.sample_rate)
        t = padded.duration
        deadline = loop.time() + self.timeout_s
        while not self._answered.is_set() and loop.time() < deadline:
            await asyncio.sleep(self.frame_s)
            yield silence.with_timestamp(t)
            t += self.frame_s

    async def send_audio(self, frame: AudioFrame) -> None:
        self.reply.append(frame)

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event.get("type") == "agent_done":
            self._done_count += 1
            if self._done_count >= self.turns:
                self._answered.set()

    async def clear(self) -> None:
        self.events.append({"type": "clear"})

    def reply_audio(self) -> AudioFrame:
        if not self.reply:
            return AudioFrame.silence(0, self._output_rate)
        return AudioFrame.concat(self.reply)
