"""Helpers that play a caller: cut real recordings into turns and feed them to a transport in real time."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from conftest import SPEECH
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.transports.memory import MemoryTransport

FRAME_S = 0.02


def utterance(index: int = 0, seconds: float | None = None, subset: str = "single") -> AudioFrame:
    """The `index`-th recording of `subset` from the shared speech set, 16 kHz mono, optionally cut."""
    rows = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines()]
    row = [r for r in rows if r["file"].startswith(subset + "/")][index]
    audio = read_audio(Path(SPEECH) / row["file"]).to_mono().resample(16000)
    return audio if seconds is None else audio.slice(0, seconds)


async def feed(transport: MemoryTransport, audio: AudioFrame, *, start: float = 0.0, speed: float = 1.0) -> float:
    """Push `audio` as 20 ms frames paced at `speed` x real time; returns the stream time after the last frame."""
    t0 = time.monotonic()
    t = start
    for k, frame in enumerate(audio.chunks(FRAME_S)):
        await asyncio.sleep(max(0.0, t0 + k * FRAME_S / speed - time.monotonic()))
        await transport.push(frame.with_timestamp(t))
        t += frame.duration
    return t


async def silence(transport: MemoryTransport, seconds: float, *, start: float, speed: float = 1.0) -> float:
    return await feed(transport, AudioFrame.silence(seconds, 16000), start=start, speed=speed)
