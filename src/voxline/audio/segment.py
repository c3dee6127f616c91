"""`Sound`: an immutable, editable piece of audio with the verbs pydub users know, on top of `AudioFrame`.

A `Sound` holds one `AudioFrame` (`sound.frame`, int16, the engine's only sample store) plus a `sample_width` in
bytes (1, 2 or 4). Times are milliseconds and follow pydub's rules (a time becomes a frame index by truncation,
`len()` rounds), gains are dB applied as pydub does (multiply, floor, clip), so code and numbers move over from
`AudioSegment` unchanged. Every operation is vectorized numpy and returns a new `Sound`.

Sample width: samples are always kept as int16. `sample_width=1` quantizes them to 8 bits (the low byte is zero,
exactly what pydub's 8-bit data holds, scaled by 256) and exports 8-bit PCM; `sample_width=4` exports 32-bit PCM and
reports `max`, `rms` and `get_array_of_samples` on the 32-bit scale, but carries only 16 bits of precision.
"""

from __future__ import annotations

import array
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from voxline.audio import silence as _silence
from voxline.audio.codecs import FORMATS, encode_audio, format_from_path, read_audio, write_file
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, UnsupportedFormatError

MAX_GAIN_DB = 200.0  # beyond this every non-zero sample clips (or rounds to zero): almost surely a mistake
_WIDTH_SHIFT = {1: -8, 2: 0, 4: 16}  # int16 -> width scale, as a bit shift
_ARRAY_TYPE = {1: "b", 2: "h", 4: "i"}
_WAV_SUBTYPE = {1: "PCM_U8", 2: "PCM_16", 4: "PCM_32"}
_FLAC_SUBTYPE = {1: "PCM_S8", 2: "PCM_16", 4: "PCM_24"}


def db_to_float(db: float) -> float:
    """Amplitude ratio of a gain in dB."""
    return float(10 ** (db / 20))


def ratio_to_db(ratio: float) -> float:
    """Gain in dB of an amplitude ratio (-inf for 0)."""
    return -math.inf if ratio == 0 else 20 * math.log10(ratio)


def _check_gain(db: Any, what: str = "gain") -> float:
    if isinstance(db, bool) or not isinstance(db, int | float | np.integer | np.floating):
        raise AudioError(f"{what} must be a number of dB, got {db!r}")
    value = float(db)
    if not math.isfinite(value) or abs(value) > MAX_GAIN_DB:
        raise AudioError(f"{what} of {db!r} dB is not a usable gain; it must be finite and within "
                         f"±{MAX_GAIN_DB:g} dB (use Sound.silent() for silence)")
    return value


