"""The shared client plumbing: key redaction, Retry-After, vendor error bodies, SSE framing, streamed decoders,
and the prewarm / keep-alive saving measured on the fakes with an artificial connect delay (printed with -s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from voxline.audio.codecs import encode_audio
from voxline.errors import AudioDecodeError, ConfigError, ProviderError
from voxline.fakes import FakeVendors
from voxline.fakes.audio import encode_words, tone
from voxline.providers.deepgram import DeepgramSTT
from voxline.providers.elevenlabs import ElevenLabsTTS
from voxline.providers.http import (
    MP3Decoder,
    Secret,
    Timeouts,
    WavDecoder,
    audio_decoder,
    mask_key,
    parse_retry_after,
    redact,
    sse_events,
    status_error,
    ws_connect,
)
from voxline.providers.openai import OpenAILLM

KEY = "sk-proj-0123456789abcdefghijklmnop"


def test_secret_never_shows() -> None:
    s = Secret(KEY)
    assert KEY not in repr(s) + str(s) + f"{s}" + repr([s]) and s.reveal() == KEY
    assert mask_key(KEY) == "sk-…mnop" and mask_key("short") == "…***" and mask_key("") == ""
    assert redact(f"bad key {KEY}!", s) == "bad key ***!"
    assert KEY[:8] not in redact(f"Incorrect API key provided: {KEY[:8]}*****{KEY[-4:]}", s)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < (parse_retry_after(later) or 0) <= 31


@pytest.mark.parametrize(("status", "body", "retryable", "words"), [
    (401, b'{"error": {"message": "bad key", "type": "invalid_request_error"}}', False, "rejected the API key"),
    (403, b'{"detail": {"status": "missing_permissions", "message": "no"}}', False, "missing_permissions"),
    (400, b'{"type": "error", "error": {"type": "invalid_request_error", "message": "x"}}', False, "refused"),
    (429, b'{"err_code": "TOO_MANY_REQUESTS", "err_msg": "slow down"}', True, "TOO_MANY_REQUESTS"),
    (503, b"<html>bad gateway</html>", True, "server error"),
    (529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', True, "Overloaded"),
])
def test_status_errors(status: int, body: bytes, retryable: bool, words: str) -> None:
    err = status_error("vendor", status, body, {"retry-after": "4"})
    assert err.retryable is retryable and words in str(err) and err.provider == "vendor"
    assert err.retry_after == (4.0 if status == 429 else None)


async def test_refused_websocket_handshake_keeps_retry_after_whatever_its_case() -> None:
    """Header names are case-insensitive; the fakes' uvicorn lowercases them, a real server may not."""
    assert status_error("vendor", 429, b"", {"Retry-After": "3"}).retry_after == 3.0

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Type: application/json\r\n"
                     b'Content-Length: 28\r\nConnection: close\r\n\r\n{"err_msg": "slow down you"}')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ProviderError) as info:
            await ws_connect("vendor", f"ws://127.0.0.1:{port}/listen", {}, timeouts=Timeouts(connect=2.0))
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.retryable and info.value.retry_after == 3.0 and "slow down" in str(info.value)


async def test_sse_framing() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in [b"event: a\r\ndata: {\"x\"", b": 1}\r\n\r\n: comment\n\nda", b"ta: one\ndata: two\n\n",
                     b"data: [DONE]\n\n"]:
            yield part

    events = [e async for e in sse_events(chunks())]
    assert [(e.event, e.data) for e in events] == [("a", '{"x": 1}'), ("message", "one\ntwo"),
                                                   ("message", "[DONE]")]


def test_streamed_decoders_split_anywhere() -> None:
    frame = tone(0.5, 24000)
    for fmt, data in (("wav", encode_audio(frame, "wav")), ("mp3_24000_64", encode_audio(frame, "mp3"))):
        decoder = audio_decoder(fmt)
        out = []
        for i in range(0, len(data), 333):
            out += decoder.feed(data[i:i + 333])
        out += decoder.flush()
        assert abs(sum(f.duration for f in out) - 0.5) < 0.08, fmt
    pcm = audio_decoder("pcm_16000")
    assert pcm.feed(b"\x01") == [] and pcm.feed(b"\x00\x02\x00")[0].num_frames == 2
    with pytest.raises(AudioDecodeError):
        WavDecoder().feed(b"RIFF\x00\x00\x00\x00JUNKJUNK")
    garbage = MP3Decoder()
    for _ in range(50):
        garbage.feed(bytes(range(256)) * 4)
    with pytest.raises(AudioDecodeError, match="no MP3 audio"):
        garbage.flush()
    with pytest.raises(ConfigError):
        audio_decoder("aac_44100")


