"""OpenAI's REST audio endpoints, called with the official `openai` SDK: speech from the local Piper voice,
transcription of real recorded speech by the local Whisper model, the model list, and OpenAI-style errors."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI

from serving import serving
from voxline.agent.config import AgentConfig
from voxline.agent.stack import Stack
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.models.store import ModelStore
from voxline.providers.piper import PiperTTS
from voxline.providers.scripted import ScriptedLLM
from voxline.providers.whisper import WhisperSTT
from voxline.server import create_app


@pytest.fixture(scope="module")
async def client(model_store: ModelStore) -> AsyncIterator[AsyncOpenAI]:
    stack = Stack(WhisperSTT(store=model_store), ScriptedLLM(), PiperTTS(store=model_store))
    async with serving(create_app(stack, AgentConfig.load(turn={"detector": "energy"}))) as base:
        yield AsyncOpenAI(api_key="anything", base_url=base + "/v1", max_retries=0)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def test_models_list(client: AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert {"voxline-stt", "voxline-tts", "voxline-realtime"} <= set(ids)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "opus", "aac"])
async def test_speech_in_every_format_round_trips_through_whisper(client: AsyncOpenAI, fmt: str) -> None:
    response = await client.audio.speech.create(model="tts-1", voice="alloy", input="The weather is sunny today.",
                                                response_format=fmt)  # type: ignore[arg-type]
    audio = read_audio(response.content)
    assert 1.0 < audio.duration < 4.0 and audio.rms() > 0.01
    if fmt in ("wav", "mp3"):
        text = await client.audio.transcriptions.create(model="whisper-1", file=(f"x.{fmt}", response.content),
                                                        response_format="text")
        assert len({"weather", "sunny", "today"} & set(words(text))) >= 2, text


async def test_speech_pcm_streams_24khz(client: AsyncOpenAI) -> None:
    chunks = []
    async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="First sentence here. And a second one follows it.",
            response_format="pcm") as response:
        async for chunk in response.iter_bytes():
            chunks.append(chunk)
    pcm = b"".join(chunks)
    audio = AudioFrame.from_pcm(pcm[: len(pcm) // 2 * 2], 24000)
    assert 2.0 < audio.duration < 6.0


async def test_transcriptions_of_recorded_speech_in_every_format(client: AsyncOpenAI, speech_dir: Path) -> None:
    path = speech_dir / "gold" / "sense_and_sensibility_01_austen_64kb-0880.flac"  # "HE WAS NOT AN ILL DISPOSED..."
    data = path.read_bytes()
    as_json = await client.audio.transcriptions.create(model="whisper-1", file=("a.flac", data))
    assert words(as_json.text)[:4] == ["he", "was", "not", "an"]
    verbose = await client.audio.transcriptions.create(model="whisper-1", file=("a.flac", data),
                                                       response_format="verbose_json",
                                                       timestamp_granularities=["word", "segment"])
    assert verbose.duration == pytest.approx(2.99, abs=0.05) and verbose.segments and verbose.words
    srt = await client.audio.transcriptions.create(model="whisper-1", file=("a.flac", data), response_format="srt")
    assert srt.startswith("1\n00:00:0") and "-->" in srt
    vtt = await client.audio.transcriptions.create(model="whisper-1", file=("a.flac", data), response_format="vtt")
    assert vtt.startswith("WEBVTT")
    stream = await client.audio.transcriptions.create(model="whisper-1", file=("a.flac", data), stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "transcript.text.done" and events[0].type == "transcript.text.delta"
    assert words(events[-1].text) == words(as_json.text)


async def test_bad_requests_get_openai_errors(client: AsyncOpenAI, bad_dir: Path) -> None:
    with pytest.raises(openai.BadRequestError) as bad_file:
        await client.audio.transcriptions.create(model="whisper-1",
                                                 file=("bad.wav", (bad_dir / "bad.wav").read_bytes()))
    assert bad_file.value.body["param"] == "file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        await client.audio.transcriptions.create(model="whisper-1", file=("x.wav", io.BytesIO(b"garbage" * 100)))
    with pytest.raises(openai.BadRequestError) as bad_format:
        await client.audio.speech.create(model="tts-1", voice="alloy", input="hi",
                                         response_format="midi")  # type: ignore[arg-type]
    assert "response_format" in str(bad_format.value)
    with pytest.raises(openai.BadRequestError):
        await client.audio.speech.create(model="tts-1", voice="alloy", input="")
    with pytest.raises(openai.BadRequestError):
        await client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 5000)
