"""The OpenAI-Realtime-compatible endpoint, driven by the official `openai` SDK (beta realtime client): a spoken
conversation on recorded speech with barge-in and truncation, manual turns, and OpenAI-style errors."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from starlette.websockets import WebSocketState

from serving import serving
from talk import utterance
from voxline.agent.config import AgentConfig
from voxline.agent.stack import Stack, scripted_stack
from voxline.audio.frame import AudioFrame
from voxline.server import create_app
from voxline.transports.base import ClientEvent
from voxline.transports.realtime import RealtimeTransport

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
        assert done.response.status_details.reason == "client_cancelled"


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


# ---- the transport alone, on a socket stand-in ------------------------------------------------------------------


class FakeSocket:
    """Just enough of a Starlette WebSocket for `RealtimeTransport`: client events in, server events recorded."""

    def __init__(self, *events: Any, subprotocols: tuple[str, ...] = ()) -> None:
        self.scope: dict[str, Any] = {"subprotocols": list(subprotocols)}
        self.inbox = [{"type": "websocket.receive", "text": json.dumps(e)} for e in events]
        self.sent: list[dict[str, Any]] = []
        self.subprotocol: str | None = None
        self.application_state = WebSocketState.CONNECTING

    async def accept(self, subprotocol: str | None = None) -> None:
        self.subprotocol, self.application_state = subprotocol, WebSocketState.CONNECTED

    async def receive(self) -> dict[str, Any]:
        return self.inbox.pop(0) if self.inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e["type"] == kind]


async def connected(*events: Any, subprotocols: tuple[str, ...] = ()) -> tuple[RealtimeTransport, FakeSocket]:
    sock = FakeSocket(*events, subprotocols=subprotocols)
    transport = RealtimeTransport(sock)  # type: ignore[arg-type]
    await transport.start("")
    return transport, sock


async def received(transport: RealtimeTransport) -> list[Any]:
    return [item async for item in transport.receive()]


def user_text(content: Any) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": content}}


@pytest.mark.parametrize("bad, param", [
    ({"type": "session.update", "session": {"input_audio_format": ["pcm16"]}}, "session.input_audio_format"),
    ({"type": "session.update", "session": {"output_audio_format": {"f": 1}}}, "session.output_audio_format"),
    ({"type": "session.update", "session": {"instructions": 5}}, "session.instructions"),
    (user_text([{"type": "input_text", "text": 5}]), "item.content[0].text"),
    (user_text(5), "item.content"),
    ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": True}, "audio_end_ms"),
])
async def test_values_of_the_wrong_type_get_an_error_and_the_session_goes_on(bad: dict[str, Any], param: str) -> None:
    transport, sock = await connected(bad, {"type": "response.create"})
    assert await received(transport) == [ClientEvent("respond")]
    [error] = sock.of("error")
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["param"] == param
    assert transport.config["input_audio_format"] == transport.config["output_audio_format"] == "pcm16"


@pytest.mark.parametrize("offered, chosen", [
    (("realtime", "openai-insecure-api-key.sk-123", "openai-beta.realtime-v1"), "realtime"),
    (("openai-beta.realtime-v1", "realtime"), "realtime"),
    ((), None),
])
async def test_accept_selects_the_realtime_subprotocol_when_offered(offered: tuple[str, ...],
                                                                   chosen: str | None) -> None:
    _, sock = await connected(subprotocols=offered)
    assert sock.subprotocol == chosen  # a browser fails a handshake that selects none of what it offered


async def test_manual_turns_forward_no_vad_events_and_commit_once() -> None:
    transport, sock = await connected({"type": "session.update", "session": {"turn_detection": None}})
    assert await received(transport) == [ClientEvent("configure", {"auto_end_turns": False, "auto_respond": False})]
    await transport.send_event({"type": "speech_started", "time": 0.2})
    await transport.send_event({"type": "turn_ended", "time": 1.4})  # the detector runs; it must not end the turn
    sock.inbox.append({"type": "websocket.receive", "text": json.dumps({"type": "input_audio_buffer.commit"})})
    assert await received(transport) == [ClientEvent("commit")]
    await transport.send_event({"type": "transcript", "final": True, "text": "hello"})
    kinds = [e["type"] for e in sock.sent]
    assert "input_audio_buffer.speech_started" not in kinds and "input_audio_buffer.speech_stopped" not in kinds
    [committed] = sock.of("input_audio_buffer.committed")
    [created] = sock.of("conversation.item.created")
    [transcribed] = sock.of("conversation.item.input_audio_transcription.completed")
    assert committed["item_id"] == created["item"]["id"] == transcribed["item_id"]


async def test_server_vad_forwards_the_detectors_turn_events() -> None:
    transport, sock = await connected()
    await transport.send_event({"type": "speech_started", "time": 0.2})
    await transport.send_event({"type": "turn_ended", "time": 1.4})
    assert [e["type"] for e in sock.sent[1:]] == ["input_audio_buffer.speech_started",
                                                  "input_audio_buffer.speech_stopped",
                                                  "input_audio_buffer.committed", "conversation.item.created"]


async def test_cancelled_responses_report_why() -> None:
    transport, sock = await connected({"type": "response.cancel"})
    await transport.send_event({"type": "reply_started", "turn": 1})
    assert await received(transport) == [ClientEvent("interrupt")]
    await transport.send_event({"type": "agent_done", "text": "", "interrupted": True})
    await transport.send_event({"type": "reply_started", "turn": 2})  # then the caller barges in
    await transport.send_event({"type": "agent_done", "text": "", "interrupted": True})
    reasons = [d["response"]["status_details"]["reason"] for d in sock.of("response.done")]
    assert reasons == ["client_cancelled", "turn_detected"]


def truncate(item_id: str, end_ms: int) -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": end_ms}


async def test_a_truncate_of_an_earlier_item_leaves_the_reply_playing_alone() -> None:
    transport, sock = await connected()
    await transport.send_event({"type": "reply_started", "turn": 2})  # reply C plays; A ended at a barge-in
    playing = sock.of("response.created")[0]["response"]["id"]
    item = next(e["item"]["id"] for e in sock.of("response.output_item.added") if e["response_id"] == playing)
    sock.inbox.append({"type": "websocket.receive", "text": json.dumps(truncate("item_of_reply_a", 800))})
    sock.inbox.append({"type": "websocket.receive", "text": json.dumps(truncate(item, 300))})
    assert await received(transport) == [ClientEvent("truncate", {"played_ms": 300})]  # only C's own
    assert [e["item_id"] for e in sock.of("conversation.item.truncated")] == ["item_of_reply_a", item]
