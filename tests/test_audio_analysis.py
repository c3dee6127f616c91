"""Analysis: librosa features at the file's own rate, BS.1770-4 loudness, and the speech / music / silence labels."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest

from voxline.audio import analysis
from voxline.audio.frame import AudioFrame
from voxline.audio.segment import Sound
from voxline.errors import AudioError

SPEECH = ["gold/2412-153948-0000.flac", "gold/LJ002-0020.flac", "gold/goforward.flac",
          "single/1034-121119-0000.flac"]


def music(seconds: float = 8.0, sr: int = 16000, bpm: float = 120.0) -> AudioFrame:
    """Plucked triads (three harmonics, decaying) changing every two beats, with a kick drum on every beat."""
    t = np.arange(int(sr * seconds)) / sr
    y = np.zeros_like(t)
    beat = 60 / bpm
    chords = [[261.63, 329.63, 392.0], [220.0, 261.63, 329.63], [174.61, 220.0, 261.63], [196.0, 246.94, 293.66]]
    for i in range(int(seconds / beat)):
        s, e = int(i * beat * sr), min(t.size, int((i + 1) * beat * sr))
        tt = t[s:e] - t[s]
        for f in chords[(i // 2) % 4]:
            for h, amp in ((1, 1.0), (2, 0.4), (3, 0.2)):
                y[s:e] += amp * np.sin(2 * np.pi * f * h * tt) * np.exp(-tt * 1.5)
        k = min(e - s, int(0.03 * sr))
        y[s:s + k] += 1.5 * np.sin(2 * np.pi * 60 * tt[:k]) * np.exp(-tt[:k] * 60)
    return AudioFrame.from_float((0.45 * y / np.abs(y).max()).astype(np.float32), sr)


def test_info_without_decoding(speech_dir: Path, manifest: list[dict]) -> None:
    row = next(r for r in manifest if r["file"] == SPEECH[0])
    i = analysis.info(speech_dir / SPEECH[0])
    assert i.duration_s == pytest.approx(row["duration_s"], abs=1e-3)
    assert (i.sample_rate, i.channels, i.container) == (16000, 1, "flac")
    assert i.duration_s == pytest.approx(librosa.get_duration(path=speech_dir / SPEECH[0]), abs=1e-6)


def test_features_equal_librosa_on_the_same_samples(speech_dir: Path) -> None:
    path = speech_dir / SPEECH[1]  # 22.05 kHz: the wrappers must not resample
    y, sr = librosa.load(path, sr=None)
    s = Sound.from_file(path)
    np.testing.assert_allclose(analysis.mfcc(s), librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(analysis.spectral_centroid(s), librosa.feature.spectral_centroid(y=y, sr=sr)[0],
                               rtol=1e-4)
    np.testing.assert_allclose(analysis.onsets(s), librosa.onset.onset_detect(y=y, sr=sr, units="time"))


def test_tempo_of_a_steady_beat() -> None:
    bpm, beats = analysis.tempo(music(bpm=120))
    assert bpm == pytest.approx(120, rel=0.03)
    assert np.median(np.diff(beats)) == pytest.approx(0.5, abs=0.03)


def test_pitch_of_a_tone_and_of_speech(speech_dir: Path) -> None:
    t = np.arange(16000) / 16000
    tone = AudioFrame.from_float((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    track = analysis.pitch(tone)
    assert track.median_hz == pytest.approx(220, rel=0.01) and track.voiced.mean() > 0.8
    speech = Sound.from_file(speech_dir / SPEECH[2])
    assert 70 < analysis.pitch(speech).median_hz < 300


def test_k_weighting_reproduces_the_standard_at_48k() -> None:
    (b1, a1), (b2, a2) = analysis.k_weighting(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


def test_loudness_calibration_and_gates() -> None:
    t = np.arange(48000 * 3) / 48000
    sine = np.sin(2 * np.pi * 997 * t)
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS
    full = AudioFrame(np.round(sine * 32767).astype(np.int16), 48000)
    assert analysis.loudness(full) == pytest.approx(-3.01, abs=0.02)
    assert analysis.loudness(Sound(full) - 20) == pytest.approx(-23.01, abs=0.02)
    stereo = AudioFrame(np.round(np.stack([sine, sine], 1) * 32767 * 0.1).astype(np.int16), 48000, 2)
    assert analysis.loudness(stereo) == pytest.approx(-20.0 + 3.0 - 3.01, abs=0.05)  # two channels add power
    assert analysis.loudness(AudioFrame.silence(2, 48000)) == -math.inf  # all below the absolute gate
    # the relative gate ignores a long quiet stretch (-40 dB) next to the programme
    quiet = AudioFrame.concat([full, Sound(full).apply_gain(-40).frame])
    # (ungated it would read about -6 LUFS; the three blocks straddling the join still count)
    assert -3.3 < analysis.loudness(quiet) < -3.0
    with pytest.raises(AudioError, match=r"0\.4 s"):
        analysis.loudness(AudioFrame.silence(0.3, 16000))


def test_loudness_against_pyloudnorm(speech_dir: Path) -> None:
    """pyloudnorm (test-only) differs by design: its RLB high pass is gain-normalized (about -0.04 dB) and it counts
    a partial last block; we agree within 0.3 LU on real speech at 48 kHz."""
    pyln = pytest.importorskip("pyloudnorm")
    for name in SPEECH[:3]:
        frame = Sound.from_file(speech_dir / name).frame.resample(48000)
        ref = pyln.Meter(48000).integrated_loudness(frame.float32().astype(np.float64))
        assert analysis.loudness(frame) == pytest.approx(ref, abs=0.3)


def test_normalize_loudness() -> None:
    s = Sound(music(3.0))
    assert analysis.loudness(analysis.normalize_loudness(s, -23)) == pytest.approx(-23, abs=0.1)
    with pytest.raises(AudioError, match="silence"):
        analysis.normalize_loudness(Sound.silent(1000, 16000), -23)


def _share(segments: list[analysis.Segment], label: str) -> float:
    total = segments[-1].end_s - segments[0].start_s
    return sum(s.end_s - s.start_s for s in segments if s.label == label) / total


def test_segmenter_on_speech_music_silence(speech_dir: Path) -> None:
    for name in SPEECH:
        assert _share(analysis.segment(Sound.from_file(speech_dir / name)), "speech") >= 0.8, name
    assert _share(analysis.segment(music()), "music") >= 0.9
    assert [s.label for s in analysis.segment(AudioFrame.silence(3, 16000))] == ["silence"]
    # a programme: 2 s silence, speech, then music, found in order
    speech = Sound.from_file(speech_dir / SPEECH[0]).frame.slice(0, 6)
    mixed = AudioFrame.concat([AudioFrame.silence(2, 16000), speech, music(6)])
    labels = [s.label for s in analysis.segment(mixed)]
    assert labels[0] == "silence" and labels[-1] == "music" and "speech" in labels
    explained = analysis.segment(mixed, explain=True)
    assert all(s.features is not None for s in explained) and "features" in explained[3].to_dict()


def test_summary_and_plot(tmp_path: Path) -> None:
    s = Sound(music(3.0))
    out = analysis.summary(s, with_pitch=False)
    assert out["duration_s"] == 3.0 and out["loudness_lufs"] < 0 and out["segments"][0]["label"] == "music"
    png = analysis.plot_analysis(s, tmp_path / "a.png", with_pitch=False)
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(AudioError):
        analysis.mfcc(Sound.empty())


def _voice_like(sr: int, seconds: float = 2.0) -> AudioFrame:
    """A 120 Hz buzz (sr / 4 where that is above Nyquist) with harmonics up to Nyquist, gated like syllables."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = min(120.0, sr / 4)
    y = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8) if f0 * h < sr / 2)
    gate = (np.sin(2 * np.pi * 3 * t) > -0.3).astype(float)
    return AudioFrame.from_float((0.3 * y * gate / np.abs(y).max()).astype(np.float32), sr)


