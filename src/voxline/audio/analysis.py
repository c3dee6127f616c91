"""Audio analysis: file facts, librosa features, BS.1770-4 loudness, and a speech / music / silence segmenter.

Features (MFCC, spectral centroid, tempo and beats, pYIN pitch, onsets) are librosa's, run on the mono float32
samples at the audio's own rate (no hidden resampling to 22.05 kHz). Loudness is ITU-R BS.1770-4 written out with
scipy.signal: K-weighting (high shelf + high pass, designed for any rate), 400 ms blocks every 100 ms, an absolute
gate at -70 LUFS and a relative gate 10 LU below the ungated level.

The segmenter is a small, explainable rule set over one-second windows (see `classify_window`), not a trained model.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from voxline.audio.codecs import AudioInfo, audio_info
from voxline.audio.frame import AudioFrame
from voxline.audio.segment import Sound
from voxline.errors import AudioError

Audio = AudioFrame | Sound

MIN_RATE = 100  # Hz; below it nothing of a voice is left to analyse (Nyquist 50 Hz, under the lowest pitch)
VOICE_FMIN = 65.0  # Hz, the lowest pitch looked for: a low male voice


def info(path: str | os.PathLike[str]) -> AudioInfo:
    """Duration, rate, channels, codec, container and bit rate from the header, without decoding."""
    return audio_info(path)


def _frame(audio: Audio) -> AudioFrame:
    frame = audio.frame if isinstance(audio, Sound) else audio
    if not isinstance(frame, AudioFrame):
        raise AudioError(f"expected an AudioFrame or Sound, got {type(audio).__name__}")
    return frame


def _mono(audio: Audio, min_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    frame = _frame(audio)
    if frame.num_frames == 0 or frame.duration < min_seconds:
        raise AudioError(f"audio of {frame.duration:.3f} s is too short for this analysis "
                         f"(needs at least {max(min_seconds, 1 / frame.sample_rate):.3f} s)")
    return frame.mono_float32(), frame.sample_rate


# ---- librosa features -------------------------------------------------------------------------------------------

def mfcc(audio: Audio, n_mfcc: int = 20, **kwargs: Any) -> np.ndarray:
    """MFCCs, shape (n_mfcc, frames), librosa's defaults otherwise."""
    import librosa

    y, sr = _mono(audio)
    return np.asarray(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, **kwargs))


def spectral_centroid(audio: Audio, **kwargs: Any) -> np.ndarray:
    """Spectral centroid in Hz per frame (1-D)."""
    import librosa

    y, sr = _mono(audio)
    return np.asarray(librosa.feature.spectral_centroid(y=y, sr=sr, **kwargs))[0]


def tempo(audio: Audio) -> tuple[float, np.ndarray]:
    """Estimated tempo in BPM and beat times in seconds."""
    import librosa

    y, sr = _mono(audio, 0.5)
    bpm, beats = librosa.beat.beat_track(y=y, sr=sr, units="time")
    return float(np.atleast_1d(bpm)[0]), np.asarray(beats, np.float64)


def onsets(audio: Audio) -> np.ndarray:
    """Onset times in seconds."""
    import librosa

    y, sr = _mono(audio)
    return np.asarray(librosa.onset.onset_detect(y=y, sr=sr, units="time"), np.float64)


@dataclass(frozen=True, slots=True)
class PitchTrack:
    """pYIN output: frame times (s), f0 in Hz (NaN where unvoiced), voiced flags and voicing probabilities."""

    times: np.ndarray
    f0: np.ndarray
    voiced: np.ndarray
    voiced_prob: np.ndarray

    @property
    def median_hz(self) -> float:
        v = self.f0[np.isfinite(self.f0)]
        return float(np.median(v)) if v.size else math.nan


