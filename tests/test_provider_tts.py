"""ElevenLabsTTS (REST and stream-input WebSocket, word timings, formats) and OpenAITTS / OpenAISTT against the
fakes, with the faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError, ProviderError
from voxline.fakes import FakeVendors, Fault
from voxline.fakes.audio import encode_words
from voxline.providers.base import TTS, StreamingTTS
from voxline.providers.elevenlabs import ElevenLabsTTS, WordTimings
from voxline.providers.openai import OpenAISTT, OpenAITTS

KEY = "fake-key"
TEXT = "Hello there, how are you today?"  # 31 characters: ~2.07 s at the fakes' 15 characters per second


@pytest.fixture(autouse=True)
def fresh(fakes: FakeVendors) -> None:
    fakes.elevenlabs.reset()
    fakes.openai.reset()
    fakes.openai.transcript = None


def eleven(fakes: FakeVendors, **kw: object) -> ElevenLabsTTS:
    return ElevenLabsTTS(base_url=fakes.url("elevenlabs"), api_key=str(kw.pop("api_key", KEY)), **kw)  # type: ignore[arg-type]


async def tokens(text: str) -> AsyncIterator[str]:
    for i, word in enumerate(text.split(" ")):
        yield word if i == 0 else " " + word
        await asyncio.sleep(0)


def total(frames: list[AudioFrame]) -> float:
    return sum(f.duration for f in frames)


@pytest.mark.parametrize(("fmt", "rate"), [("pcm_16000", 16000), ("pcm_22050", 22050), ("pcm_24000", 24000),
                                           ("ulaw_8000", 8000), ("mp3_44100_32", 44100), ("mp3_44100_128", 44100)])
async def test_elevenlabs_rest_formats(fakes: FakeVendors, fmt: str, rate: int) -> None:
    tts = eleven(fakes, output_format=fmt)
    assert isinstance(tts, StreamingTTS) and tts.sample_rate == rate
    frames = [f async for f in tts.synthesize(TEXT)]
    assert len(frames) > 1 and all(f.sample_rate == rate and f.channels == 1 for f in frames)
    assert abs(total(frames) - len(TEXT) / 15) < 0.12  # mp3 adds encoder padding
    audio = AudioFrame.concat(frames).mono_float32()
    assert 0.1 < float(np.abs(audio).max()) < 0.3  # the fake's 0.2 tone, decoded, not noise or silence
    sent = fakes.elevenlabs.requests[-1]
    assert sent["query"]["output_format"] == fmt and sent["body"]["model_id"] == "eleven_flash_v2_5"
    await tts.aclose()


async def test_elevenlabs_websocket_stream_and_word_timings(fakes: FakeVendors) -> None:
    tts = eleven(fakes)
    timings = WordTimings()
    frames = [f async for f in tts.synthesize_stream(tokens(TEXT), alignment=timings)]
    assert abs(total(frames) - len(TEXT.strip()) / 15) < 0.2
    assert [w.text for w in timings.words] == TEXT.split()
    assert all(b.start >= a.end - 1e-6 for a, b in zip(timings.words, timings.words[1:], strict=False))
    assert timings.words[-1].end <= total(frames) + 0.1
    assert timings.heard(0.0) == "" and timings.heard(total(frames) + 1) == TEXT
    assert timings.heard(timings.words[1].end) == "Hello there,"
    messages = fakes.elevenlabs.requests[-1]["messages"]
    assert messages[0]["text"] == " " and "voice_settings" in messages[0]
    assert messages[-1] == {"text": ""} and any(m.get("flush") for m in messages)
    assert all(m["text"].endswith(" ") for m in messages[1:-1])
    query = fakes.elevenlabs.requests[-1]["query"]
    assert query["model_id"] == "eleven_flash_v2_5" and query["output_format"] == "pcm_24000"
    await tts.aclose()


async def test_elevenlabs_synthesize_with_alignment_uses_the_websocket(fakes: FakeVendors) -> None:
    tts = eleven(fakes, output_format="ulaw_8000")
    timings = WordTimings()
    frames = [f async for f in tts.synthesize("Good morning.", alignment=timings)]
    assert frames[0].sample_rate == 8000 and timings.text == "Good morning."
    assert "messages" in fakes.elevenlabs.requests[-1]
    await tts.aclose()


@pytest.mark.parametrize("path", ["rest", "ws"])
async def test_elevenlabs_bad_key_and_rate_limit(fakes: FakeVendors, path: str) -> None:
    secret = "el-0123456789abcdef0123456789"
    tts = eleven(fakes, api_key=secret)

    async def run(t: ElevenLabsTTS) -> None:
        if path == "rest":
            [f async for f in t.synthesize(TEXT)]
        else:
            [f async for f in t.synthesize_stream(tokens(TEXT))]

    with pytest.raises(ProviderError) as info:
        await run(tts)
    assert not info.value.retryable and "invalid_api_key" in str(info.value)
    assert secret not in str(info.value) + repr(tts)
    fakes.elevenlabs.fail("rate_limit", retry_after=2)
    with pytest.raises(ProviderError) as info:
        await run(eleven(fakes))
    assert info.value.retryable and info.value.retry_after == 2


@pytest.mark.parametrize(("fault", "words"), [("drop", "dropped"), ("error_mid_stream", "internal"),
                                              ("malformed", "malformed")])
async def test_elevenlabs_websocket_mid_stream_faults(fakes: FakeVendors, fault: str, words: str) -> None:
    fakes.elevenlabs.fail(Fault(fault, after=1))  # type: ignore[arg-type]
    got: list[AudioFrame] = []
    with pytest.raises(ProviderError) as info:
        async for f in eleven(fakes).synthesize_stream(tokens(TEXT + " And what about tomorrow?")):
            got.append(f)
    assert words in str(info.value) and info.value.retryable and got


async def test_elevenlabs_rest_drop_and_slow_first_byte(fakes: FakeVendors) -> None:
    fakes.elevenlabs.fail(Fault("drop", after=3))
    with pytest.raises(ProviderError, match="dropped"):
        [f async for f in eleven(fakes).synthesize(TEXT)]
    fakes.elevenlabs.fail("slow_first_byte", delay=1)
    with pytest.raises(ProviderError, match="first byte"):
        [f async for f in eleven(fakes, first_byte_timeout=0.3).synthesize(TEXT)]
    fakes.elevenlabs.fail("slow_first_byte", delay=1)
    with pytest.raises(ProviderError, match="first byte"):
        [f async for f in eleven(fakes, first_byte_timeout=0.3).synthesize_stream(tokens(TEXT))]


async def test_elevenlabs_text_source_failure_is_raised_at_once(fakes: FakeVendors) -> None:
    """An LLM stream that breaks under synthesize_stream: its own error at once, not a "stalled" after idle 30 s."""
    class LLMBroke(Exception):
        pass

    async def broken() -> AsyncIterator[str]:
        yield "Hello there. "
        await asyncio.sleep(0.2)  # the first sentence's audio arrives meanwhile
        yield "How "
        raise LLMBroke("openai stream ended before [DONE]")

    got: list[AudioFrame] = []
    start = asyncio.get_running_loop().time()
    with pytest.raises(LLMBroke):
        async for f in eleven(fakes).synthesize_stream(broken()):
            got.append(f)
    assert asyncio.get_running_loop().time() - start < 2.0 and got


async def test_elevenlabs_first_byte_clock_starts_with_the_first_text(fakes: FakeVendors) -> None:
    """A slow first token is the LLM's time, not ElevenLabs' first byte."""
    async def slow_start() -> AsyncIterator[str]:
        await asyncio.sleep(0.6)
        async for t in tokens(TEXT):
            yield t

    frames = [f async for f in eleven(fakes, first_byte_timeout=0.3).synthesize_stream(slow_start())]
    assert abs(total(frames) - len(TEXT) / 15) < 0.12


async def test_elevenlabs_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        ElevenLabsTTS()
    with pytest.raises(ConfigError, match="output format"):
        ElevenLabsTTS(api_key="x", output_format="flac_48000")


async def test_elevenlabs_prewarm_and_cancel(fakes: FakeVendors) -> None:
    tts = eleven(fakes, keep_warm=True)
    await tts.prewarm()
    assert fakes.elevenlabs.connections == 1
    stream = tts.synthesize_stream(tokens(TEXT))
    await anext(stream)
    await stream.aclose()  # barge-in: the consumer stops; the socket closes
    await asyncio.sleep(0.1)
    assert fakes.elevenlabs.connections == 2  # keep_warm opened the next one already
    frames = [f async for f in tts.synthesize_stream(tokens("Yes."))]
    assert frames and any("Yes." in m["text"] for m in fakes.elevenlabs.requests[1]["messages"])  # the warm one
    await tts.aclose()


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3"])
async def test_openai_speech(fakes: FakeVendors, fmt: str) -> None:
    tts = OpenAITTS(base_url=fakes.url("openai"), api_key=KEY, response_format=fmt, voice="nova")
    assert isinstance(tts, TTS)
    frames = [f async for f in tts.synthesize(TEXT)]
    assert all(f.sample_rate == 24000 for f in frames)
    assert abs(total(frames) - len(TEXT) / 15) < 0.12
    body = fakes.openai.requests[-1]["body"]
    assert body["response_format"] == fmt and body["voice"] == "nova" and body["input"] == TEXT
    assert [f async for f in tts.synthesize("  ")] == []
    fakes.openai.fail(Fault("drop", after=1))
    with pytest.raises(ProviderError, match="dropped"):
        [f async for f in tts.synthesize(TEXT)]
    await tts.aclose()


async def test_openai_transcription_batch_and_buffered_stream(fakes: FakeVendors) -> None:
    stt = OpenAISTT(base_url=fakes.url("openai"), api_key=KEY, model="whisper-1")
    result = await stt.transcribe(encode_words(["one", None, "two", "three"]), language="en")
    assert result.text == "one two three" and abs(result.duration - 1.6) < 0.01 and result.segments
    fields = fakes.openai.requests[-1]["body"]
    assert fields == {"model": "whisper-1", "response_format": "verbose_json", "language": "en"}
    stream = stt.stream()
    for chunk in encode_words(["four", "five"]).chunks(0.1):
        await stream.send(chunk)
    await stream.finalize()
    assert (await anext(aiter(stream))).text == "four five"
    await stream.close()
    fakes.openai.fail("unauthorized")
    with pytest.raises(ProviderError, match="401"):
        await stt.transcribe(encode_words(["one"]))
    fakes.openai.fail("malformed")
    with pytest.raises(ProviderError, match="malformed"):
        await stt.transcribe(encode_words(["one"]))
    await stt.aclose()