@pytest.mark.parametrize("sr", [100, 150, 1000, 2000])
def test_low_rates_are_analysed_within_what_they_allow(sr: int, tmp_path: Path) -> None:
    audio = _voice_like(sr)
    out = analysis.summary(audio)
    assert out["sample_rate"] == sr and out["loudness_lufs"] is None and out["segments"]
    if sr >= 1000:  # pitch is tracked up to Nyquist
        assert 100 < out["pitch_median_hz"] < 140
    with pytest.raises(AudioError, match="3364 Hz"):
        analysis.loudness(audio)
    assert analysis.segment(audio, explain=True)
    assert Path(analysis.plot_analysis(audio, tmp_path / "low.png")).read_bytes()[:4] == b"\x89PNG"


def test_rates_too_low_to_analyse_are_clear_errors() -> None:
    one_hz = AudioFrame(np.zeros((5, 1), np.int16) + 100, 1, 1)
    for fn in (analysis.summary, analysis.segment, analysis.loudness, analysis.pitch):
        with pytest.raises(AudioError, match="1 Hz"):
            fn(one_hz)
    with pytest.raises(AudioError, match="needs a sample rate above 130 Hz"):
        analysis.pitch(_voice_like(100))
    assert analysis.summary(_voice_like(100))["pitch_median_hz"] is None
