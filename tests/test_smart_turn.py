"""Smart Turn v3.2 and its numpy Whisper front end, on real recorded speech."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from voxline.audio.codecs import read_audio
from voxline.audio.features import WhisperFeatures, last_seconds_padded, zero_mean_unit_var
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, ModelError
from voxline.providers.base import TurnModel
from voxline.providers.silero import SileroVAD
from voxline.providers.smart_turn import SmartTurnModel, int8_saturates

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel()


@pytest.fixture(scope="module")
def short_singles(speech_dir: Path) -> list[AudioFrame]:
    """The first 24 `single/` utterances of at most 9 s (by file name): whole read sentences."""
    rows = [json.loads(x) for x in (speech_dir / "manifest.jsonl").read_text().splitlines() if x.strip()]
    files = sorted(r["file"] for r in rows if r["file"].startswith("single/") and r["duration_s"] <= 9)[:24]
    return [read_audio(speech_dir / f) for f in files]


@pytest.mark.parametrize("seconds", [8.0, 30.0])
def test_features_match_faster_whisper(short_singles: list[AudioFrame], seconds: float) -> None:
    ours = WhisperFeatures()
    ref = FeatureExtractor(chunk_length=int(seconds))
    for audio in short_singles[:3]:
        x = zero_mean_unit_var(last_seconds_padded(audio.mono_float32(), seconds))
        a, b = ours.log_mel(x), ref(x, padding=0)
        assert a.shape == b.shape == (80, int(seconds * 100))
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_model_input_window(model: SmartTurnModel, short_singles: list[AudioFrame]) -> None:
    long = AudioFrame.concat(short_singles[:3])
    assert long.duration > 8
    feats = model.features(long)
    assert feats.shape == (80, 800)
    # only the last 8 s count
    np.testing.assert_allclose(feats, model.features(long.slice(long.duration - 8.0)), atol=1e-4)
    # short audio is padded at the start: the first frames are the padding floor, the last are speech
    short = model.features(short_singles[0].slice(0, 2.0))
    assert np.ptp(short[:, :500], axis=1).max() < 1e-5 < np.ptp(short[:, -150:], axis=1).max()


def test_front_end_rejects_bad_input(model: SmartTurnModel) -> None:
    feats = WhisperFeatures()
    with pytest.raises(AudioError):
        feats.log_mel(np.zeros((2, 16000), np.float32))
    with pytest.raises(AudioError):
        feats.log_mel(np.zeros(100, np.float32))
    with pytest.raises(AudioError):
        feats.log_mel(np.full(16000, np.nan, np.float32))
    with pytest.raises(AudioError, match="empty"):
        model.predict(AudioFrame.silence(0.0, 16000))


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        SmartTurnModel(tmp_path / "missing.onnx")


async def test_complete_scores_higher_than_cut_mid_word(model: SmartTurnModel,
                                                        short_singles: list[AudioFrame]) -> None:
    """24 read sentences, each (a) up to its last speech plus 0.25 s of its own background noise, and (b) cut in
    the middle of a word past 55 % of its length, plus the same noise. Measured when written: means 0.66 vs 0.47,
    medians 0.87 vs 0.34. Smart Turn is far from sure on read speech (see docs/turn-taking.md), so the test asserts
    on the whole set, with about half the measured margins."""
    assert isinstance(model, TurnModel)
    vad = SileroVAD()
    full, cut = [], []
    for audio in short_singles:
        windows = await vad.stream().windows(audio)
        probs = np.array([p for _, p in windows])
        ends = np.array([e for e, _ in windows])
        first, last = (ends[probs > 0.5][0] - 512) / 16000, ends[probs > 0.5][-1] / 16000
        noise = audio.slice(0, max(first - 0.05, 0.05)).samples[:, 0]
        pad = AudioFrame.from_array(np.resize(noise, 4000), 16000)
        mid_word = next(i for i in range(1, len(probs) - 1)
                        if ends[i] > 0.55 * audio.num_frames and probs[i - 1:i + 2].min() > 0.9)
        full.append(await model.completion_probability(AudioFrame.concat([audio.slice(0, last), pad])))
        cut.append(await model.completion_probability(
            AudioFrame.concat([audio.slice(0, (ends[mid_word] - 256) / 16000), pad])))
    assert all(0.0 <= p <= 1.0 for p in full + cut)
    assert statistics.mean(full) - statistics.mean(cut) > 0.1
    assert statistics.median(full) - statistics.median(cut) > 0.25


def test_other_rates_are_resampled(model: SmartTurnModel, short_singles: list[AudioFrame]) -> None:
    audio = short_singles[1]
    assert abs(model.predict(audio.resample(8000)) - model.predict(audio.resample(8000).resample(16000))) < 1e-3
    assert abs(model.predict(audio.with_channels(2)) - model.predict(audio)) < 1e-3


def test_cheap_enough_for_every_pause(model: SmartTurnModel, short_singles: list[AudioFrame]) -> None:
    audio = short_singles[2]
    model.predict(audio)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        model.predict(audio)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.4, f"Smart Turn took {statistics.median(times) * 1000:.0f} ms per call"


def test_int8_fusion_is_turned_off_where_it_saturates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert int8_saturates(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not int8_saturates(info)
    assert int8_saturates(tmp_path / "missing")  # unknown: take the exact path
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert not int8_saturates(tmp_path / "missing")
