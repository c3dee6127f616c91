"""Paced playout of reply audio, and the bookkeeping of what the caller has actually heard.

Audio leaves at real-time speed, at most `lead_s` ahead of the caller's playback: enough to ride out network jitter,
little enough that a barge-in leaves almost nothing buffered on the caller's side, and that "audio sent" is a good
measure of "audio heard". A caller that reports its playback position (`report_played`) refines the measure.

Audio is resampled to the transport's rate as it is queued, so frames queued before `run` starts (a drafted first
piece, already synthesized) leave at the same rate as the rest.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import numpy as np

from voxline.agent.context import heard_per_piece, join_heard
from voxline.agent.timeline import TurnTimeline
from voxline.audio.frame import AudioFrame, Resampler
from voxline.transports.base import Transport

_END: Final = object()
CHARS_PER_S = 15.0
"""Speaking rate assumed for a piece still being synthesized when no finished piece has told the real one (about
150 words a minute)."""


class Playout:
    def __init__(self, transport: Transport, timeline: TurnTimeline, *, lead_s: float = 0.2,
                 chunk_s: float = 0.06, max_queued: int = 256) -> None:
        self.transport, self.timeline = transport, timeline
        self._out_rate = transport.output_sample_rate
        self.lead_s, self.chunk_s = lead_s, chunk_s
        self.spans: list[tuple[str, float, float]] = []
        """(text, start, end) of each piece, in seconds of reply audio."""
        self._queue: asyncio.Queue[AudioFrame | object] = asyncio.Queue(max_queued)
        self._queued_s = 0.0
        self._piece: tuple[str, float] | None = None
        self._resampler: Resampler | None = None
        self._sent_s = 0.0
        self._play_start: float | None = None
        self._stopped_at: float | None = None
        self._reported: tuple[float, float] | None = None  # (played seconds, monotonic time of the report)
        self._done = asyncio.Event()
        self._closed = False
        self._started = False

    # ---- producer side (the TTS loop) ---------------------------------------------------------------------------

    def begin_piece(self, text: str) -> None:
        self._piece = (text, self._queued_s)
        self._resampler = None

    async def put(self, frame: AudioFrame) -> None:
        frame = frame.to_mono()
        if frame.sample_rate != self._out_rate:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, self._out_rate)
            frame = self._resampler.process(frame)
        if frame.num_frames:
            self._queued_s += frame.duration
            await self._queue.put(frame)

    async def end_piece(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.process(
                AudioFrame(np.zeros((0, 1), np.int16), self._resampler.in_rate), last=True)
            if tail.num_frames:
                self._queued_s += tail.duration
                await self._queue.put(tail)
        if self._piece is not None:
            text, start = self._piece
            self.spans.append((text, start, self._queued_s))
            self._piece = None

    def close(self) -> None:
        """No more audio for this reply."""
        self._closed = True
        if not self._queue.full():  # a full queue needs no marker: `run` checks the flag as it drains
            self._queue.put_nowait(_END)

    # ---- consumer side ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send queued audio in `chunk_s` pieces, paced to real time plus `lead_s`."""
        self._started = True
        try:
            while not (self._closed and self._queue.empty()):
                item = await self._queue.get()
                if item is _END:
                    break
                assert isinstance(item, AudioFrame)
                for chunk in item.chunks(self.chunk_s):
                    await self._pace()
                    await self.transport.send_audio(chunk)
                    self.timeline.mark("first_audio_sent")
                    self._sent_s += chunk.duration
        finally:
            self._done.set()

    async def _pace(self) -> None:
        now = time.monotonic()
        if self._play_start is None or now - self._play_start > self._sent_s:
            # First chunk, or the caller's buffer ran dry while we waited for audio: playback (re)starts now.
            self._play_start = now - self._sent_s
            return
        ahead = self._sent_s - (now - self._play_start)
        if ahead > self.lead_s:
            await asyncio.sleep(ahead - self.lead_s)

    async def drain(self) -> None:
        """Wait until everything sent has been played out on the caller's side."""
        if not self._started:
            return
        await self._done.wait()
        if self._play_start is not None:
            remaining = self._sent_s - (time.monotonic() - self._play_start)
            if remaining > 0:
                await asyncio.sleep(remaining)

    async def stop(self) -> None:
        """Barge-in: freeze the heard position and make the caller drop what it buffered."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
            try:
                await self.transport.clear()
            except Exception:  # the caller may be gone already; nothing left to clear then
                pass

    # ---- what was heard -----------------------------------------------------------------------------------------

    def report_played(self, seconds: float) -> None:
        self._reported = (seconds, time.monotonic())

    def played_seconds(self) -> float:
        if self._play_start is None:
            return 0.0
        now = self._stopped_at or time.monotonic()
        estimate = now - self._play_start
        if self._reported is not None:
            played, at = self._reported
            estimate = min(estimate, played + (now - at))
        return max(0.0, min(self._sent_s, estimate))

    def heard(self, played_s: float | None = None) -> str:
        """The words the caller heard, up to `played_s` seconds of reply audio (default: as played so far)."""
        return join_heard(self.heard_pieces(played_s))

    def heard_pieces(self, played_s: float | None = None) -> list[str]:
        """The heard words of each piece begun, in order, up to `played_s` seconds of reply audio (see `heard`).

        A piece still being synthesized counts too: its start plays before its end is known. Its length is
        estimated from its characters at the speaking rate of the finished pieces (or `CHARS_PER_S`), and never
        shorter than the audio it has queued."""
        spans = list(self.spans)
        if self._piece is not None:
            text, start = self._piece
            done_chars = sum(len(t) for t, _, _ in spans)
            done_s = sum(end - begin for _, begin, end in spans)
            rate = done_chars / done_s if done_chars and done_s > 0 else CHARS_PER_S
            spans.append((text, start, start + max(self._queued_s - start, len(text) / rate)))
        return heard_per_piece(spans, self.played_seconds() if played_s is None else played_s)

    def recent_text(self, window_s: float = 5.0) -> str:
        """Text of the pieces playing in the last `window_s` seconds (what an echo could carry back now)."""
        played = self.played_seconds()
        pieces = [text for text, start, end in self.spans if end >= played - window_s and start <= played + self.lead_s]
        if self._piece is not None:
            pieces.append(self._piece[0])
        return " ".join(pieces)

    def text_so_far(self) -> str:
        return " ".join(text for text, _, _ in self.spans) + (f" {self._piece[0]}" if self._piece else "")
