"""Silero VAD (batched, shared) and the energy VAD on real recorded speech."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, ModelError
from voxline.providers.base import VAD, VADStream
from voxline.providers.energy import EnergyVAD
from voxline.providers.silero import SileroVAD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="module")
def singles(speech_dir: Path) -> list[AudioFrame]:
    rows = [json.loads(x) for x in (speech_dir / "manifest.jsonl").read_text().splitlines() if x.strip()]
    files = sorted(r["file"] for r in rows if r["file"].startswith("single/"))[:5]
    return [read_audio(speech_dir / f) for f in files]


async def _probs(stream: object, audio: AudioFrame, chunk_s: float = 0.02) -> np.ndarray:
    out: list[float] = []
    for frame in audio.chunks(chunk_s):
        out += [p for _, p in await stream.windows(frame)]  # type: ignore[attr-defined]
    return np.array(out)


def test_protocols(vad: SileroVAD) -> None:
    assert isinstance(vad, VAD) and isinstance(vad.stream(), VADStream)
    assert isinstance(EnergyVAD(), VAD) and isinstance(EnergyVAD().stream(), VADStream)


async def test_silero_fires_on_speech(vad: SileroVAD, singles: list[AudioFrame]) -> None:
    for audio in singles:
        probs = await _probs(vad.stream(), audio)
        assert len(probs) == audio.num_frames // 512
        assert probs.max() > 0.95
        assert (probs > 0.5).mean() > 0.3, "read speech is largely speech"


async def test_silero_quiet_on_silence_and_low_noise(vad: SileroVAD) -> None:
    assert (await _probs(vad.stream(), AudioFrame.silence(3.0, 16000))).max() < 0.05
    rng = np.random.default_rng(0)
    for level in (0.001, 0.005):
        noise = AudioFrame.from_float(rng.standard_normal(48000) * level, 16000)
        assert (await _probs(vad.stream(), noise)).max() < 0.3, f"white noise at rms {level}"


async def test_batched_equals_one_by_one(vad: SileroVAD, singles: list[AudioFrame],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    infer = vad.infer

    def spy(x: np.ndarray, state: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(x.shape[0])
        return infer(x, state, rate)

    monkeypatch.setattr(vad, "infer", spy)
    alone = [await _probs(vad.stream(), a) for a in singles]
    assert set(sizes) == {1}
    sizes.clear()
    together = await asyncio.gather(*[_probs(vad.stream(), a) for a in singles])
    assert max(sizes) == len(singles), "windows of all streams must share one inference"
    assert len(sizes) < sum(len(p) for p in alone) / 2
    for a, b in zip(alone, together, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


async def test_frame_size_does_not_matter(vad: SileroVAD, singles: list[AudioFrame]) -> None:
    audio = singles[0].slice(0, 4.0)
    ref = await _probs(vad.stream(), audio, 0.032)
    for chunk in (0.007, 0.02, 0.1, 4.0):
        np.testing.assert_allclose(await _probs(vad.stream(), audio, chunk), ref, atol=1e-5)


async def test_window_ends_are_counted_in_the_frame(vad: SileroVAD) -> None:
    stream = vad.stream()
    assert await stream.windows(AudioFrame.silence(0.02, 16000)) == []  # 320 samples: no window yet
    (end, _), = await stream.windows(AudioFrame.silence(0.02, 16000))
    assert end == 512 - 320


async def test_8khz(vad: SileroVAD, singles: list[AudioFrame]) -> None:
    speech = singles[1].resample(8000)
    probs = await _probs(vad.stream(), speech)
    assert len(probs) == speech.num_frames // 256
    assert probs.max() > 0.9 and (probs > 0.5).mean() > 0.4
    assert (await _probs(vad.stream(), AudioFrame.silence(2.0, 8000))).max() < 0.05


async def test_wrong_rate_is_a_clear_error(vad: SileroVAD, singles: list[AudioFrame]) -> None:
    stream = vad.stream()
    with pytest.raises(AudioError, match="16000 or 8000"):
        await stream.probability(singles[0].slice(0, 0.5).resample(44100))
    await stream.probability(AudioFrame.silence(0.1, 16000))
    with pytest.raises(AudioError, match="runs at 16000"):
        await stream.probability(AudioFrame.silence(0.1, 8000))
    stream.reset()
    assert await stream.probability(AudioFrame.silence(0.1, 8000)) < 0.05


async def test_stereo_is_mixed_down(vad: SileroVAD, singles: list[AudioFrame]) -> None:
    mono = singles[2].slice(0, 3.0)
    np.testing.assert_allclose(await _probs(vad.stream(), mono.with_channels(2)),
                               await _probs(vad.stream(), mono), atol=1e-5)


async def test_cancelled_stream_does_not_break_others(vad: SileroVAD, singles: list[AudioFrame]) -> None:
    audio = singles[3].slice(0, 2.0)
    victim = asyncio.create_task(_probs(vad.stream(), singles[4]))
    await asyncio.sleep(0)
    survivor = asyncio.create_task(_probs(vad.stream(), audio))
    await asyncio.sleep(0.01)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    np.testing.assert_allclose(await survivor, await _probs(vad.stream(), audio), atol=1e-5)


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        SileroVAD(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        SileroVAD(bad)


async def test_energy_vad(singles: list[AudioFrame]) -> None:
    stream = EnergyVAD().stream()
    speech = await _probs(stream, singles[0])
    assert set(np.unique(speech)) <= {0.0, 1.0} and speech.mean() > 0.4
    assert (await _probs(EnergyVAD().stream(), AudioFrame.silence(1.0, 16000))).max() == 0.0
    quiet = AudioFrame.from_float(np.full(1600, 0.009), 16000)
    loud = AudioFrame.from_float(np.full(1600, 0.011), 16000)
    assert await EnergyVAD().stream().probability(quiet) == 0.0
    assert await EnergyVAD().stream().probability(loud) == 1.0
    # any rate works: 20 ms windows at 44.1 kHz
    assert len(await EnergyVAD().stream().windows(AudioFrame.silence(0.1, 44100))) == 5
    with pytest.raises(ValueError):
        EnergyVAD(threshold=0.0)
