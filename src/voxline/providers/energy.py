"""RMS-energy VAD: numpy only, any sample rate, no model. The fallback when Silero is not wanted.

A 20 ms window whose RMS level reaches `threshold` (0.01 of full scale, about -40 dBFS) counts as speech
(probability 1.0), anything quieter as silence (0.0). It cannot tell speech from noise; it is the baseline.
"""

from __future__ import annotations

import numpy as np

from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError


class EnergyVAD:
    """Energy threshold VAD with the same `VAD` protocol as Silero; stateless apart from frame buffering."""

    name = "energy"

    def __init__(self, threshold: float = 0.01, frame_duration: float = 0.02) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"energy threshold must be in (0, 1), got {threshold}")
        if not 0.001 <= frame_duration <= 1.0:
            raise ValueError(f"frame_duration must be in [0.001, 1] s, got {frame_duration}")
        self.threshold = threshold
        self.frame_duration = frame_duration

    def stream(self) -> EnergyStream:
        return EnergyStream(self.threshold, self.frame_duration)


class EnergyStream:
    """Buffers frames of any size into `frame_duration` windows and scores each by its RMS level."""

    def __init__(self, threshold: float, frame_duration: float) -> None:
        self._threshold, self._duration = threshold, frame_duration
        self.reset()

    def reset(self) -> None:
        self._rate: int | None = None
        self._leftover = np.zeros(0, np.float32)
        self._last = 0.0

    @property
    def window_samples(self) -> int:
        return max(1, round(self._duration * (self._rate or 16000)))

    async def windows(self, frame: AudioFrame) -> list[tuple[int, float]]:
        """(end, probability) per completed window, `end` counted in samples from the start of `frame`."""
        if self._rate is None:
            self._rate = frame.sample_rate
        elif frame.sample_rate != self._rate:
            raise AudioError(f"this VAD stream runs at {self._rate} Hz but got a {frame.sample_rate} Hz "
                             "frame; call reset() or use a new stream to change rate")
        samples = frame.mono_float32()
        offset = self._leftover.size
        buf = np.concatenate([self._leftover, samples]) if offset else samples
        size = self.window_samples
        n = buf.size // size
        out: list[tuple[int, float]] = []
        if n:
            blocks = buf[:n * size].astype(np.float64).reshape(n, size)
            rms = np.sqrt(np.mean(blocks * blocks, axis=1))
            out = [((i + 1) * size - offset, 1.0 if r >= self._threshold else 0.0) for i, r in enumerate(rms)]
            self._last = out[-1][1]
        self._leftover = buf[n * size:].copy()
        return out

    async def probability(self, frame: AudioFrame) -> float:
        """1.0 if any completed window of `frame` is loud enough (the previous verdict if it completes
        none)."""
        probs = [p for _, p in await self.windows(frame)]
        return max(probs) if probs else self._last
