"""Silence detection over whole recordings, vectorized: one cumulative sum of squares gives the RMS of every window.

The rules are pydub's (`pydub.silence`), so thresholds and boundaries carry over unchanged: a window of
`min_silence_len` ms starting every `seek_step` ms is silent when its integer RMS (over all channels' samples) is at
or below `silence_thresh` dBFS; silent windows that touch or overlap merge into one range. pydub slices and measures
each window in a Python loop; here the sum of squares of every window comes from two lookups in one cumsum.
"""

from __future__ import annotations

import itertools

import numpy as np

from voxline.errors import AudioError


def ms_to_frame(ms: np.ndarray | float, sample_rate: int) -> np.ndarray:
    """Frame index of a time in milliseconds, truncated as pydub does (`int(ms * (rate / 1000.0))`)."""
    return (np.asarray(ms, np.float64) * (sample_rate / 1000.0)).astype(np.int64)


def window_rms(samples: np.ndarray, sample_rate: int, starts_ms: np.ndarray, length_ms: float,
               scale: float = 1.0) -> np.ndarray:
    """Integer RMS (truncated, like `audioop.rms`) of the windows [start, start + length) ms of int samples.

    `samples` is (n, channels) int; `scale` multiplies the samples first (sample-width conversion)."""
    n, channels = samples.shape
    x = samples.astype(np.int64)
    energy = np.concatenate(([0], np.cumsum((x * x).sum(axis=1))))
    a = np.minimum(ms_to_frame(starts_ms, sample_rate), n)
    b = np.minimum(ms_to_frame(np.asarray(starts_ms, np.float64) + length_ms, sample_rate), n)
    count = (b - a) * channels
    total = (energy[b] - energy[a]).astype(np.float64) * (scale * scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.floor(np.sqrt(np.where(count > 0, total / np.maximum(count, 1), 0.0)))
    return rms


def _check(min_silence_len: float, seek_step: int) -> None:
    if not min_silence_len > 0:
        raise AudioError(f"min_silence_len must be a positive number of ms, got {min_silence_len!r}")
    if isinstance(seek_step, bool) or not isinstance(seek_step, int | np.integer) or seek_step < 1:
        raise AudioError(f"seek_step must be a positive whole number of ms, got {seek_step!r}")


def detect_silence(samples: np.ndarray, sample_rate: int, length_ms: int, *, min_silence_len: int = 1000,
                   silence_thresh: float = -16.0, seek_step: int = 1, max_amplitude: float = 32768.0,
                   scale: float = 1.0) -> list[list[int]]:
    """Silent ranges `[start_ms, end_ms]` of int samples, by pydub's rules (see the module docstring)."""
    _check(min_silence_len, seek_step)
    if not np.isfinite(silence_thresh):
        raise AudioError(f"silence_thresh must be a finite dBFS value, got {silence_thresh!r}")
    if length_ms < min_silence_len:
        return []
    thresh = 10 ** (silence_thresh / 20) * max_amplitude
    last = length_ms - min_silence_len
    starts = np.arange(0, last + 1, seek_step, dtype=np.int64)
    if last % seek_step:
        starts = np.append(starts, last)
    silent = starts[window_rms(samples, sample_rate, starts, min_silence_len, scale) <= thresh]
    if silent.size == 0:
        return []
    gaps = np.diff(silent)
    breaks = np.nonzero((gaps != seek_step) & (gaps > min_silence_len))[0]
    first = np.concatenate(([silent[0]], silent[breaks + 1]))
    last_start = np.concatenate((silent[breaks], [silent[-1]]))
    return [[int(s), int(e) + int(min_silence_len)] for s, e in zip(first, last_start, strict=True)]


def invert_ranges(silent: list[list[int]], length_ms: int) -> list[list[int]]:
    """Non-silent ranges from silent ones (pydub's `detect_nonsilent` rules; empty audio has none)."""
    if length_ms == 0:
        return []
    if not silent:
        return [[0, length_ms]]
    if silent[0][0] == 0 and silent[0][1] == length_ms:
        return []
    out: list[list[int]] = []
    prev_end = 0
    for start, end in silent:
        out.append([prev_end, start])
        prev_end = end
    if silent[-1][1] != length_ms:
        out.append([prev_end, length_ms])
    if out[0] == [0, 0]:
        out.pop(0)
    return out


def keep_ranges(nonsilent: list[list[int]], keep_silence: int) -> list[list[int]]:
    """Widen each range by `keep_silence` ms; where neighbours would overlap they meet half way (pydub's rule)."""
    ranges = [[s - keep_silence, e + keep_silence] for s, e in nonsilent]
    for left, right in itertools.pairwise(ranges):
        if right[0] < left[1]:
            left[1] = (left[1] + right[0]) // 2
            right[0] = left[1]
    return ranges
