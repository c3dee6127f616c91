"""Phone calls over Twilio Media Streams, with a Twilio-shaped client written from Twilio's documented messages:
real recorded speech as 8 kHz mu-law, reply audio back, marks for playout tracking, `clear` on barge-in, DTMF,
and the webhook's signature check."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from starlette.websockets import WebSocketState

from serving import serving
from talk import utterance
from voxline.agent.config import AgentConfig
from voxline.agent.stack import Stack, scripted_stack
from voxline.audio.frame import AudioFrame, decode_mulaw, encode_mulaw
from voxline.server import create_app
from voxline.transports.base import ClientEvent
from voxline.transports.twilio import TwilioTransport, twilio_signature, valid_signature

TOKEN = "12345678901234567890123456789012"
LONG = ("Of course. Our opening hours are from nine in the morning until six in the evening on weekdays, "
        "and from ten until four on Saturdays, and we are closed on Sundays and public holidays.")


@pytest.fixture(scope="module")
def stack() -> Stack:
    return scripted_stack(llm={"reply": LONG}, tts={"seconds_per_word": 0.15},
                          stt={"texts": ["when are you open", "thanks that is all", "bye"], "interim_after_s": 0.4})


@pytest.fixture(scope="module")
async def base_url(stack: Stack) -> AsyncIterator[str]:
    app = create_app(stack, AgentConfig.load(turn={"detector": "silero", "silence_s": 0.4}),
                     twilio_auth_token=TOKEN)
    async with serving(app) as url:
        yield url


class Phone:
    """Plays Twilio's side of a bidirectional media stream."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.audio = bytearray()
        self.events: list[dict[str, Any]] = []
        self.seq = 0

    async def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({"event": event, "sequenceNumber": str(self.seq), "streamSid": "MZ123",
                                       **body}))

    async def open(self) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.send("start", start={"accountSid": "AC1", "streamSid": "MZ123", "callSid": "CA42",
                                        "tracks": ["inbound"], "customParameters": {},
                                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                        "channels": 1}})

    async def speak(self, audio: AudioFrame, speed: float = 2.0) -> None:
        for i, frame in enumerate(audio.resample(8000).chunks(0.02)):
            payload = base64.b64encode(encode_mulaw(frame)).decode()
            await self.send("media", media={"track": "inbound", "chunk": str(i + 1),
                                            "timestamp": str(i * 20), "payload": payload})
            await asyncio.sleep(0.02 / speed)

    async def listen(self) -> None:
        """Receive what the server sends; like Twilio, echo each mark once the audio before it has 'played'."""
        played_s = 0.0
        async for message in self.ws:
            msg = json.loads(message)
            self.events.append(msg)
            assert msg.get("streamSid") == "MZ123"
            if msg["event"] == "media":
                chunk = base64.b64decode(msg["media"]["payload"])
                self.audio += chunk
                played_s += len(chunk) / 8000
            elif msg["event"] == "mark":
                await self.send("mark", mark={"name": msg["mark"]["name"]})


async def test_call_with_barge_in_marks_and_dtmf(base_url: str, stack: Stack) -> None:
    url = base_url.replace("http", "ws") + "/twilio/stream"
    async with websockets.connect(url) as ws:
        phone = Phone(ws)
        await phone.open()
        listener = asyncio.create_task(phone.listen())
        await phone.speak(AudioFrame.concat([utterance(7, 2.0), AudioFrame.silence(1.0, 16000)]))
        for _ in range(200):
            if len(phone.audio) > 8000 * 1.5:  # 1.5 s of reply received
                break
            await asyncio.sleep(0.02)
        await phone.speak(AudioFrame.concat([utterance(8, 1.5), AudioFrame.silence(1.0, 16000)]))
        await phone.send("dtmf", dtmf={"track": "inbound_track", "digit": "7"})
        await asyncio.sleep(0.5)
        await phone.send("stop", stop={"accountSid": "AC1", "callSid": "CA42"})
        await asyncio.wait_for(listener, 10)
    kinds = [e["event"] for e in phone.events]
    assert "media" in kinds and "mark" in kinds and "clear" in kinds
    reply = decode_mulaw(bytes(phone.audio))
    assert reply.duration > 1.0 and reply.rms() > 0.01
    marks = [e["mark"]["name"] for e in phone.events if e["event"] == "mark"]
    assert all(m.startswith("r") and ":" in m for m in marks)


async def test_webhook_returns_connect_stream_twiml_with_a_valid_signature(base_url: str) -> None:
    params = {"CallSid": "CA42", "From": "+15550001111", "To": "+15550002222"}
    url = base_url + "/twilio/voice"
    async with httpx.AsyncClient() as client:
        ok = await client.post(url, data=params, headers={"X-Twilio-Signature": twilio_signature(TOKEN, url, params)})
        forged = await client.post(url, data=params, headers={"X-Twilio-Signature": "bm9wZQ=="})
        missing = await client.post(url, data=params)
    assert ok.status_code == 200 and "<Connect><Stream url=" in ok.text and "/twilio/stream" in ok.text
    assert forged.status_code == 403 and missing.status_code == 403