# ---- prewarm / keep-alive figures ----------------------------------------------------------------------------
CONNECT_DELAY = 0.15  # stands in for TCP + TLS (+ WebSocket upgrade) to a distant vendor


async def _first_audio(tts: ElevenLabsTTS) -> float:
    async def text() -> AsyncIterator[str]:
        yield "Sure, one moment."

    t0 = time.perf_counter()
    stream = tts.synthesize_stream(text())
    await anext(stream)
    elapsed = time.perf_counter() - t0
    await stream.aclose()
    return elapsed


async def _first_interim(stt: DeepgramSTT) -> float:
    stream = stt.stream()
    results = aiter(stream)
    t0 = time.perf_counter()
    await stream.send(encode_words(["one"]))
    await anext(results)
    elapsed = time.perf_counter() - t0
    await stream.finalize()
    while not (await anext(results)).is_final:  # the session waits for the final; the socket is then reusable
        pass
    await stream.close()
    return elapsed


async def test_prewarm_and_keepalive_saving(fakes: FakeVendors) -> None:
    for script in fakes.scripts().values():
        script.reset()
        script.connect_delay = CONNECT_DELAY
    rows = []

    # ElevenLabs stream-input: cold socket per sentence vs. a socket opened in advance
    cold = [await _first_audio(ElevenLabsTTS(base_url=fakes.url("elevenlabs"), api_key="fake-key"))
            for _ in range(3)]
    warm_tts = ElevenLabsTTS(base_url=fakes.url("elevenlabs"), api_key="fake-key", keep_warm=True)
    await warm_tts.prewarm()
    warm = []
    for _ in range(3):
        warm.append(await _first_audio(warm_tts))
        await asyncio.sleep(CONNECT_DELAY + 0.1)  # the next socket opens while the caller listens
    await warm_tts.aclose()
    rows.append(("ElevenLabs first audio", cold, warm))

    # Deepgram live: new socket per turn vs. prewarmed / pooled socket
    cold = []
    for _ in range(3):
        stt = DeepgramSTT(base_url=fakes.url("deepgram"), api_key="fake-key")
        cold.append(await _first_interim(stt))
        await stt.aclose()
    stt = DeepgramSTT(base_url=fakes.url("deepgram"), api_key="fake-key")
    await stt.prewarm()
    warm = [await _first_interim(stt) for _ in range(3)]
    await stt.aclose()
    rows.append(("Deepgram first interim", cold, warm))

    # OpenAI chat over HTTP: a new client per turn vs. one pooled client (keep-alive)
    from voxline.providers.base import Message

    async def first_token(llm: OpenAILLM) -> float:
        t0, first = time.perf_counter(), 0.0
        async for d in llm.stream([Message("user", "hi")]):  # a whole reply, as a turn reads it
            if d.text and not first:
                first = time.perf_counter() - t0
        return first

    cold = []
    for _ in range(3):
        llm = OpenAILLM(base_url=fakes.url("openai"), api_key="fake-key")
        cold.append(await first_token(llm))
        await llm.aclose()
    llm = OpenAILLM(base_url=fakes.url("openai"), api_key="fake-key")
    await first_token(llm)  # the one connection this client opens
    warm = [await first_token(llm) for _ in range(3)]
    await llm.aclose()
    rows.append(("OpenAI first token", cold, warm))

    print(f"\nartificial connect delay {CONNECT_DELAY * 1000:.0f} ms (median of 3, ms):")
    for name, c, w in rows:
        c_ms, w_ms = sorted(c)[1] * 1000, sorted(w)[1] * 1000
        print(f"  {name:24s} cold {c_ms:6.1f}   warm {w_ms:6.1f}   saved {c_ms - w_ms:6.1f}")
        assert c_ms - w_ms > 0.6 * CONNECT_DELAY * 1000, name
    for script in fakes.scripts().values():
        script.reset()
