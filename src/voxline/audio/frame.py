"""The one audio type of voxline, and every conversion between sample formats.

`AudioFrame` is an immutable block of int16 PCM with its rate and channel count. Transports, providers, the cache and
the editing toolkit all pass frames, so a conversion (resampling, mixing down, telephony companding) is written once,
here, and validated once, here: bad input fails with an `AudioError` at the boundary, not deep inside numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from voxline.errors import AudioError

MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise AudioError(f"sample rate must be an integer, got {sample_rate!r}")
    if not 1 <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {sample_rate} Hz is outside 1..{MAX_SAMPLE_RATE}")
    return int(sample_rate)


def _check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"channel count must be an integer in 1..{MAX_CHANNELS}, got {channels!r}")
    return int(channels)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """Convert float samples in [-1, 1] to int16, clipping; NaN or infinite samples are an error."""
    arr = np.asarray(samples)
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"expected float samples, got dtype {arr.dtype}")
    if arr.size and not np.isfinite(arr).all():
        raise AudioError("audio contains NaN or infinite samples")
    return np.round(np.clip(arr, -1.0, 1.0) * 32767.0).astype(np.int16)


@dataclass(frozen=True, slots=True, eq=False)
class AudioFrame:
    """Immutable int16 PCM audio: `samples` has shape (n_frames, channels) and is read-only.

    `timestamp` is the stream time of the first sample in seconds, for timelines; it plays no part in the audio.
    """

    samples: np.ndarray
    sample_rate: int
    channels: int = 1
    timestamp: float = field(default=0.0)

    def __post_init__(self) -> None:
        rate = _check_rate(self.sample_rate)
        arr = np.asarray(self.samples)
        if arr.dtype != np.int16:
            raise AudioError(f"AudioFrame samples must be int16, got {arr.dtype} (use AudioFrame.from_float)")
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1) if self.channels == 1 else arr.reshape(-1, self.channels)
        if arr.ndim != 2:
            raise AudioError(f"AudioFrame samples must be 1-D or 2-D, got shape {arr.shape}")
        channels = _check_channels(arr.shape[1])
        if self.channels != channels:
            raise AudioError(f"samples have {channels} channel(s) but channels={self.channels}")
        if arr.flags.writeable:  # own a private copy, so no caller can change the audio underneath us
            arr = arr.copy()
            arr.flags.writeable = False
        object.__setattr__(self, "samples", arr)
        object.__setattr__(self, "sample_rate", rate)

    # ---- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_pcm(cls, data: bytes | bytearray | memoryview, sample_rate: int, channels: int = 1,
                 timestamp: float = 0.0) -> AudioFrame:
        """Frame from little-endian PCM16 bytes (the wire format of voxline's transports)."""
        channels = _check_channels(channels)
        width = 2 * channels
        if len(data) % width:
            raise AudioError(f"PCM16 data of {len(data)} bytes is not a whole number of {width}-byte frames")
        arr = np.frombuffer(bytes(data), dtype="<i2").astype(np.int16, copy=False)
        return cls(arr.reshape(-1, channels), sample_rate, channels, timestamp)

    @classmethod
    def from_float(cls, samples: Any, sample_rate: int, timestamp: float = 0.0) -> AudioFrame:
        """Frame from float samples in [-1, 1]: 1-D for mono or (n, channels)."""
        arr = np.asarray(samples)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
            raise AudioError(f"from_float expects a float array, got dtype {arr.dtype}")
        pcm = float_to_int16(arr)
        if pcm.ndim == 1:
            pcm = pcm.reshape(-1, 1)
        if pcm.ndim != 2:
            raise AudioError(f"audio must be 1-D or (n, channels), got shape {pcm.shape}")
        return cls(pcm, sample_rate, pcm.shape[1], timestamp)

    @classmethod
    def from_array(cls, samples: Any, sample_rate: int, timestamp: float = 0.0) -> AudioFrame:
        """Frame from int16 or float samples, 1-D (mono) or (n, channels); other dtypes are refused."""
        arr = np.asarray(samples)
        if arr.dtype == np.int16:
            arr2 = arr.reshape(-1, 1) if arr.ndim == 1 else arr
            if arr2.ndim != 2:
                raise AudioError(f"audio must be 1-D or (n, channels), got shape {arr.shape}")
            return cls(arr2, sample_rate, arr2.shape[1], timestamp)
        if np.issubdtype(arr.dtype, np.floating):
            return cls.from_float(arr, sample_rate, timestamp)
        raise AudioError(f"unsupported sample dtype {arr.dtype}: give int16 or float samples")

    @classmethod
    def silence(cls, duration_s: float, sample_rate: int, channels: int = 1) -> AudioFrame:
        n = max(0, round(duration_s * _check_rate(sample_rate)))
        return cls(np.zeros((n, _check_channels(channels)), np.int16), sample_rate, channels)

    @classmethod
    def concat(cls, frames: Iterable[AudioFrame]) -> AudioFrame:
        """Join frames end to end; they must share rate and channel count."""
        items = list(frames)
        if not items:
            raise AudioError("cannot concatenate zero frames")
        first = items[0]
        for f in items[1:]:
            if (f.sample_rate, f.channels) != (first.sample_rate, first.channels):
                raise AudioError(
                    f"cannot join {f.sample_rate} Hz/{f.channels} ch audio to {first.sample_rate} Hz/"
                    f"{first.channels} ch audio; resample or remix first")
        return cls(np.concatenate([f.samples for f in items]), first.sample_rate, first.channels, first.timestamp)

    # ---- properties ---------------------------------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate

    def __len__(self) -> int:
        return self.num_frames

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AudioFrame):
            return NotImplemented
        return (self.sample_rate, self.channels) == (other.sample_rate, other.channels) and np.array_equal(
            self.samples, other.samples)

    def __hash__(self) -> int:
        return hash((self.sample_rate, self.channels, self.samples.tobytes()))

    def __repr__(self) -> str:
        return (f"AudioFrame({self.duration:.3f} s, {self.sample_rate} Hz, {self.channels} ch, "
                f"t={self.timestamp:.3f})")

    # ---- conversions --------------------------------------------------------------------------------------------

    def float32(self) -> np.ndarray:
        """Samples as float32 in [-1, 1), shape (n, channels)."""
        return self.samples.astype(np.float32) / 32768.0

    def mono_float32(self) -> np.ndarray:
        """Mixed-down float32 samples, 1-D: the input most models want."""
        return self.to_mono().samples[:, 0].astype(np.float32) / 32768.0

    def pcm(self) -> bytes:
        """Little-endian interleaved PCM16 bytes."""
        return self.samples.astype("<i2", copy=False).tobytes()

    def to_mono(self) -> AudioFrame:
        if self.channels == 1:
            return self
        mixed = self.samples.astype(np.int32).mean(axis=1)
        return AudioFrame(np.round(mixed).astype(np.int16).reshape(-1, 1), self.sample_rate, 1, self.timestamp)

    def with_channels(self, channels: int) -> AudioFrame:
        """Mix down to mono, or spread mono over `channels` identical channels."""
        channels = _check_channels(channels)
        if channels == self.channels:
            return self
        mono = self.to_mono()
        if channels == 1:
            return mono
        return AudioFrame(np.repeat(mono.samples, channels, axis=1), self.sample_rate, channels, self.timestamp)

    def resample(self, sample_rate: int, quality: str = "HQ") -> AudioFrame:
        """Resample with soxr (band-limited, no aliasing). Chunked streams should use `Resampler` instead."""
        rate = _check_rate(sample_rate)
        if rate == self.sample_rate:
            return self
        if self.num_frames == 0:
            return AudioFrame(np.zeros((0, self.channels), np.int16), rate, self.channels, self.timestamp)
        out = soxr.resample(self.samples, self.sample_rate, rate, quality=quality)
        return AudioFrame(np.asarray(out, np.int16).reshape(-1, self.channels), rate, self.channels, self.timestamp)

    def slice(self, start_s: float, end_s: float | None = None) -> AudioFrame:
        """Sub-frame between two times in seconds (clamped to the frame)."""
        a = max(0, min(self.num_frames, round(start_s * self.sample_rate)))
        b = self.num_frames if end_s is None else max(a, min(self.num_frames, round(end_s * self.sample_rate)))
        return AudioFrame(self.samples[a:b], self.sample_rate, self.channels, self.timestamp + a / self.sample_rate)

    def chunks(self, duration_s: float) -> Iterator[AudioFrame]:
        """Split into consecutive frames of `duration_s` (the last may be shorter), timestamps advancing."""
        step = max(1, round(duration_s * self.sample_rate))
        for i in range(0, self.num_frames, step):
            yield AudioFrame(self.samples[i:i + step], self.sample_rate, self.channels,
                             self.timestamp + i / self.sample_rate)

    def with_timestamp(self, timestamp: float) -> AudioFrame:
        return AudioFrame(self.samples, self.sample_rate, self.channels, timestamp)

    def rms(self) -> float:
        """Root-mean-square level in [0, 1] (0 for empty audio)."""
        if self.num_frames == 0:
            return 0.0
        x = self.samples.astype(np.float64) / 32768.0
        return float(np.sqrt(np.mean(x * x)))