def pitch(audio: Audio, fmin: float = VOICE_FMIN, fmax: float = 600.0,
          frame_length: int | None = None) -> PitchTrack:
    """Fundamental frequency with pYIN (probabilistic YIN); the default range covers speaking and singing voices.

    `fmax` is lowered to the Nyquist frequency where the rate is low (nothing above it can be in the audio); a range
    pYIN can't track at this rate (too narrow for its pitch transitions, say) is an `AudioError`."""
    import librosa

    y, sr = _mono(audio, 0.1)
    if fmin >= sr / 2:
        raise AudioError(f"pitch tracking from {fmin:g} Hz needs a sample rate above {2 * fmin:g} Hz, got {sr} Hz")
    fmax = min(fmax, sr / 2)
    if frame_length is None:  # ~64 ms, and at least two periods of fmin (a 512 floor made low rates' hops too long)
        frame_length = 1 << math.ceil(math.log2(max(0.064 * sr, 2 * sr / fmin + 2)))
    try:
        f0, voiced, prob = librosa.pyin(y, fmin=fmin, fmax=fmax, sr=sr, frame_length=frame_length)
    except librosa.util.exceptions.ParameterError as exc:
        raise AudioError(f"cannot track pitch from {fmin:g} to {fmax:g} Hz at {sr} Hz ({exc})") from exc
    times = librosa.times_like(f0, sr=sr, hop_length=frame_length // 4)
    return PitchTrack(times, np.asarray(f0), np.asarray(voiced), np.asarray(prob))


# ---- loudness (ITU-R BS.1770-4) ---------------------------------------------------------------------------------

_SHELF_HZ = 1681.974450955533  # the K-weighting's high shelf
LOUDNESS_MIN_RATE = math.floor(2 * _SHELF_HZ) + 1  # 3364 Hz: the shelf must lie below the Nyquist frequency


def k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two biquads (b, a) of the K-weighting filter at `sample_rate`.

    Designed from the analog parameters behind the standard's 48 kHz coefficients (as libebur128 does), so they
    reproduce those coefficients at 48 kHz and stay correct at 16 kHz or 44.1 kHz. Below `LOUDNESS_MIN_RATE` the
    shelf sits above the Nyquist frequency and the design gives an unstable filter, so such rates are refused."""
    if sample_rate < LOUDNESS_MIN_RATE:
        raise AudioError(f"loudness (BS.1770 K-weighting) needs a sample rate of at least {LOUDNESS_MIN_RATE} Hz, "
                         f"got {sample_rate} Hz")
    # stage 1: high shelf, +4 dB above ~1.7 kHz (the head's acoustic effect)
    f0, gain_db, q = _SHELF_HZ, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf_b = np.array([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    shelf_a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    # stage 2: the RLB high pass at ~38 Hz
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return [(shelf_b, shelf_a), (hp_b, hp_a)]


_SURROUND_WEIGHT = {3: 1.41, 4: 1.41}  # 5.1 order L R C LFE Ls Rs: Ls/Rs weigh 1.41, LFE is left out


def loudness(audio: Audio) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4); -inf when every block is below the -70 LUFS gate."""
    from scipy.signal import lfilter

    frame = _frame(audio)
    rate = frame.sample_rate
    weighting = k_weighting(rate)
    block, hop = round(0.4 * rate), round(0.1 * rate)
    if frame.num_frames < block:
        raise AudioError(f"loudness needs at least 0.4 s of audio, got {frame.duration:.3f} s")
    x = frame.float32().astype(np.float64)
    for b, a in weighting:
        x = lfilter(b, a, x, axis=0)
    channels = frame.channels
    weights = np.ones(channels)
    if channels == 6:
        weights = np.array([1.0, 1.0, 1.0, 0.0, 1.41, 1.41])
    elif channels == 5:
        weights = np.array([1.0, 1.0, 1.0, 1.41, 1.41])
    energy = np.concatenate([np.zeros((1, channels)), np.cumsum(x * x, axis=0)])
    starts = np.arange(0, frame.num_frames - block + 1, hop)
    z = (energy[starts + block] - energy[starts]) / block  # mean square per block and channel
    power = z @ weights
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10 * np.log10(power)
    gated = block_lufs > -70.0
    if not gated.any():
        return -math.inf
    relative = -0.691 + 10 * math.log10(float(power[gated].mean())) - 10.0
    gated &= block_lufs > relative
    return -0.691 + 10 * math.log10(float(power[gated].mean()))


def normalize_loudness(sound: Sound, target_lufs: float = -16.0) -> Sound:
    """Gain `sound` so its integrated loudness is `target_lufs` (peaks may clip: check `max_dBFS` after)."""
    current = loudness(sound)
    if not math.isfinite(current):
        raise AudioError("cannot loudness-normalize silence (every block is below -70 LUFS)")
    return sound.apply_gain(target_lufs - current)


# ---- speech / music / silence -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WindowFeatures:
    """What the segmenter looked at in one window, kept so a label can be explained."""

    rms_dbfs: float  # level of the window
    low_energy_ratio: float  # share of 20 ms frames quieter than half the window's mean RMS: pauses between syllables
    zcr_cv: float  # coefficient of variation of the zero-crossing rate: voiced / unvoiced alternation
    flatness_std: float  # spread of spectral flatness (log scale): tonal vowels vs noisy consonants
    pitch_stability: float  # share of voiced frame pairs within a quarter tone: held notes


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float
    label: str  # "speech", "music" or "silence"
    features: WindowFeatures | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "label": self.label}
        if self.features is not None:
            out["features"] = {k: round(v, 4) for k, v in asdict(self.features).items()}
        return out


