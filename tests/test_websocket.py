"""The WebSocket protocol with a real server (uvicorn) and a real client (`websockets`): whole conversations on
recorded speech, and every kind of bad input (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from serving import serving
from talk import utterance
from voxline.agent.config import AgentConfig
from voxline.agent.stack import Stack, scripted_stack
from voxline.audio.frame import AudioFrame
from voxline.records import default_path, get_session
from voxline.server import create_app
from voxline.transports.websocket import Limits


@pytest.fixture(scope="module")
def stack() -> Stack:
    return scripted_stack(llm={"reply": "It is ten past four. Anything else?"})


@pytest.fixture(scope="module")
async def base_url(stack: Stack) -> AsyncIterator[str]:
    config = AgentConfig.load(turn={"detector": "silero", "silence_s": 0.4})
    app = create_app(stack, config, limits=Limits(max_message_bytes=64_000, max_ahead_s=20.0, start_timeout_s=2.0))
    async with serving(app) as url:
        yield url


def ws_url(base: str) -> str:
    return base.replace("http", "ws") + "/ws"


async def start(ws: ClientConnection, rate: int = 16000) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "session.start", "sample_rate": rate, "output_sample_rate": 24000}))
    return json.loads(await ws.recv())


async def send_audio(ws: ClientConnection, audio: AudioFrame, speed: float = 4.0) -> None:
    for frame in audio.chunks(0.02):
        await ws.send(frame.pcm())
        await asyncio.sleep(0.02 / speed)


async def collect(ws: ClientConnection, until: str, within_s: float = 15.0) -> tuple[list[dict[str, Any]], bytes]:
    events, audio = [], bytearray()
    async with asyncio.timeout(within_s):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                audio += message
                continue
            event = json.loads(message)
            events.append(event)
            if event["type"] == until:
                return events, bytes(audio)


async def test_conversation_over_websocket(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        started = await start(ws)
        session_id = started["session_id"]
        assert started["type"] == "session.started" and started["output_sample_rate"] == 24000
        speech = utterance(5, 2.5)
        sender = asyncio.create_task(send_audio(ws, AudioFrame.concat([speech, AudioFrame.silence(3.0, 16000)])))
        events, audio = await collect(ws, "cost")
        await sender
    kinds = [e["type"] for e in events]
    assert kinds.index("speech_started") < kinds.index("turn_ended") < kinds.index("agent_text")
    assert any(e["type"] == "transcript" and e["final"] and e["text"] == "what time is it" for e in events)
    reply = AudioFrame.from_pcm(audio, 24000)
    assert reply.duration == pytest.approx(7 * 0.04, abs=0.01) and reply.rms() > 0.01
    timeline = next(e for e in events if e["type"] == "timeline")
    assert timeline["voice_to_voice_ms"] is not None and "first_audio_sent" in timeline["stages_ms"]
    cost = events[-1]
    assert cost["currency"] == "USD" and cost["session_cost"] >= cost["turn_cost"] >= 0
    assert cost["usage"]["stt_seconds"] > 2.0 and cost["usage"]["tts_characters"] > 0
    for _ in range(100):  # the session record is written by a background thread, as the call goes
        record = get_session(default_path(), session_id)
        if record["ended_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert [t["user_text"] for t in record["turns"]] == ["what time is it"]
    assert record["turns"][0]["agent_text"] == "It is ten past four. Anything else?"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(base_url + "/metrics")).text
        health = (await client.get(base_url + "/healthz")).json()
    assert "voxline_voice_to_voice_seconds_count 1.0" in metrics or "voxline_voice_to_voice_seconds_count" in metrics
    assert health["status"] == "ok"


async def test_input_at_another_rate_is_resampled(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        await start(ws, rate=48000)
        speech = AudioFrame.concat([utterance(6, 2.5), AudioFrame.silence(3.0, 16000)]).resample(48000)
        sender = asyncio.create_task(send_audio(ws, speech))
        events, audio = await collect(ws, "agent_done")
        await sender
    assert len(audio) > 0 and any(e["type"] == "turn_ended" for e in events)


@pytest.mark.parametrize("first, reason", [
    ({"type": "hello"}, "session.start"),
    ({"type": "session.start"}, "sample_rate"),
    ({"type": "session.start", "sample_rate": 1234}, "sample_rate"),
    ({"type": "session.start", "sample_rate": "16000"}, "sample_rate"),
    ("not json", "malformed JSON"),
])
async def test_bad_start_is_refused_with_a_reason(base_url: str, first: Any, reason: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        await ws.send(first if isinstance(first, str) else json.dumps(first))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and reason in error["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_no_start_times_out(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_bad_messages_get_errors_and_the_call_goes_on(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        await start(ws)
        await ws.send("{broken")
        await ws.send(json.dumps(["not", "an", "object"]))
        await ws.send(json.dumps({"type": "dance"}))
        await ws.send(b"\x01\x02\x03")  # odd length: not whole samples
        errors = [json.loads(await ws.recv()) for _ in range(4)]
        assert [e["code"] for e in errors] == ["bad_event", "bad_event", "bad_event", "bad_audio"]
        assert "dance" in errors[2]["message"]
        await ws.send(json.dumps({"type": "text", "text": "hello"}))  # still alive: a typed turn is answered
        events, audio = await collect(ws, "agent_done")
        assert audio and events[-1]["text"].startswith("It is ten past four")


async def test_huge_message_closes_with_1009(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url), max_size=None) as ws:
        await start(ws)
        await ws.send(b"\x00" * 100_000)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_audio_far_faster_than_real_time_is_refused(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        await start(ws)
        chunk = AudioFrame.silence(1.0, 16000).pcm()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(40):  # 40 s of audio in well under a second
                await ws.send(chunk)
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_disconnect_mid_reply_ends_the_session(base_url: str) -> None:
    app_sessions_before = await _health(base_url)
    async with websockets.connect(ws_url(base_url)) as ws:
        await start(ws)
        await ws.send(json.dumps({"type": "text", "text": "tell me a long story"}))
        await collect(ws, "agent_text")
    for _ in range(100):
        if await _health(base_url) == app_sessions_before:
            break
        await asyncio.sleep(0.05)
    assert await _health(base_url) == app_sessions_before


async def _health(base_url: str) -> int:
    async with httpx.AsyncClient() as client:
        return int((await client.get(base_url + "/healthz")).json()["sessions"])


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def test_a_thousand_connects_leave_memory_flat(base_url: str) -> None:
    async def once() -> None:
        async with websockets.connect(ws_url(base_url)) as ws:
            await start(ws)
            await ws.send(AudioFrame.silence(0.1, 16000).pcm())

    for _ in range(100):  # warm up allocator pools and caches
        await once()
    before = _rss_mb()
    for _ in range(1000):
        await once()
    await asyncio.sleep(0.2)
    grown = _rss_mb() - before
    assert grown < 15, f"RSS grew by {grown:.1f} MB over 1000 sessions"
    assert await _health(base_url) == 0


async def test_client_that_never_reads_is_disconnected() -> None:
    """The transport bounds what it queues for a caller whose socket does not drain."""
    from voxline.transports.websocket import WebSocketTransport

    class StuckSocket:
        application_state = None

        async def send_bytes(self, data: bytes) -> None:
            await asyncio.Event().wait()  # never drains

        async def send_text(self, data: str) -> None:
            await asyncio.Event().wait()

        async def close(self, code: int = 1000, reason: str = "") -> None:
            self.closed = (code, reason)

    sock = StuckSocket()
    transport = WebSocketTransport(sock, limits=Limits(max_outbound=50))  # type: ignore[arg-type]
    transport._writer = asyncio.create_task(transport._write_loop())
    frame = AudioFrame(np.zeros(480, np.int16), 24000)
    for _ in range(200):
        await transport.send_audio(frame)
    await asyncio.sleep(0.05)
    assert transport._outbound.qsize() <= 50
    assert getattr(sock, "closed", (0, ""))[0] == 1008
    transport._writer.cancel()


async def test_fields_of_the_wrong_type_get_bad_event_and_the_call_goes_on(base_url: str) -> None:
    async with websockets.connect(ws_url(base_url)) as ws:
        await start(ws)
        for bad in ({"type": []}, {"type": {"text": 1}}, {"type": "text", "text": 5},
                    {"type": "playback", "played_ms": "soon"}):
            await ws.send(json.dumps(bad))
        errors = [json.loads(await ws.recv()) for _ in range(4)]
        assert [e["code"] for e in errors] == ["bad_event"] * 4
        assert "text" in errors[2]["message"] and "played_ms" in errors[3]["message"]
        await ws.send(json.dumps({"type": "text", "text": "hello"}))
        events, audio = await collect(ws, "agent_done")
        assert audio and events[-1]["text"].startswith("It is ten past four")


def _writers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "WebSocketTransport._write_loop"]


async def test_a_failed_start_leaves_no_writer_task(base_url: str) -> None:
    from voxline.transports.websocket import WebSocketTransport

    class GoneSocket:
        """Accepts, then reports that the caller hung up before `session.start`."""

        application_state = None

        async def accept(self) -> None: ...

        async def receive(self) -> dict[str, Any]:
            return {"type": "websocket.disconnect", "code": 1001}

        async def close(self, code: int = 1000, reason: str = "") -> None: ...

    before = set(asyncio.all_tasks())
    transport = WebSocketTransport(GoneSocket())  # type: ignore[arg-type]
    assert not await transport.start("s")
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() - before if not t.done()]

    writers = len(_writers())
    for _ in range(20):  # the same through the server: callers that hang up before session.start
        async with websockets.connect(ws_url(base_url)):
            pass
    for _ in range(100):
        if len(_writers()) <= writers:
            break
        await asyncio.sleep(0.02)
    assert len(_writers()) <= writers