class Resampler:
    """Streaming resampler for chunked audio: keeps soxr's filter state between chunks, so no clicks at the seams."""

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1, quality: str = "HQ") -> None:
        self.in_rate, self.out_rate, self.channels = _check_rate(in_rate), _check_rate(out_rate), channels
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(
            in_rate, out_rate, channels, dtype="int16", quality=quality)

    def process(self, frame: AudioFrame, last: bool = False) -> AudioFrame:
        if frame.sample_rate != self.in_rate or frame.channels != self.channels:
            raise AudioError(f"resampler expects {self.in_rate} Hz/{self.channels} ch, got "
                             f"{frame.sample_rate} Hz/{frame.channels} ch")
        if self._stream is None:
            return frame
        out = self._stream.resample_chunk(frame.samples, last=last)
        return AudioFrame(np.asarray(out, np.int16).reshape(-1, self.channels), self.out_rate, self.channels,
                          frame.timestamp)


# ---- G.711 telephony companding (mu-law and A-law), vectorized -------------------------------------------------------

_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635


def _mulaw_encode(pcm: np.ndarray) -> np.ndarray:
    # G.711 on 14-bit magnitudes, exactly as CPython's audioop.lin2ulaw (the >> 2 truncates before the bias)
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), 8158) + 0x21  # 14-bit bias 0x84 >> 2; 8158 + 0x21 is the top code 0x7F
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 5, 0, 7)
    mantissa = (mag >> (exponent + 1)) & 0x0F
    return (((exponent << 4) | mantissa) ^ mask).astype(np.uint8)