def window_features(y: np.ndarray, sr: int) -> WindowFeatures:
    """The segmenter's features of one mono float window; frames and FFTs are clamped to the window's length, and
    pitch stability is 0 where the rate leaves no room for a voice's pitch (at low rates or in short windows)."""
    import librosa

    frame = min(max(64, round(0.02 * sr)), y.size)
    hop = min(max(32, round(0.01 * sr)), frame)
    rms = librosa.feature.rms(y=y, frame_length=frame, hop_length=hop, center=False)[0]
    level = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    rms_dbfs = 20 * math.log10(level) if level > 0 else -math.inf
    low_energy = float(np.mean(rms < 0.5 * rms.mean())) if rms.mean() > 0 else 1.0
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=frame, hop_length=hop, center=False)[0]
    zcr_cv = float(zcr.std() / zcr.mean()) if zcr.mean() > 0 else 0.0
    n_fft = min(1 << max(8, math.ceil(math.log2(frame))), y.size)
    flat = librosa.feature.spectral_flatness(y=y, n_fft=n_fft, hop_length=hop, center=False)[0]
    flatness_std = float(np.std(np.log10(np.maximum(flat, 1e-10))))
    fmax, yin_length = min(1000.0, sr / 2), max(n_fft, 2 * round(sr / VOICE_FMIN) + 2)
    stability = 0.0
    if VOICE_FMIN < fmax and yin_length <= y.size:
        f0 = librosa.yin(y, fmin=VOICE_FMIN, fmax=fmax, sr=sr, frame_length=yin_length, hop_length=hop,
                         center=False)
        voiced = rms[: f0.size] > 0.25 * rms.max() if rms.size else np.zeros(0, bool)
        f0 = f0[: voiced.size]
        pairs = voiced[1:] & voiced[:-1]
        cents = np.abs(1200 * np.log2(f0[1:] / f0[:-1]))
        stability = float(np.mean(cents[pairs] < 50)) if pairs.any() else 0.0
    return WindowFeatures(rms_dbfs, low_energy, zcr_cv, flatness_std, stability)


def classify_window(f: WindowFeatures, silence_dbfs: float = -50.0) -> str:
    """Silence below `silence_dbfs`; otherwise a score. Speech swaps voiced and unvoiced sounds many times a second
    (the zero-crossing rate varies: worth 2 points), pauses between syllables, alternates tonal vowels with noisy
    consonants and glides in pitch (1 point each); 3 points or more is speech, else music (held notes and level)."""
    if f.rms_dbfs < silence_dbfs:
        return "silence"
    score = 2 * (f.zcr_cv > 0.5) + (f.low_energy_ratio > 0.15) + (f.flatness_std > 0.6) + (f.pitch_stability < 0.7)
    return "speech" if score >= 3 else "music"