def _mul(samples: np.ndarray, factor: np.ndarray | float) -> np.ndarray:
    """Multiply int16 samples by a gain, flooring and clipping exactly like `audioop.mul`."""
    out = np.floor(np.clip(samples.astype(np.float64) * factor, -32768.0, 32767.0))
    return out.astype(np.int16)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Saturating sum of int16 samples (`audioop.add`)."""
    return np.clip(a.astype(np.int32) + b.astype(np.int32), -32768, 32767).astype(np.int16)


@dataclass(frozen=True, slots=True, eq=False)
class Sound:
    """Immutable audio for editing; see the module docstring for the time, gain and sample-width rules."""

    frame: AudioFrame
    sample_width: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.frame, AudioFrame):
            raise AudioError(f"Sound wraps an AudioFrame, got {type(self.frame).__name__}")
        if self.sample_width not in _WIDTH_SHIFT:
            raise AudioError(f"sample_width must be 1, 2 or 4 bytes, got {self.sample_width!r}")
        if self.sample_width == 1 and (self.frame.samples & 0xFF).any():
            object.__setattr__(self, "frame", self._framed(self.frame.samples))

    # ---- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, source: str | os.PathLike[str] | bytes | BinaryIO, format: str | None = None) -> Sound:
        """Decode wav/flac/ogg/mp3/opus/m4a (from a path, bytes or a binary stream).

        `format` is accepted for pydub compatibility; the codec is detected from the data itself."""
        if format is not None and format.lower().lstrip(".") not in (*FORMATS, "oga", "mp4", "aac", "wave"):
            raise UnsupportedFormatError(f"unknown audio format {format!r}; use one of {', '.join(FORMATS)}")
        frame = read_audio(source)
        return cls(frame, _file_width(source))

    @classmethod
    def silent(cls, duration: float = 1000, frame_rate: int = 11025, channels: int = 1) -> Sound:
        """Digital silence of `duration` ms (pydub's default rate of 11025 Hz)."""
        if not math.isfinite(duration) or duration < 0:
            raise AudioError(f"silence duration must be a non-negative number of ms, got {duration!r}")
        n = int(duration * (frame_rate / 1000.0))
        return cls(AudioFrame(np.zeros((n, channels), np.int16), frame_rate, channels))

    @classmethod
    def empty(cls, frame_rate: int = 16000, channels: int = 1) -> Sound:
        return cls.silent(0, frame_rate, channels)

    @classmethod
    def from_array(cls, samples: Any, frame_rate: int, sample_width: int = 2) -> Sound:
        """From int16 or float samples, 1-D (mono) or (n, channels)."""
        return cls(AudioFrame.from_array(samples, frame_rate), sample_width)

    def _spawn(self, samples: np.ndarray, frame_rate: int | None = None) -> Sound:
        rate = self.frame.sample_rate if frame_rate is None else frame_rate
        return Sound(AudioFrame(samples.reshape(-1, self.channels), rate, self.channels), self.sample_width)

    def _framed(self, samples: np.ndarray) -> AudioFrame:
        """Frame of int16 samples, quantized to this sound's width (8-bit: low byte cleared, flooring)."""
        if self.sample_width == 1:
            samples = (samples.astype(np.int16) >> 8) << 8
        return AudioFrame(samples.astype(np.int16, copy=False), self.frame.sample_rate, self.frame.channels)

    # ---- facts ---------------------------------------------------------------------------------------------

    @property
    def frame_rate(self) -> int:
        return self.frame.sample_rate

    @property
    def channels(self) -> int:
        return self.frame.channels

    @property
    def frame_width(self) -> int:
        return self.sample_width * self.channels

    @property
    def samples(self) -> np.ndarray:
        """The int16 samples, (n, channels), read-only."""
        return self.frame.samples

    @property
    def duration_seconds(self) -> float:
        return self.frame.num_frames / self.frame_rate

    def frame_count(self, ms: float | None = None) -> float:
        """Frames in the sound, or in `ms` milliseconds (pydub's `frame_count`)."""
        return float(self.frame.num_frames) if ms is None else ms * (self.frame_rate / 1000.0)

    def __len__(self) -> int:
        """Length in milliseconds, rounded."""
        return round(1000 * (self.frame.num_frames / self.frame_rate))

    @property
    def max_possible_amplitude(self) -> float:
        return float(2 ** (8 * self.sample_width - 1))

    def _scale(self) -> float:
        return float(2.0 ** _WIDTH_SHIFT[self.sample_width])

    @property
    def rms(self) -> int:
        """Integer RMS over all samples of all channels, on the sample width's scale (`audioop.rms`)."""
        if self.frame.num_frames == 0:
            return 0
        x = self.samples.astype(np.float64)
        return int(math.sqrt(float(np.dot(x.ravel(), x.ravel())) * self._scale() ** 2 / x.size))

    @property
    def max(self) -> int:
        """Largest absolute sample value, on the sample width's scale."""
        if self.frame.num_frames == 0:
            return 0
        return int(np.abs(self.samples.astype(np.int64)).max() * self._scale())

    @property
    def dBFS(self) -> float:
        """RMS level in dB below full scale (-inf for silence)."""
        return ratio_to_db(self.rms / self.max_possible_amplitude)

    @property
    def max_dBFS(self) -> float:
        """Peak level in dB below full scale (-inf for silence)."""
        return ratio_to_db(self.max / self.max_possible_amplitude)

    def get_array_of_samples(self) -> array.array[int]:
        """Interleaved samples as an `array.array` of the sample width ('b', 'h' or 'i')."""
        x = self.samples.astype(np.int32).ravel()
        shift = _WIDTH_SHIFT[self.sample_width]
        x = x >> -shift if shift < 0 else x << shift
        return array.array(_ARRAY_TYPE[self.sample_width], x.astype({1: np.int8, 2: np.int16, 4: np.int32}[
            self.sample_width]).tobytes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sound):
            return NotImplemented
        return self.sample_width == other.sample_width and self.frame == other.frame

    def __hash__(self) -> int:
        return hash((self.sample_width, self.frame))

    def __repr__(self) -> str:
        return (f"Sound({len(self)} ms, {self.frame_rate} Hz, {self.channels} ch, "
                f"{8 * self.sample_width}-bit)")

    # ---- slicing -------------------------------------------------------------------------------------------

    def _position(self, ms: float) -> int:
        if not isinstance(ms, int | float | np.integer | np.floating) or isinstance(ms, bool) or math.isnan(ms):
            raise AudioError(f"a position must be a number of ms, got {ms!r}")
        if ms < 0:
            ms = len(self) + ms
        if ms == math.inf:
            return self.frame.num_frames
        return max(0, min(self.frame.num_frames, int(self.frame_count(ms))))

    def __getitem__(self, key: slice | float) -> Any:
        """`s[1000:2500]` is the audio from 1 s to 2.5 s; `s[::500]` yields 500 ms chunks; `s[i]` is 1 ms."""
        if isinstance(key, slice):
            if key.step:
                return self._chunks(key.step, key.start, key.stop)
            a = 0 if key.start is None else self._position(key.start)
            b = self.frame.num_frames if key.stop is None else self._position(key.stop)
        else:
            a = self._position(key)
            b = self._position(key + 1) if key >= 0 else self._position(len(self) + key + 1)
        return self._spawn(self.samples[a:max(a, b)])

    def _chunks(self, step: Any, start: Any, stop: Any) -> Iterator[Sound]:
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
            raise AudioError(f"slice step must be a positive whole number of ms, got {step!r}")
        first, last, step = slice(start, stop, step).indices(len(self))
        return (self[i:i + step] for i in range(first, last, step))

    def get_sample_slice(self, start_sample: int | None = None, end_sample: int | None = None) -> Sound:
        """Frames [start_sample, end_sample) by frame index, clamped."""
        return self._spawn(self.samples[max(0, start_sample or 0):end_sample])

    # ---- gain and arithmetic -------------------------------------------------------------------------------

    def apply_gain(self, volume_change: float) -> Sound:
        """Change the level by `volume_change` dB (multiply, floor, clip; pydub's arithmetic)."""
        db = _check_gain(volume_change)
        return Sound(self._framed(_mul(self.samples, db_to_float(db))), self.sample_width)

    def __add__(self, other: Any) -> Sound:
        """`sound + 6` is 6 dB louder; `a + b` plays b after a (rates, channels and widths synced up first)."""
        if isinstance(other, Sound):
            return self.append(other, crossfade=0)
        return self.apply_gain(other)

    def __radd__(self, other: Any) -> Sound:
        if isinstance(other, int | float) and other == 0:  # sum([a, b, c])
            return self
        raise TypeError(f"cannot add a Sound to {type(other).__name__}")

    def __sub__(self, other: Any) -> Sound:
        """`sound - 3` is 3 dB quieter."""
        if isinstance(other, Sound):
            raise TypeError("Sounds can't be subtracted from each other; use overlay() with a gain instead")
        return self.apply_gain(-_check_gain(other))

    def __mul__(self, other: Any) -> Sound:
        """`sound * 3` repeats it three times; `a * b` overlays b on a, looped (pydub's meaning)."""
        if isinstance(other, Sound):
            return self.overlay(other, position=0, loop=True)
        if isinstance(other, bool) or not isinstance(other, int | np.integer):
            raise TypeError(f"a Sound can be repeated a whole number of times, not {other!r}")
        if other < 0:
            raise AudioError(f"cannot repeat a sound {other} times")
        return self._spawn(np.tile(self.samples, (int(other), 1)))

    def append(self, other: Sound, crossfade: float = 100) -> Sound:
        """`other` after this sound, overlapping by `crossfade` ms (linear dB fade from/to -120 dB).

        Mismatched sounds are synced as pydub does: both take the higher rate (soxr resampling), the higher channel
        count and the wider sample width."""
        a, b = _sync(self, other)
        if not crossfade:
            return Sound(AudioFrame.concat([a.frame, b.frame]), a.sample_width)
        if crossfade < 0:
            raise AudioError(f"crossfade must be >= 0 ms, got {crossfade!r}")
        if crossfade > len(a) or crossfade > len(b):
            raise AudioError(f"crossfade of {crossfade} ms is longer than one of the sounds "
                             f"({len(a)} ms, {len(b)} ms)")
        xf = a[-crossfade:].fade(to_gain=-120, start=0, end=math.inf)
        xf = xf.overlay(b[:crossfade].fade(from_gain=-120, start=0, end=math.inf), position=0, loop=True)
        return Sound(AudioFrame.concat([a[:-crossfade].frame, xf.frame, b[crossfade:].frame]), a.sample_width)

    # ---- format conversions --------------------------------------------------------------------------------

    def set_frame_rate(self, frame_rate: int) -> Sound:
        """Resample with soxr (band-limited; pydub uses audioop.ratecv, so samples differ slightly)."""
        if frame_rate == self.frame_rate:
            return self
        return Sound(_requantize(self.frame.resample(frame_rate), self.sample_width), self.sample_width)

    def set_channels(self, channels: int) -> Sound:
        """Mono to n identical channels, or n channels to mono (mean, floored as pydub's audioop.tomono does)."""
        if channels == self.channels:
            return self
        if self.channels == 1:
            return Sound(self.frame.with_channels(channels), self.sample_width)
        if channels == 1:
            x = self.samples.astype(np.float64)
            mono = np.floor(x.sum(axis=1) * 0.5) if self.channels == 2 else np.floor(x.mean(axis=1))
            return Sound(AudioFrame(mono.astype(np.int16).reshape(-1, 1), self.frame_rate, 1), self.sample_width)
        raise AudioError(f"cannot turn {self.channels} channels into {channels}; go through mono "
                         "(set_channels(1)) or pick channels with split_to_mono()")

    def split_to_mono(self) -> list[Sound]:
        return [Sound(AudioFrame(self.samples[:, [c]], self.frame_rate, 1), self.sample_width)
                for c in range(self.channels)]

    def set_sample_width(self, sample_width: int) -> Sound:
        """Change the sample width (1, 2 or 4 bytes); going to 1 byte drops the low 8 bits (floor)."""
        if sample_width not in _WIDTH_SHIFT:
            raise AudioError(f"sample_width must be 1, 2 or 4 bytes, got {sample_width!r}")
        return Sound(self.frame, sample_width)

    # ---- edits ---------------------------------------------------------------------------------------------

    def reverse(self) -> Sound:
        return self._spawn(self.samples[::-1])

    def fade(self, to_gain: float = 0, from_gain: float = 0, start: float | None = None, end: float | None = None,
             duration: float | None = None) -> Sound:
        """Fade linearly in amplitude from `from_gain` dB to `to_gain` dB between two of start/end/duration (ms).

        Audio before the fade is at `from_gain`, after it at `to_gain`. Fades over 100 ms change gain once per ms,
        shorter ones once per sample (pydub's rule, so results match sample for sample)."""
        if None not in (duration, end, start):
            raise AudioError('give only two of "start", "end" and "duration"')
        if [start, end, duration].count(None) > 1:
            raise AudioError('give two of "start", "end" and "duration"')
        nan = any(v is not None and math.isnan(v) for v in (start, end, duration))
        if nan or (duration is not None and math.isinf(duration)):  # NaN would reach int() as a frame index
            raise AudioError(f"fade times must be numbers of ms and the duration finite, got start={start!r}, "
                             f"end={end!r}, duration={duration!r}")
        to_gain, from_gain = _check_gain(to_gain, "to_gain"), _check_gain(from_gain, "from_gain")
        if to_gain == 0 and from_gain == 0:
            return self
        n_ms = len(self)
        start = min(n_ms, start) if start is not None else None
        end = min(n_ms, end) if end is not None else None
        if start is not None and start < 0:
            start += n_ms
        if end is not None and end < 0:
            end += n_ms
        if duration is not None and duration < 0:
            raise AudioError(f"fade duration must be >= 0 ms, got {duration!r}")
        if duration is not None:
            if start is not None:
                end = start + duration
            else:
                assert end is not None
                start = end - duration
        else:
            assert start is not None and end is not None
            duration = end - start
        assert start is not None and end is not None
        if start < 0 or end > n_ms or duration < 0:
            raise AudioError(f"fade from {start} to {end} ms does not fit in {n_ms} ms of audio")
        rate, n = self.frame_rate, self.frame.num_frames
        from_power = db_to_float(from_gain)
        gain_delta = db_to_float(to_gain) - from_power
        gains = np.full(n, 1.0)
        a = min(n, int(self.frame_count(start)))
        b = min(n, int(self.frame_count(end)))
        gains[:a] = from_power
        gains[b:] = db_to_float(to_gain)
        if duration > 100:  # a fractional last ms is a (short) step of its own, so the ramp reaches `end`
            steps = math.ceil(duration)
            bounds = np.minimum(_silence.ms_to_frame(start + np.arange(steps + 1), rate), b)
            per_ms = from_power + (gain_delta / duration) * np.arange(steps)
            gains[bounds[0]:bounds[-1]] = np.repeat(per_ms, np.diff(bounds))
        else:  # the step counts frames up to the fade's nominal end, even where rounding put it past the audio
            steps = int(self.frame_count(end)) - int(self.frame_count(start))
            if steps > 0 and b > a:
                gains[a:b] = from_power + (gain_delta / steps) * np.arange(b - a)
        return Sound(self._framed(_mul(self.samples, gains[:, None])), self.sample_width)

    def fade_in(self, duration: float) -> Sound:
        """Fade in from -120 dB over the first `duration` ms."""
        return self.fade(from_gain=-120, duration=duration, start=0)

    def fade_out(self, duration: float) -> Sound:
        """Fade out to -120 dB over the last `duration` ms."""
        return self.fade(to_gain=-120, duration=duration, end=math.inf)

    def overlay(self, other: Sound, position: float = 0, loop: bool = False, times: int | None = None,
                gain_during_overlay: float | None = None) -> Sound:
        """Mix `other` into this sound from `position` ms (saturating add); the result keeps this sound's length.

        `times` plays it that many times back to back, `loop=True` until the end; `gain_during_overlay` (dB) turns
        this sound down wherever `other` plays."""
        if loop:
            times = -1
        elif times is None:
            times = 1
        elif times == 0:
            return self
        elif times < 0:
            raise AudioError(f"times must be >= 0, got {times!r}")
        a, b = _sync(self, other)
        base = a.samples
        p = a._position(position)
        room = base.shape[0] - p
        if room <= 0 or b.frame.num_frames == 0:
            return a
        reps = math.ceil(room / b.frame.num_frames) if times < 0 else times
        layer = np.tile(b.samples, (reps, 1))[:room]
        stop = p + layer.shape[0]
        under = base[p:stop]
        if gain_during_overlay:
            under = _mul(under, db_to_float(_check_gain(gain_during_overlay, "gain_during_overlay")))
        out = np.concatenate([base[:p], _add(under, layer), base[stop:]])
        return Sound(a._framed(out), a.sample_width)

    def normalize(self, headroom: float = 0.1) -> Sound:
        """Scale so the peak sits `headroom` dB below full scale (silence is returned unchanged)."""
        if not math.isfinite(headroom) or headroom < 0:
            raise AudioError(f"headroom must be a finite number of dB >= 0, got {headroom!r}")
        peak = self.max
        if peak == 0:
            return self
        target = self.max_possible_amplitude * db_to_float(-headroom)
        return self.apply_gain(ratio_to_db(target / peak))

    def compress_dynamic_range(self, threshold: float = -20.0, ratio: float = 4.0, attack: float = 5.0,
                               release: float = 50.0) -> Sound:
        """Downward compressor (pydub's design): where the RMS of the last `attack` ms exceeds `threshold` dBFS,
        turn the gain down towards (1 - 1/ratio) of the excess, ramping over `attack` ms and back over `release` ms.

        The RMS is a vectorized sliding window; the attack/release envelope is a recurrence, run once per
        millisecond (pydub runs it once per sample) and held over the samples of that millisecond."""
        if not ratio >= 1 or not math.isfinite(ratio):
            raise AudioError(f"ratio must be >= 1, got {ratio!r}")
        if not (attack > 0 and release > 0):
            raise AudioError("attack and release must be positive numbers of ms")
        threshold = _check_gain(threshold, "threshold")
        n = self.frame.num_frames
        if n == 0:
            return self
        thresh_rms = self.max_possible_amplitude * db_to_float(threshold)
        look = max(1, int(self.frame_count(attack)))
        hop = max(1, int(self.frame_count(1)))
        ends = np.arange(0, n, hop)
        x = self.samples.astype(np.float64)
        energy = np.concatenate(([0.0], np.cumsum((x * x).sum(axis=1))))
        lo = np.maximum(ends - look, 0)
        count = np.maximum((ends - lo) * self.channels, 1)
        rms = np.sqrt((energy[ends] - energy[lo]) / count) * self._scale()
        with np.errstate(divide="ignore"):
            over = np.where(rms > 0, 20 * np.log10(np.maximum(rms, 1e-300) / thresh_rms), 0.0)
        max_att = (1 - 1 / ratio) * np.maximum(over, 0.0)
        loud = rms > thresh_rms
        inc = max_att / attack  # per ms
        dec = max_att / release
        att = np.empty(ends.size)
        level = 0.0
        for i in range(ends.size):  # envelope recurrence: one step per ms (15 000 steps for 15 s)
            if loud[i] and level <= max_att[i]:
                level = min(level + inc[i], max_att[i])
            else:
                level = max(level - dec[i], 0.0)
            att[i] = level
        gains = np.repeat(10 ** (-att / 20), hop)[:n]
        return Sound(self._framed(_mul(self.samples, gains[:, None])), self.sample_width)

    # ---- silence -------------------------------------------------------------------------------------------

    def _silence_args(self) -> dict[str, Any]:
        return {"max_amplitude": self.max_possible_amplitude, "scale": self._scale()}

    def detect_silence(self, min_silence_len: int = 1000, silence_thresh: float = -16.0,
                       seek_step: int = 1) -> list[list[int]]:
        """Silent ranges `[start_ms, end_ms]`: windows of `min_silence_len` ms at or below `silence_thresh` dBFS."""
        return _silence.detect_silence(self.samples, self.frame_rate, len(self), min_silence_len=min_silence_len,
                                       silence_thresh=silence_thresh, seek_step=seek_step, **self._silence_args())

    def detect_nonsilent(self, min_silence_len: int = 1000, silence_thresh: float = -16.0,
                         seek_step: int = 1) -> list[list[int]]:
        """The ranges between the silent ones."""
        return _silence.invert_ranges(self.detect_silence(min_silence_len, silence_thresh, seek_step), len(self))

    def split_on_silence(self, min_silence_len: int = 1000, silence_thresh: float = -16.0,
                         keep_silence: int | bool = 100, seek_step: int = 1) -> list[Sound]:
        """The non-silent stretches as separate sounds, each keeping up to `keep_silence` ms of silence around it
        (`True`: all of it, `False`: none)."""
        if isinstance(keep_silence, bool):
            keep_silence = len(self) if keep_silence else 0
        ranges = _silence.keep_ranges(self.detect_nonsilent(min_silence_len, silence_thresh, seek_step),
                                      keep_silence)
        return [self[max(s, 0):min(e, len(self))] for s, e in ranges]

    def strip_silence(self, silence_len: int = 1000, silence_thresh: float = -16.0, padding: int = 100) -> Sound:
        """Remove silences longer than `silence_len` ms, keeping `padding` ms and crossfading the joins."""
        if padding > silence_len:
            raise AudioError("padding cannot be longer than silence_len")
        chunks = self.split_on_silence(silence_len, silence_thresh, padding)
        if not chunks:
            return self[0:0]
        out = chunks[0]
        for chunk in chunks[1:]:
            out = out.append(chunk, crossfade=padding / 2)
        return out

    def detect_leading_silence(self, silence_threshold: float = -50.0, chunk_size: int = 10) -> int:
        """Milliseconds of silence at the start (first `chunk_size` ms window above the threshold)."""
        if chunk_size < 1:
            raise AudioError("chunk_size must be >= 1 ms")
        starts = np.arange(0, max(len(self), 1), chunk_size)
        rms = _silence.window_rms(self.samples, self.frame_rate, starts, chunk_size, self._scale())
        loud = np.nonzero(rms > db_to_float(silence_threshold) * self.max_possible_amplitude)[0]
        return int(starts[loud[0]]) if loud.size else len(self)

    # ---- output --------------------------------------------------------------------------------------------

    def export(self, out: str | os.PathLike[str] | BinaryIO | None = None, format: str | None = None,
               bitrate: str | int | None = None, tags: dict[str, str] | None = None) -> Any:
        """Encode to wav/flac/ogg/mp3/opus/m4a: the format comes from `format`, else the path's extension, else wav.

        With a path, writes it atomically and returns the Path; with a binary stream, writes into it and returns
        it; with nothing, returns the bytes. wav and flac are written at the sample width (flac: 32 bit -> 24)."""
        if format is not None:
            fmt = format_from_path(f"x.{format.lower().lstrip('.')}")
        elif isinstance(out, str | os.PathLike):
            fmt = format_from_path(out)
        else:
            fmt = "wav"
        data = self._encode(fmt, bitrate, tags)
        if out is None:
            return data
        if isinstance(out, str | os.PathLike):
            return write_file(data, out)
        out.write(data)
        return out

    def _encode(self, fmt: str, bitrate: str | int | None, tags: dict[str, str] | None) -> bytes:
        if self.sample_width == 2 or fmt not in ("wav", "flac"):
            return encode_audio(self.frame, fmt, bitrate=bitrate, tags=tags)
        import soundfile as sf

        if self.frame.num_frames == 0:
            raise AudioError("cannot encode empty audio")
        subtype = (_WAV_SUBTYPE if fmt == "wav" else _FLAC_SUBTYPE)[self.sample_width]
        buf = io.BytesIO()
        data = self.samples.astype(np.int32) << 16  # full-scale int32; libsndfile narrows to the subtype
        sf.write(buf, data, self.frame_rate, subtype=subtype, format=fmt.upper())
        return buf.getvalue()

    def raw_data_array(self) -> np.ndarray:
        """Float32 samples in [-1, 1), (n, channels): the array models and librosa want."""
        return self.frame.float32()


def _requantize(frame: AudioFrame, sample_width: int) -> AudioFrame:
    if sample_width != 1:
        return frame
    return AudioFrame((frame.samples >> 8) << 8, frame.sample_rate, frame.channels)


def _file_width(source: Any) -> int:
    """Sample width a file stores (8-bit -> 1, 24/32-bit and float -> 4, else 2)."""
    import soundfile as sf

    try:
        src = io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray) else source
        subtype = sf.info(src).subtype
        if not isinstance(src, str | os.PathLike) and hasattr(src, "seek"):
            src.seek(0)
    except Exception:  # not a libsndfile format (mp3/opus/m4a decode through PyAV): 16-bit
        return 2
    if subtype in ("PCM_U8", "PCM_S8"):
        return 1
    if subtype in ("PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        return 4
    return 2


def _sync(a: Sound, b: Sound) -> tuple[Sound, Sound]:
    """Bring two sounds to the higher rate, the higher channel count and the wider sample width (pydub's rule)."""
    if not isinstance(b, Sound):
        raise TypeError(f"expected a Sound, got {type(b).__name__}")
    rate = max(a.frame_rate, b.frame_rate)
    channels = max(a.channels, b.channels)
    width = max(a.sample_width, b.sample_width)
    out = []
    for s in (a, b):
        if s.frame_rate != rate:
            s = s.set_frame_rate(rate)
        if s.channels != channels:
            s = s.set_channels(channels)
        if s.sample_width != width:
            s = s.set_sample_width(width)
        out.append(s)
    return out[0], out[1]


def concatenate(sounds: Sequence[Sound], crossfade: float = 0) -> Sound:
    """Join sounds end to end (synced as `Sound.append` does)."""
    if not sounds:
        raise AudioError("cannot concatenate zero sounds")
    out = sounds[0]
    for s in sounds[1:]:
        out = out.append(s, crossfade=crossfade)
    return out