async def test_webhook_behind_a_proxy_checks_and_answers_the_public_url(base_url: str) -> None:
    """Twilio signs the URL it requested, the proxy's; the stream URL in the TwiML must point there too."""
    params = {"CallSid": "CA43"}
    public = "https://voice.example.com/twilio/voice"
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.com"}
    async with httpx.AsyncClient() as client:
        ok = await client.post(base_url + "/twilio/voice", data=params,
                               headers={**proxy, "X-Twilio-Signature": twilio_signature(TOKEN, public, params)})
        internal = await client.post(base_url + "/twilio/voice", data=params, headers={
            **proxy, "X-Twilio-Signature": twilio_signature(TOKEN, base_url + "/twilio/voice", params)})
    assert ok.status_code == 200 and 'url="wss://voice.example.com/twilio/stream' in ok.text
    assert internal.status_code == 403


# Test vectors of Twilio's own request validator (twilio-python, tests/unit/test_request_validator.py).
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212",
                 "Caller": "+14158675309"}


def test_signature_matches_twilios_test_vectors() -> None:
    assert twilio_signature("12345", VECTOR_URL, VECTOR_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert valid_signature("12345", VECTOR_URL.replace(".com", ".com:1234"), VECTOR_PARAMS,
                           "RSOYDt4T1cUTdK1PDd93/VVr8B8=")  # port removed
    assert valid_signature("12345", VECTOR_URL, VECTOR_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")  # :443 added
    assert not valid_signature("12345", VECTOR_URL, {**VECTOR_PARAMS, "Digits": "9"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


async def test_garbage_messages_do_not_end_the_call(base_url: str) -> None:
    url = base_url.replace("http", "ws") + "/twilio/stream"
    async with websockets.connect(url) as ws:
        phone = Phone(ws)
        await phone.open()
        await ws.send("not json")
        await phone.send("media", media={"track": "inbound", "payload": "%%%not base64%%%"})
        await phone.send("wat")
        await phone.send("media", media="abc")
        await phone.send("media", media={"track": "inbound", "payload": "", "timestamp": "x"})
        await phone.send("mark", mark="r1:200")
        await phone.send("dtmf", dtmf=["1"])
        await phone.speak(AudioFrame.concat([utterance(9, 2.0), AudioFrame.silence(1.0, 16000)]))
        listener = asyncio.create_task(phone.listen())
        for _ in range(300):
            if phone.audio:
                break
            await asyncio.sleep(0.02)
        await phone.send("stop", stop={})
        await asyncio.wait_for(listener, 10)
    assert phone.audio


class FakeStream:
    """Twilio's side of a media stream without a server: queued messages in, the close recorded."""

    def __init__(self, *messages: Any) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for m in messages:
            self.push(m)
        self.application_state = WebSocketState.CONNECTING
        self.closed: tuple[int, str] | None = None

    def push(self, message: Any) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(message)})

    async def accept(self) -> None:
        self.application_state = WebSocketState.CONNECTED

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed, self.application_state = (code, reason), WebSocketState.DISCONNECTED


START = {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", "mediaFormat": {
    "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
SILENCE = {"event": "media", "media": {"track": "inbound", "timestamp": "20",
                                       "payload": base64.b64encode(b"\xff" * 160).decode()}}


@pytest.mark.parametrize("bad", [
    {"event": "media", "media": "abc"},
    {"event": "media", "media": {"payload": "", "timestamp": "x"}},
    {"event": "media", "media": {"payload": 5}},
    {"event": "media", "media": {"payload": "//8=", "timestamp": ["20"]}},
    {"event": "mark", "mark": "r1:200"},
    {"event": "mark", "mark": {"name": 7}},
    {"event": "dtmf", "dtmf": ["1"]},
    {"event": "dtmf", "dtmf": {"digit": None}},
])
async def test_messages_of_the_wrong_shape_are_skipped(bad: dict[str, Any]) -> None:
    stream = FakeStream(START, bad, SILENCE, {"event": "dtmf", "dtmf": {"digit": "5"}}, {"event": "stop"})
    transport = TwilioTransport(stream)  # type: ignore[arg-type]
    assert await transport.start()
    frame, digit = [item async for item in transport.receive()]
    assert isinstance(frame, AudioFrame) and frame.duration == pytest.approx(0.02)
    assert digit == ClientEvent("dtmf", {"digit": "5"})


@pytest.mark.parametrize("start", [
    {**START, "start": {"callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8k"}}},
    {**START, "start": {"callSid": "CA1", "mediaFormat": "mulaw", "customParameters": ["x"]}},
    {**START, "start": "CA1"},
])
async def test_an_odd_start_is_read_not_fatal(start: dict[str, Any]) -> None:
    transport = TwilioTransport(FakeStream(start))  # type: ignore[arg-type]
    assert await transport.start() and transport.stream_sid == "MZ1"


async def test_start_is_bounded_in_time() -> None:
    stream = FakeStream({"event": "connected"}, "garbage")
    transport = TwilioTransport(stream, start_timeout_s=0.2)  # type: ignore[arg-type]
    assert not await asyncio.wait_for(transport.start(), 5)
    assert stream.closed == (1008, "no start event within 0.2 s")
