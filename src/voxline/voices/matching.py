"""Embedded voice matching: bend a Piper voice toward a reference speaker with the WORLD vocoder, no neural cloner.

A voice is, to a listener and to a speaker encoder, mostly its pitch (where it sits and how much it moves) and its
spectral envelope (where the formants lie: vocal-tract length; and the overall tilt: the recording and the
voice's brightness). Both are measured on the reference samples and on the Piper voice speaking a calibration
text; the transform then, per utterance, through WORLD (analysis: DIO + StoneMask or Harvest for F0, CheapTrick
for the envelope, D4C for aperiodicity):

- F0: log F0 is shifted to the target's median and scaled to its spread (voiced frames only);
- formants: the envelope is warped along frequency by the factor that best aligns the two long-term average
  envelopes (grid search of the correlation of the de-tilted log envelopes, 200-5000 Hz);
- colour: what still differs between the long-term envelopes after the warp is applied as a smooth gain
  (1 kHz smoothing, at most +-12 dB, scaled by `eq_strength`).

It is a post-processor (`MatchedVoiceTTS` wraps any `TTS`), so it adds WORLD's cost to each piece of speech:
measured in bench/voices.py. It cannot give Piper another speaker's timbre in full; bench/voices.py measures how
much closer to each target it gets with the speaker encoder.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, ConfigError, ModelError, ProviderError
from voxline.providers.base import TTS
from voxline.providers.piper import split_for_speech

Method = Literal["dio", "harvest"]
ANALYSIS_RATE = 16000
# Frequency grid of the stored long-term envelopes (Hz): up to just under the 16 kHz analysis Nyquist.
GRID = np.linspace(50.0, 7800.0, 156)
WARP_RANGE = (0.82, 1.22)
F0_FLOOR, F0_CEIL = 60.0, 500.0
CALIBRATION_TEXT = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, and the shells she "
    "sells are surely sea shells. Would you like to hear the weather for tomorrow morning? It will be sunny, "
    "with a light breeze from the west, and a high of twenty two degrees. Thank you for calling, goodbye.")
INSTALL_HINT = "voice matching needs pyworld: pip install 'voxline[voices]'"


def _pyworld() -> Any:
    try:
        import pyworld
    except ImportError as exc:
        raise ModelError(f"{INSTALL_HINT} ({exc})") from exc
    return pyworld


@dataclass(frozen=True, slots=True)
class VoiceStats:
    """Pitch and long-term spectral envelope of some speech (the envelope in natural-log power on `GRID`)."""

    f0_median_hz: float
    f0_log_std: float
    envelope: tuple[float, ...]
    voiced_s: float


@dataclass(frozen=True, slots=True)
class MatchProfile:
    """The transform from one voice toward another; stored in the voice library as a dict."""

    f0_ratio: float = 1.0
    f0_spread: float = 1.0
    warp: float = 1.0
    eq: tuple[float, ...] = ()
    eq_strength: float = 1.0
    method: Method = "dio"
    frame_period_ms: float = 5.0
    target_f0_hz: float = 0.0
    base_f0_hz: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatchProfile:
        try:
            values: dict[str, Any] = {k: (tuple(float(x) for x in v) if k == "eq" else v) for k, v in data.items()}
            profile = cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid voice matching profile: {exc}") from exc
        if profile.method not in ("dio", "harvest") or not 0.5 <= profile.frame_period_ms <= 20:
            raise ConfigError(f"invalid voice matching analysis: {profile.method} at {profile.frame_period_ms} ms")
        if not (0.25 <= profile.f0_ratio <= 4 and 0.2 <= profile.f0_spread <= 5 and 0.5 <= profile.warp <= 2):
            raise ConfigError("voice matching profile out of range (f0_ratio, f0_spread or warp)")
        return profile

    def with_quality(self, method: Method, frame_period_ms: float) -> MatchProfile:
        return MatchProfile(**{**asdict(self), "method": method, "frame_period_ms": frame_period_ms})

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _f0(pw: Any, x: np.ndarray, rate: int, method: Method, frame_period: float) -> tuple[np.ndarray, np.ndarray]:
    if method == "harvest":
        f0, t = pw.harvest(x, rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=frame_period)
    else:
        f0, t = pw.dio(x, rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=frame_period)
        f0 = pw.stonemask(x, f0, t, rate)
    return f0, t


def analyse(audio: Sequence[AudioFrame] | AudioFrame, method: Method = "harvest") -> VoiceStats:
    """Pitch and long-term envelope of one or more pieces of speech (blocking)."""
    pw = _pyworld()
    pieces = [audio] if isinstance(audio, AudioFrame) else list(audio)
    log_f0: list[np.ndarray] = []
    env_sum = np.zeros_like(GRID)
    env_frames = 0
    for piece in pieces:
        x = piece.to_mono().resample(ANALYSIS_RATE).mono_float32().astype(np.float64)
        if x.size < ANALYSIS_RATE // 4:
            continue
        f0, t = _f0(pw, x, ANALYSIS_RATE, method, 5.0)
        voiced = f0 > 0
        if voiced.sum() < 10:
            continue
        sp = pw.cheaptrick(x, f0, t, ANALYSIS_RATE)[voiced]
        freqs = np.linspace(0, ANALYSIS_RATE / 2, sp.shape[1])
        # Loud voiced frames only: the envelope of speech, not of breaths and the room.
        energy = sp.sum(axis=1)
        loud = sp[energy >= np.percentile(energy, 30)]
        env_sum += np.interp(GRID, freqs, np.log(np.maximum(loud, 1e-16)).sum(axis=0))
        env_frames += loud.shape[0]
        log_f0.append(np.log(f0[voiced]))
    if not log_f0:
        raise AudioError("no voiced speech found to analyse (too short, silent or unvoiced)")
    lf = np.concatenate(log_f0)
    return VoiceStats(float(np.exp(np.median(lf))), float(np.std(lf)),
                      tuple(float(v) for v in env_sum / env_frames), lf.size * 0.005)


def _detrend(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return y - np.polyval(np.polyfit(x, y, 1), x)


def _smooth(y: np.ndarray, width_hz: float) -> np.ndarray:
    step = float(GRID[1] - GRID[0])
    n = max(1, round(width_hz / step))
    kernel = np.hanning(n + 2)[1:-1]
    padded = np.pad(y, n, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="same")[n:-n]


def estimate_warp(base: np.ndarray, target: np.ndarray) -> float:
    """The frequency-warp factor a (formants of base moved to a x f) that best aligns two log envelopes."""
    band = (GRID >= 200) & (GRID <= 5000)
    tgt = _detrend(target[band], GRID[band])
    best, best_r = 1.0, -np.inf
    for a in np.arange(WARP_RANGE[0], WARP_RANGE[1] + 1e-9, 0.01):
        warped = np.interp(GRID[band] / a, GRID, base)
        r = float(np.corrcoef(_detrend(warped, GRID[band]), tgt)[0, 1])
        if r > best_r:
            best, best_r = float(a), r
    return round(best, 3)


def build_profile(base: VoiceStats, target: VoiceStats, *, eq_strength: float = 1.0, method: Method = "dio",
                  frame_period_ms: float = 5.0, max_eq_db: float = 12.0, warp: float | None = None) -> MatchProfile:
    """The transform that moves speech with `base`'s statistics toward `target`'s (`warp`: None estimates it)."""
    b_env, t_env = np.asarray(base.envelope), np.asarray(target.envelope)
    if warp is None:
        # The envelope estimate alone sometimes lands on the range edges (LibriSpeech's channels differ more than
        # vocal tracts do); blend it with the pitch prior: formants move ~ F0 ratio ** 0.3 between speakers.
        prior = (target.f0_median_hz / base.f0_median_hz) ** 0.3
        warp = float(np.clip(np.sqrt(estimate_warp(b_env, t_env) * prior), *WARP_RANGE))
        warp = round(warp, 3)
    warped = np.interp(GRID / warp, GRID, b_env)
    diff = (t_env - t_env.mean()) - (warped - warped.mean())
    limit = max_eq_db / 10 * np.log(10)  # dB of power in natural-log units
    eq = np.clip(_smooth(diff, 1000.0), -limit, limit)
    spread = float(np.clip(target.f0_log_std / max(base.f0_log_std, 1e-3), 0.5, 2.0))
    return MatchProfile(f0_ratio=round(target.f0_median_hz / base.f0_median_hz, 4), f0_spread=round(spread, 4),
                        warp=warp, eq=tuple(round(float(v), 4) for v in eq), eq_strength=eq_strength,
                        method=method, frame_period_ms=frame_period_ms,
                        target_f0_hz=round(target.f0_median_hz, 2), base_f0_hz=round(base.f0_median_hz, 2))


def transform(audio: AudioFrame, profile: MatchProfile) -> AudioFrame:
    """`audio` spoken through the WORLD transform of `profile` (blocking; same rate, peak kept)."""
    pw = _pyworld()
    rate = audio.sample_rate
    x = audio.to_mono().mono_float32().astype(np.float64)
    if x.size < rate * profile.frame_period_ms / 1000 * 4 or not np.any(x):
        return audio
    fp = profile.frame_period_ms
    f0, t = _f0(pw, x, rate, profile.method, fp)
    sp = pw.cheaptrick(x, f0, t, rate)
    ap = pw.d4c(x, f0, t, rate)
    voiced = f0 > 0
    if voiced.any() and profile.base_f0_hz > 0:
        centre = np.log(profile.base_f0_hz)
        f0 = f0.copy()
        f0[voiced] = np.exp(centre + np.log(profile.f0_ratio)
                            + (np.log(f0[voiced]) - centre) * profile.f0_spread)
    freqs = np.linspace(0, rate / 2, sp.shape[1])
    if profile.warp != 1.0:
        src = np.clip(freqs / profile.warp, 0, freqs[-1])
        idx = np.minimum((src / freqs[1]).astype(int), freqs.size - 2)
        w = src / freqs[1] - idx
        sp = sp[:, idx] * (1 - w) + sp[:, idx + 1] * w
        ap = ap[:, idx] * (1 - w) + ap[:, idx + 1] * w
    if profile.eq and profile.eq_strength:
        gain = np.interp(freqs, GRID, np.asarray(profile.eq)) * profile.eq_strength
        gain *= np.clip((GRID[-1] + 1500 - freqs) / 1500, 0, 1)  # fade out above the analysed band
        sp = sp * np.exp(gain)[None, :]
    y = pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), rate, fp)
    y = y[: x.size]
    peak_in, peak_out = float(np.max(np.abs(x))), float(np.max(np.abs(y))) if y.size else 0.0
    if peak_out > 0:
        y = y * (peak_in / peak_out)
    return AudioFrame.from_float(y.astype(np.float32), rate, audio.timestamp)


async def _collect(tts: TTS, text: str, voice: str | None) -> AudioFrame:
    frames = [f async for f in tts.synthesize(text, voice=voice)]
    if not frames:
        raise ProviderError("the base voice produced no audio for the calibration text", provider=tts.name)
    return AudioFrame.concat(frames)


async def match_profile(tts: TTS, samples: Sequence[str | Path | AudioFrame], *, voice: str | None = None,
                        method: Method = "dio", frame_period_ms: float = 5.0,
                        eq_strength: float = 1.0) -> MatchProfile:
    """Measure the reference `samples` and the base voice (`tts` speaking a calibration text) and build the
    transform between them. Analysis always uses Harvest (robust F0); `method` is what synthesis will use."""
    base_audio = await _collect(tts, CALIBRATION_TEXT, voice)
    refs = [s if isinstance(s, AudioFrame) else read_audio(s) for s in samples]
    if not refs:
        raise AudioError("no reference samples to match")
    base, target = await asyncio.gather(asyncio.to_thread(analyse, base_audio),
                                        asyncio.to_thread(analyse, refs))
    return build_profile(base, target, eq_strength=eq_strength, method=method, frame_period_ms=frame_period_ms)


@dataclass
class MatchedVoiceTTS:
    """A `TTS` whose speech is transformed toward a reference speaker (see the module docstring).

    `name` carries the profile's digest, so a TTS cache keyed on (name, voice) never mixes two matched voices
    built on one base voice. Each piece the base TTS yields is transformed in a worker thread.
    """

    tts: TTS
    profile: MatchProfile
    name: str = field(init=False)
    sample_rate: int = field(init=False)

    def __post_init__(self) -> None:
        _pyworld()
        self.name = f"{self.tts.name}+match-{self.profile.digest}"
        self.sample_rate = self.tts.sample_rate

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        """One frame per piece of text: the base voice's frames of a piece are gathered and transformed together
        (a streaming voice cuts its pieces into chunks that can end mid-word, and WORLD analyses pitch and level per
        call), while the next piece is synthesized."""

        async def whole(piece: str) -> list[AudioFrame]:
            return [frame async for frame in self.tts.synthesize(piece, voice=voice)]

        pieces = split_for_speech(text)
        piece = next(pieces, None)
        pending = asyncio.ensure_future(whole(piece)) if piece is not None else None
        timestamp = 0.0
        try:
            while pending is not None:
                frames = await pending
                piece = next(pieces, None)
                pending = asyncio.ensure_future(whole(piece)) if piece is not None else None
                if frames:
                    out = await asyncio.to_thread(transform, AudioFrame.concat(frames), self.profile)
                    yield out.with_timestamp(timestamp)
                    timestamp += out.duration
        finally:
            if pending is not None:
                pending.cancel()