def _mulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def _alaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32) >> 3  # A-law works on 13-bit magnitudes
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.where(x >= 0, x, -x - 1)
    mag = np.minimum(mag, 0xFFF)
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exponent, mantissa = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, mag, -mag).astype(np.int16)


_MULAW_DECODE = _mulaw_table()
_ALAW_DECODE = _alaw_table()


def encode_mulaw(frame: AudioFrame) -> bytes:
    """G.711 mu-law bytes of a mono frame (resample to 8 kHz first for telephony)."""
    return _mulaw_encode(frame.to_mono().samples[:, 0]).tobytes()


def decode_mulaw(data: bytes, sample_rate: int = 8000, timestamp: float = 0.0) -> AudioFrame:
    return AudioFrame(_MULAW_DECODE[np.frombuffer(bytes(data), np.uint8)].reshape(-1, 1), sample_rate, 1, timestamp)


def encode_alaw(frame: AudioFrame) -> bytes:
    """G.711 A-law bytes of a mono frame."""
    return _alaw_encode(frame.to_mono().samples[:, 0]).tobytes()


def decode_alaw(data: bytes, sample_rate: int = 8000, timestamp: float = 0.0) -> AudioFrame:
    return AudioFrame(_ALAW_DECODE[np.frombuffer(bytes(data), np.uint8)].reshape(-1, 1), sample_rate, 1, timestamp)
