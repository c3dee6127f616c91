"""PiperTTS with the real joe voice on real text: audio, streaming, cancellation, sharing, round trip."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError, ModelNotFoundError, ProviderError
from voxline.models.store import ModelStore
from voxline.providers.base import TTS
from voxline.providers.piper import DEFAULT_MODEL, PiperTTS, SpeechSplit, split_for_speech

THREE_SENTENCES = ("Your table for four is booked for eight tonight. I have sent the confirmation to your "
                   "phone. Is there anything else I can help you with?")
LONG_TEXT = " ".join(f"This is sentence number {i} of a very long story that nobody will hear to the end."
                     for i in range(60))


@pytest.fixture(scope="module")
def tts(model_store: ModelStore) -> Iterator[PiperTTS]:
    engine = PiperTTS(store=model_store)
    yield engine
    engine.close()


async def collect(engine: PiperTTS, text: str, **kw: str) -> tuple[list[AudioFrame], float, float]:
    """Frames, seconds to the first frame, seconds to the end."""
    start = time.perf_counter()
    first = None
    frames = []
    async for frame in engine.synthesize(text, **kw):
        first = first if first is not None else time.perf_counter() - start
        frames.append(frame)
    return frames, (first if first is not None else float("nan")), time.perf_counter() - start


async def wait_idle(engine: PiperTTS, limit_s: float = 3.0) -> float:
    start = time.perf_counter()
    while engine.busy:
        assert time.perf_counter() - start < limit_s, "Piper threads still busy long after cancellation"
        await asyncio.sleep(0.01)
    return time.perf_counter() - start


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_is_a_tts(tts: PiperTTS) -> None:
    assert isinstance(tts, TTS)
    assert tts.sample_rate == 22050


async def test_speech_is_real_and_plausible(tts: PiperTTS) -> None:
    text = "Sure, I can help you with that today."
    frames, _, _ = await collect(tts, text)
    audio = AudioFrame.concat(frames)
    assert audio.sample_rate == 22050 and audio.channels == 1
    assert audio.rms() > 0.03  # speech, not silence
    words_per_s = len(text.split()) / audio.duration
    assert 1.2 < words_per_s < 5.0, f"{audio.duration:.2f} s for {len(text.split())} words"
    # the loudest 100 ms and the quietest differ a lot: it is speech with pauses, not noise
    levels = [c.rms() for c in audio.chunks(0.1) if c.num_frames]
    assert max(levels) > 5 * min(levels)


async def test_empty_or_blank_text_yields_nothing(tts: PiperTTS) -> None:
    for text in ("", "   \n\t "):
        frames, _, _ = await collect(tts, text)
        assert frames == []


async def test_multi_sentence_streams_sentence_by_sentence(tts: PiperTTS) -> None:
    frames, first, total = await collect(tts, THREE_SENTENCES)
    assert len(frames) >= 3  # each sentence in chunks, the first of each short
    assert frames[0].duration < 0.4
    assert first < 0.6 * total, f"first frame at {first:.3f} s of {total:.3f} s"
    # timestamps run on: each frame starts where the previous one ended
    for prev, cur in itertools.pairwise(frames):
        assert cur.timestamp == pytest.approx(prev.timestamp + prev.duration)


async def test_long_first_sentence_is_cut_at_a_clause(tts: PiperTTS) -> None:
    text = ("The quick brown fox jumps over the lazy dog by the river, and then it runs away into the dark "
            "forest where nobody will ever find it again.")
    assert len(list(split_for_speech(text))) == 2
    _, first, total = await collect(tts, text)
    assert first < 0.7 * total


def test_split_for_speech() -> None:
    text = "Dr. Smith arrived at 3.5 p.m. on Jan. 3! Wow? Yes, e.g. this one."
    assert list(split_for_speech(text)) == ["Dr. Smith arrived at 3.5 p.m. on Jan. 3!", "Wow?",
                                            "Yes, e.g. this one."]
    # Piper's raw-phoneme syntax cannot be injected through text
    assert list(split_for_speech("Hello [[ h ə l ]] world.")) == ["Hello h ə l world."]
    # bounded pieces even without any punctuation or spaces
    split = SpeechSplit(max_words=40, max_chars=400)
    pieces = list(split_for_speech("word " * 1000 + "x" * 2000, split))
    assert all(len(p.split()) <= 40 and len(p) <= 400 for p in pieces)
    assert "".join(pieces).replace(" ", "") == ("word" * 1000 + "x" * 2000)


def test_split_is_lazy_on_huge_text() -> None:
    huge = "This goes on and on without an end " * 3000  # ~100 kB
    start = time.perf_counter()
    first = next(split_for_speech(huge))
    assert time.perf_counter() - start < 0.05
    assert len(first.split()) <= SpeechSplit().max_words


async def test_huge_text_starts_fast_and_stops_on_cancel(tts: PiperTTS) -> None:
    huge = ("This goes on and on without an end, " * 3000)[:100_000]
    gen = tts.synthesize(huge)
    start = time.perf_counter()
    frame = await anext(gen)
    assert time.perf_counter() - start < 2.0
    assert frame.duration < 30  # one bounded piece, not the whole text
    await gen.aclose()
    await wait_idle(tts)


async def test_cancelling_leaves_no_busy_thread(tts: PiperTTS) -> None:
    short = "Okay, done."
    await collect(tts, short)  # warm
    baseline = min([(await collect(tts, short))[2] for _ in range(3)])

    got_one = asyncio.Event()

    async def listen() -> int:
        n = 0
        async for _ in tts.synthesize(LONG_TEXT):
            n += 1
            got_one.set()
        return n

    task = asyncio.create_task(listen())
    await asyncio.wait_for(got_one.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(tts)  # at most the piece in flight finishes
    await asyncio.sleep(0.3)
    assert tts.busy == 0, "a cancelled synthesis started new work"
    after = min([(await collect(tts, short))[2] for _ in range(2)])
    assert after < 2.5 * baseline + 0.05, f"{after:.3f} s after the cancel, {baseline:.3f} s before"


async def test_concurrent_sessions_get_their_own_audio(model_store: ModelStore) -> None:
    # without generator noise Piper is deterministic: concurrent results must equal sequential ones
    engine = PiperTTS(store=model_store, noise_scale=0.0, noise_w_scale=0.0)
    try:
        texts = ["The weather is sunny today.", "Your order number is four two seven.",
                 "Please hold the line for a moment."]
        alone = [AudioFrame.concat((await collect(engine, t))[0]) for t in texts]
        together = await asyncio.gather(*(collect(engine, t) for t in texts))
        for solo, (frames, _, _) in zip(alone, together, strict=True):
            mixed = AudioFrame.concat(frames)
            assert mixed.num_frames == solo.num_frames
            a, b = solo.mono_float32(), mixed.mono_float32()
            assert float(np.corrcoef(a, b)[0, 1]) > 0.99
    finally:
        engine.close()


async def test_options_change_the_speech(model_store: ModelStore, tts: PiperTTS) -> None:
    text = "Thank you for calling, goodbye."
    slow = PiperTTS(store=model_store, length_scale=1.5)
    still = dict(noise_scale=0.0, noise_w_scale=0.0)
    loud, quiet = PiperTTS(store=model_store, **still), PiperTTS(store=model_store, volume=0.5, **still)
    try:
        normal = AudioFrame.concat((await collect(tts, text))[0])
        slower = AudioFrame.concat((await collect(slow, text))[0])
        full = AudioFrame.concat((await collect(loud, text))[0]).mono_float32()
        half = AudioFrame.concat((await collect(quiet, text))[0]).mono_float32()
    finally:
        for engine in (slow, loud, quiet):
            engine.close()
    assert 1.25 < slower.duration / normal.duration < 1.75
    # what the TTS cache keys on besides the voice file
    assert slow.synthesis["length_scale"] == 1.5 and quiet.synthesis["volume"] == 0.5
    assert tts.synthesis != slow.synthesis
    assert 0.3 < np.abs(full).max() <= 1.0  # the voice's calibrated level, not scaled to full scale
    np.testing.assert_allclose(half, 0.5 * full, atol=2 / 32768)


async def test_streamed_speech_is_the_whole_piece_synthesized_at_once(model_store: ModelStore) -> None:
    """The vocoder run span by span, with context on both sides, gives the samples of one run over the whole piece,
    and the first chunk is out long before the piece is done."""
    still = dict(noise_scale=0.0, noise_w_scale=0.0)
    streamed, whole = PiperTTS(store=model_store, **still), PiperTTS(store=model_store, stream=False, **still)
    text = "The medical practitioners should pay attention to what the patient tells them, every single time."
    try:
        assert streamed._default.streams and not whole._default.streams
        assert streamed._default.gain == pytest.approx(whole._default.gain, rel=1e-3)
        chunks, _, _ = await collect(streamed, text)
        pieces, _, _ = await collect(whole, text)
    finally:
        streamed.close()
        whole.close()
    assert len(pieces) == len(list(split_for_speech(text))) == 2  # whole: one frame per piece
    assert len(chunks) >= 4 and chunks[0].duration == pytest.approx(32 * 256 / 22050)
    joined, once = AudioFrame.concat(chunks), AudioFrame.concat(pieces)
    assert joined.num_frames == once.num_frames
    assert np.abs(joined.mono_float32() - once.mono_float32()).max() < 2e-3


def test_a_graph_without_the_vocoder_node_is_synthesized_whole(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    from voxline.providers.piper import _split_at_vocoder

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT)], "not-vits",
        [helper.make_tensor_value_info("input", TensorProto.INT64, [1, None]),
         helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, None])])
    save(helper.make_model(graph), tmp_path / "plain.onnx")
    assert _split_at_vocoder(tmp_path / "plain.onnx") is None


async def test_voice_is_a_path_to_another_model(tmp_path: Path, model_store: ModelStore,
                                                tts: PiperTTS) -> None:
    src = model_store.path("piper-joe")
    for name in (DEFAULT_MODEL, DEFAULT_MODEL + ".json"):
        shutil.copy(src / name, tmp_path / name.replace("joe", "copy"))
    other = str(tmp_path / "en_US-copy-medium.onnx")
    frames, _, _ = await collect(tts, "Hello from another voice.", voice=other)
    assert frames and frames[0].sample_rate == 22050
    with pytest.raises(ModelNotFoundError, match="not found"):
        await collect(tts, "Hello.", voice=str(tmp_path / "missing.onnx"))


async def test_bad_input_is_refused_clearly(model_store: ModelStore, tts: PiperTTS) -> None:
    with pytest.raises(ConfigError, match="length_scale"):
        PiperTTS(store=model_store, length_scale=0)
    with pytest.raises(ConfigError, match="volume"):
        PiperTTS(store=model_store, volume=-1)
    with pytest.raises(ProviderError, match="string"):
        await collect(tts, b"bytes")  # type: ignore[arg-type]


async def test_round_trip_through_whisper(tts: PiperTTS, model_store: ModelStore) -> None:
    from faster_whisper import WhisperModel

    text = "Please book a table for two people at seven o'clock tomorrow evening."
    audio = AudioFrame.concat((await collect(tts, text))[0]).resample(16000)
    model = WhisperModel(str(model_store.path("whisper-base")), device="cpu", compute_type="int8",
                         cpu_threads=2)
    segments, _ = model.transcribe(audio.mono_float32(), language="en", beam_size=1)
    heard = words(" ".join(s.text for s in segments))
    said = words(text)
    found = sum(w in heard for w in said)
    assert found >= 0.8 * len(said), f"said {said}, heard {heard}"


def test_a_vocoder_that_needs_more_than_the_latent_frames_is_not_cut(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    from voxline.providers.piper import _split_at_vocoder

    weight = numpy_helper.from_array(np.ones((1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["x", "axis"], ["latent"]),
             helper.make_node("Conv", ["latent", "w"], ["y"], name="/dec/conv_pre/Conv"),
             helper.make_node("Mul", ["y", "scales"], ["output"])]  # the "vocoder" reads a graph input too
    graph = helper.make_graph(
        nodes, "needs-more",
        [helper.make_tensor_value_info("input", TensorProto.INT64, [1, 4]),
         helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("scales", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 4])],
        initializer=[weight, numpy_helper.from_array(np.array([1], np.int64), "axis")],
        value_info=[helper.make_tensor_value_info("latent", TensorProto.FLOAT, [1, 1, 4])])
    save(helper.make_model(graph), tmp_path / "needs-more.onnx")
    assert _split_at_vocoder(tmp_path / "needs-more.onnx") is None


async def test_a_voice_at_another_rate_streams_through_one_resampler(tmp_path: Path, model_store: ModelStore) -> None:
    """joe's model declared as a 16 kHz voice: its chunks are resampled to the engine's 22.05 kHz by one soxr stream,
    so the streamed speech matches the whole pieces resampled in one go."""
    src = model_store.path("piper-joe")
    shutil.copy(src / DEFAULT_MODEL, tmp_path / "en_US-slow-medium.onnx")
    config = json.loads((src / f"{DEFAULT_MODEL}.json").read_text())
    config["audio"]["sample_rate"] = 16000
    (tmp_path / "en_US-slow-medium.onnx.json").write_text(json.dumps(config))
    still = dict(noise_scale=0.0, noise_w_scale=0.0)
    streamed, whole = PiperTTS(store=model_store, **still), PiperTTS(store=model_store, stream=False, **still)
    text = "The weather is sunny today, and it will stay that way until the weekend."
    other = str(tmp_path / "en_US-slow-medium.onnx")
    try:
        chunks, _, _ = await collect(streamed, text, voice=other)
        pieces, _, _ = await collect(whole, text, voice=other)
    finally:
        streamed.close()
        whole.close()
    assert len(chunks) > len(pieces) and all(f.sample_rate == 22050 for f in chunks)
    for prev, cur in itertools.pairwise(chunks):
        assert cur.timestamp == pytest.approx(prev.timestamp + prev.duration)
    a, b = AudioFrame.concat(chunks).mono_float32(), AudioFrame.concat(pieces).mono_float32()
    assert abs(len(a) - len(b)) <= 2
    n = min(len(a), len(b))
    assert float(np.sqrt(np.mean((a[:n] - b[:n]) ** 2))) < 0.01 * float(np.sqrt(np.mean(b[:n] ** 2)))


def test_a_voice_that_says_none_of_the_calibration_phrases_keeps_its_level(model_store: ModelStore,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    import voxline.providers.piper as piper

    monkeypatch.setattr(piper, "_CALIBRATION", ("", " "))
    engine = PiperTTS(store=model_store)
    try:
        assert engine._default.gain == 1.0
    finally:
        engine.close()
    assert "says none of the calibration phrases" in caplog.text