def segment(audio: Audio, window_s: float = 1.0, silence_dbfs: float = -50.0,
            explain: bool = False) -> list[Segment]:
    """Label consecutive windows speech / music / silence and merge equal neighbours into segments."""
    y, sr = _mono(audio)
    _check_rate(sr)
    step = max(1, round(window_s * sr))
    out: list[Segment] = []
    for start in range(0, y.size, step):
        w = y[start:start + step]
        if w.size < step // 4 and out:  # a short tail joins the previous window's label
            last = out[-1]
            out[-1] = Segment(last.start_s, (start + w.size) / sr, last.label, last.features)
            continue
        feats = window_features(w, sr) if w.size >= 0.1 * sr else WindowFeatures(-math.inf, 1, 0, 0, 0)
        label = classify_window(feats, silence_dbfs)
        t0, t1 = start / sr, (start + w.size) / sr
        if out and out[-1].label == label and not explain:
            out[-1] = Segment(out[-1].start_s, t1, label)
        else:
            out.append(Segment(t0, t1, label, feats if explain else None))
    return out


# ---- a summary for the CLI ---------------------------------------------------------------------------------------

def summary(audio: Audio, with_pitch: bool = True) -> dict[str, Any]:
    """The numbers `voxline audio analyze` prints: levels, loudness, tempo, centroid, pitch, onsets, segments."""
    frame = _frame(audio)
    _check_rate(frame.sample_rate)
    sound = audio if isinstance(audio, Sound) else Sound(frame)
    measurable = frame.duration >= 0.4 and frame.sample_rate >= LOUDNESS_MIN_RATE
    out: dict[str, Any] = {
        "duration_s": round(frame.duration, 3), "sample_rate": frame.sample_rate, "channels": frame.channels,
        "dbfs": _num(sound.dBFS), "peak_dbfs": _num(sound.max_dBFS),
        "loudness_lufs": _num(loudness(frame)) if measurable else None,
    }
    if frame.duration >= 0.5:
        bpm, beats = tempo(frame)
        out["tempo_bpm"], out["beats"] = round(bpm, 2), len(beats)
    out["onsets"] = len(onsets(frame))
    out["spectral_centroid_hz"] = round(float(np.mean(spectral_centroid(frame))), 1)
    if with_pitch and frame.duration >= 0.1:
        track = _pitch_if_possible(frame)
        out["pitch_median_hz"] = _num(track.median_hz) if track is not None else None
        out["voiced_ratio"] = round(float(np.mean(track.voiced)), 3) if track is not None else None
    out["segments"] = [s.to_dict() for s in segment(frame)]
    return out


def _pitch_if_possible(audio: Audio) -> PitchTrack | None:
    """The pitch track, or None where the rate is too low for a voice's range (a summary reports that as null)."""
    try:
        return pitch(audio)
    except AudioError:
        return None


def _check_rate(rate: int) -> None:
    if rate < MIN_RATE:
        raise AudioError(f"a sample rate of {rate} Hz is too low to analyse (needs at least {MIN_RATE} Hz)")


def _num(x: float) -> float | None:
    return round(x, 2) if math.isfinite(x) else None


def plot_analysis(audio: Audio, path: str | os.PathLike[str], with_pitch: bool = True) -> str:
    """PNG of the waveform (segments shaded), the spectrogram and the pitch track; matplotlib's Agg backend."""
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, sr = _mono(audio)
    _check_rate(sr)
    track = _pitch_if_possible(audio) if with_pitch else None
    rows = 3 if track is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(12, 2.6 * rows), sharex=True)
    t = np.arange(y.size) / sr
    axes[0].plot(t, y, linewidth=0.4, color="#333")
    colours = {"speech": "#4c9be8", "music": "#e8a04c", "silence": "#bbbbbb"}
    for seg in segment(audio):
        axes[0].axvspan(seg.start_s, seg.end_s, color=colours[seg.label], alpha=0.25, label=seg.label)
    handles = {h.get_label(): h for h in axes[0].patches}
    axes[0].legend(handles.values(), handles.keys(), loc="upper right", fontsize=8)
    axes[0].set_ylabel("amplitude")
    spec = librosa.amplitude_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=256)), ref=np.max)
    librosa.display.specshow(spec, sr=sr, hop_length=256, x_axis="time", y_axis="hz", ax=axes[1])
    axes[1].set_ylabel("Hz")
    if track is not None:
        axes[2].plot(track.times, track.f0, color="#c33", linewidth=1.2)
        axes[2].set_ylabel("f0 (Hz)")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as exc:  # a missing folder, no permission, an image format matplotlib lacks
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise AudioError(f"cannot write the plot to {os.fspath(path)}: {reason}") from exc
    finally:
        plt.close(fig)
    return os.fspath(path)
