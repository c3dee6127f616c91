"""The OpenAI-Realtime-compatible endpoint, driven by the official `openai` SDK (beta realtime client): a spoken
conversation on recorded speech with barge-in and truncation, manual turns, and OpenAI-style errors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from serving import serving
from talk import utterance
from voxline.agent.config import AgentConfig
from voxline.agent.stack import Stack, scripted_stack
from voxline.audio.frame import AudioFrame
from voxline.server import create_app

LONG = ("Let me explain. The museum opens at nine in the morning and closes at five in the afternoon, "
        "except on Mondays when it stays closed all day, and entry is free on the first Sunday of each month.")


@pytest.fixture(scope="module")
def stack() -> Stack:
    return scripted_stack(llm={"reply": LONG}, tts={"seconds_per_word": 0.15},
                          stt={"texts": ["when does the museum open", "and on mondays", "thanks"],
                               "interim_after_s": 0.4})


@pytest.fixture(scope="module")
async def client(stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    app = create_app(stack, AgentConfig.load(turn={"detector": "silero", "silence_s": 0.5}))
    async with serving(app) as base:
        yield AsyncOpenAI(api_key="test-key", base_url=base + "/v1",
                          websocket_base_url=base.replace("http", "ws") + "/v1")


async def speak(conn: Any, audio: AudioFrame, speed: float = 3.0) -> None:
    for chunk in audio.resample(24000).chunks(0.1):
        await conn.input_audio_buffer.append(audio=base64.b64encode(chunk.pcm()).decode())
        await asyncio.sleep(0.1 / speed)


async def next_of(conn: Any, *types: str, within_s: float = 15.0) -> Any:
    async with asyncio.timeout(within_s):
        async for event in conn:
            if event.type in types:
                return event
    raise AssertionError(f"connection ended before {types}")


async def test_spoken_conversation_with_barge_in_and_truncate(client: AsyncOpenAI) -> None:
    async with client.beta.realtime.connect(model="voxline-realtime") as conn:
        created = await next_of(conn, "session.created")
        assert created.session.input_audio_format == "pcm16"
        await conn.session.update(session={"instructions": "You are a museum guide.",
                                           "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}})
        await next_of(conn, "session.updated")
        talker = asyncio.create_task(speak(conn, AudioFrame.concat([utterance(10, 2.0),
                                                                    AudioFrame.silence(1.0, 16000)])))
        assert (await next_of(conn, "input_audio_buffer.speech_started")).audio_start_ms >= 0
        await next_of(conn, "input_audio_buffer.speech_stopped")
        transcription = await next_of(conn, "conversation.item.input_audio_transcription.completed")
        assert transcription.transcript == "when does the museum open"
        response = (await next_of(conn, "response.created")).response
        audio = bytearray()
        while len(audio) < 24000 * 2 * 1.0:  # one second of reply audio
            delta = await next_of(conn, "response.audio.delta")
            assert delta.response_id == response.id
            audio += base64.b64decode(delta.delta)
        await talker
        item_id = delta.item_id
        barge = asyncio.create_task(speak(conn, AudioFrame.concat([utterance(11, 1.5),
                                                                   AudioFrame.silence(1.0, 16000)])))
        done = await next_of(conn, "response.done")
        assert done.response.id == response.id and done.response.status == "cancelled"
        heard = done.response.output[0].content[0].transcript
        assert heard and len(heard.split()) < len(LONG.split())
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=800)
        truncated = await next_of(conn, "conversation.item.truncated")
        assert truncated.audio_end_ms == 800
        await barge
        second = await next_of(conn, "response.created")
        assert second.response.id != response.id


async def test_manual_turns_text_items_and_response_create(client: AsyncOpenAI) -> None:
    async with client.beta.realtime.connect(model="voxline-realtime") as conn:
        await next_of(conn, "session.created")
        await conn.session.update(session={"turn_detection": None, "output_audio_format": "g711_ulaw"})
        assert (await next_of(conn, "session.updated")).session.output_audio_format == "g711_ulaw"
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "hello"}]})
        await next_of(conn, "conversation.item.created")
        await conn.response.create()
        delta = await next_of(conn, "response.audio.delta")
        assert len(base64.b64decode(delta.delta)) > 0  # mu-law bytes at 8 kHz
        await conn.response.cancel()
        done = await next_of(conn, "response.done")
        assert done.response.status == "cancelled"


async def test_bad_events_get_openai_style_errors_and_the_session_goes_on(client: AsyncOpenAI) -> None:
    async with client.beta.realtime.connect(model="voxline-realtime") as conn:
        await next_of(conn, "session.created")
        await conn.send({"type": "bogus.event"})  # type: ignore[arg-type]
        error = await next_of(conn, "error")
        assert error.error.type == "invalid_request_error" and "bogus.event" in error.error.message
        await conn.input_audio_buffer.append(audio="***not base64***")
        assert "base64" in (await next_of(conn, "error")).error.message
        await conn.input_audio_buffer.append(audio="A" * (16 * 1024 * 1024 * 4 // 3))
        assert "must not exceed" in (await next_of(conn, "error")).error.message
        await conn.session.update(session={"input_audio_format": "flac"})  # type: ignore[typeddict-item]
        assert (await next_of(conn, "error")).error.param == "session.input_audio_format"
        await conn.conversation.item.truncate(item_id="x", content_index=0, audio_end_ms=-5)
        assert (await next_of(conn, "error")).error.param == "audio_end_ms"
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "still there?"}]})
        await conn.response.create()
        assert (await next_of(conn, "response.created")).response.status == "in_progress"
