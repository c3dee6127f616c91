"""Silero VAD v6 through onnxruntime, shared by every caller of a process.

One `SileroVAD` owns the ONNX session; `stream()` gives each caller its own small state (recurrent state, the
64 context samples the model expects before each 512-sample window, and the samples left over from odd-sized
frames). Windows pending from all streams are run as ONE batched inference (batch = number of streams) by a
micro-batcher: the first window submitted in an event-loop tick schedules a flush for the next tick,
everything submitted until then rides along, and the batch runs in a worker thread. At 100 callers a window
costs about a quarter of what it costs alone (52 vs 193 us of ONNX time, `bench/turns.py --vad-batch`), and
one core serves 100 callers at about a third of its time.

Rates: 16 kHz (512-sample windows) and 8 kHz (256-sample windows). Any other rate is refused with an
`AudioError`: the transport resamples once, with a streaming resampler; a VAD that silently resampled per
caller would hide a cost.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, ModelError
from voxline.models.store import ModelStore

_WINDOW = {16000: 512, 8000: 256}
_CONTEXT = {16000: 64, 8000: 32}
_STATE_SHAPE = (2, 128)  # per stream; the model takes (2, batch, 128)


@dataclass(slots=True)
class _Request:
    x: np.ndarray  # context + window, float32
    state: np.ndarray  # (2, 128)
    future: asyncio.Future[tuple[float, np.ndarray]]


class _MicroBatcher:
    """Collects the windows of all streams of one sample rate and runs them as one inference, one batch at a
    time."""

    def __init__(self, vad: SileroVAD, sample_rate: int) -> None:
        self._vad, self._rate = vad, sample_rate
        self._pending: list[_Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False  # a flush is scheduled or a batch is running

    def submit(self, x: np.ndarray, state: np.ndarray) -> asyncio.Future[tuple[float, np.ndarray]]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (tests): start clean on this one
            self._loop, self._pending, self._busy = loop, [], False
        fut: asyncio.Future[tuple[float, np.ndarray]] = loop.create_future()
        self._pending.append(_Request(x, state, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._flush)  # runs after every task already ready in this tick has submitted
        return fut

    def _flush(self) -> None:
        batch = [r for r in self._pending[:self._vad.max_batch] if not r.future.done()]
        del self._pending[:self._vad.max_batch]
        if not batch:
            self._busy = bool(self._pending)
            if self._busy and self._loop is not None:
                self._loop.call_soon(self._flush)
            return
        assert self._loop is not None
        self._loop.create_task(self._run(batch))

    async def _run(self, batch: list[_Request]) -> None:
        try:
            x = np.stack([r.x for r in batch])
            state = np.ascontiguousarray(np.stack([r.state for r in batch], axis=1))
            probs, states = await asyncio.to_thread(self._vad.infer, x, state, self._rate)
        except BaseException as exc:  # hand the failure to every waiter; re-raise cancellation
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
        else:
            for i, r in enumerate(batch):
                if not r.future.done():  # its caller may have been cancelled meanwhile
                    r.future.set_result((float(probs[i]), states[:, i].copy()))
        finally:
            if self._pending and self._loop is not None:
                self._loop.call_soon(self._flush)
            else:
                self._busy = False


class SileroVAD:
    """Silero VAD v6: one ONNX session per process, shared by all streams through a micro-batcher."""

    name = "silero"
    frame_duration = 0.032

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1,
                 max_batch: int = 256) -> None:
        path = Path(model_path) if model_path else ModelStore().path("silero-vad") / "silero_vad.onnx"
        if not path.is_file():
            raise ModelError(f"Silero VAD model not found at {path}; run `voxline models pull silero-vad`")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for corrupt files
            raise ModelError(f"cannot load Silero VAD model {path}: {exc}") from exc
        self.max_batch = max_batch
        self._batchers = {rate: _MicroBatcher(self, rate) for rate in _WINDOW}

    def stream(self) -> SileroStream:
        return SileroStream(self)

    def infer(self, x: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """One blocking inference: x (batch, context + window), state (2, batch, 128) -> probs (batch,), new
        state."""
        out, new_state = self._session.run(None, {"input": x.astype(np.float32, copy=False),
                                                  "state": state.astype(np.float32, copy=False),
                                                  "sr": np.array(sample_rate, dtype=np.int64)})
        return np.asarray(out).reshape(-1), np.asarray(new_state)

    def submit(self, x: np.ndarray, state: np.ndarray,
               sample_rate: int) -> asyncio.Future[tuple[float, np.ndarray]]:
        """Queue one window of one stream for the next batched inference."""
        return self._batchers[sample_rate].submit(x, state)


class SileroStream:
    """One caller's VAD state. Frames of any size go in; each complete window gets a probability."""

    def __init__(self, vad: SileroVAD) -> None:
        self._vad = vad
        self.reset()

    def reset(self) -> None:
        """Forget everything: recurrent state, context, buffered samples and the stream's rate."""
        self._rate: int | None = None
        self._state = np.zeros(_STATE_SHAPE, np.float32)
        self._context = np.zeros(_CONTEXT[16000], np.float32)
        self._leftover = np.zeros(0, np.float32)
        self._last = 0.0

    @property
    def window_samples(self) -> int:
        return _WINDOW[self._rate or 16000]

    def _check(self, frame: AudioFrame) -> np.ndarray:
        if frame.sample_rate not in _WINDOW:
            raise AudioError(f"Silero VAD takes 16000 or 8000 Hz audio, got {frame.sample_rate} Hz; "
                             "resample the stream first (voxline.audio.frame.Resampler)")
        if self._rate is None:
            self._rate = frame.sample_rate
            self._context = np.zeros(_CONTEXT[self._rate], np.float32)
        elif frame.sample_rate != self._rate:
            raise AudioError(f"this VAD stream runs at {self._rate} Hz but got a {frame.sample_rate} Hz "
                             "frame; call reset() or use a new stream to change rate")
        return frame.mono_float32()

    async def windows(self, frame: AudioFrame) -> list[tuple[int, float]]:
        """(end, probability) of every window this frame completes; `end` is the window's last sample + 1,
        counted from the start of `frame` (so `frame.timestamp + end / rate` is when the window ends)."""
        samples = self._check(frame)
        assert self._rate is not None
        size = _WINDOW[self._rate]
        buf = np.concatenate([self._leftover, samples]) if self._leftover.size else samples
        offset = self._leftover.size  # samples of buf that came from earlier frames
        results: list[tuple[int, float]] = []
        start = 0
        try:
            while start + size <= buf.size:
                window = buf[start:start + size]
                x = np.concatenate([self._context, window])
                prob, state = await self._vad.submit(x, self._state, self._rate)
                self._state, self._context = state, x[-self._context.size:]
                start += size
                results.append((start - offset, prob))
                self._last = prob
        finally:  # on cancellation, keep what was not consumed so the stream stays aligned
            self._leftover = buf[start:].copy()
        return results

    async def probability(self, frame: AudioFrame) -> float:
        """Highest speech probability among the windows `frame` completes (the last one if it completes
        none)."""
        probs = [p for _, p in await self.windows(frame)]
        return max(probs) if probs else self._last
