"""DeepgramSTT against the fake Deepgram: live turns, the one-final-per-turn mapping, KeepAlive, reconnect with
replay (no word lost or doubled), pooled connections, batch transcription, and the faults."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import pytest
import websockets

from voxline.audio.frame import AudioFrame
from voxline.errors import ProviderError
from voxline.fakes import FakeVendors, Fault
from voxline.fakes.audio import encode_words
from voxline.providers.base import STT, Transcript
from voxline.providers.deepgram import DeepgramSTT
from voxline.providers.http import ws_url

KEY = "fake-key"
WORDS: list[str | None] = ["one", "two", "three", "four", "five", None, "six", "seven", "eight", "nine"]


@pytest.fixture(autouse=True)
def fresh(fakes: FakeVendors) -> None:
    fakes.deepgram.reset()
    fakes.deepgram.transcript = None
    fakes.deepgram.idle_timeout = 10.0


def make(fakes: FakeVendors, **kw: object) -> DeepgramSTT:
    return DeepgramSTT(base_url=fakes.url("deepgram"), api_key=str(kw.pop("api_key", KEY)), **kw)  # type: ignore[arg-type]


async def run_turn(stt: DeepgramSTT, audio: AudioFrame, *, chunk_s: float = 0.1, pace: float = 0.0,
                   rate: int = 16000) -> list[Transcript]:
    stream = stt.stream(rate)
    got: list[Transcript] = []

    async def read() -> None:
        async for t in stream:
            got.append(t)
            if t.is_final:
                return

    reader = asyncio.create_task(read())
    try:
        for chunk in audio.chunks(chunk_s):
            await stream.send(chunk)
            if pace:
                await asyncio.sleep(pace)
        await stream.finalize()
        await asyncio.wait_for(reader, 5)
    finally:
        await stream.close()
        reader.cancel()
    return got


async def test_live_turn_gives_interims_then_one_final(fakes: FakeVendors) -> None:
    stt = make(fakes)
    assert isinstance(stt, STT)
    got = await run_turn(stt, encode_words(WORDS))
    finals = [t for t in got if t.is_final]
    assert len(finals) == 1 and got[-1] is finals[0]
    assert finals[0].text == "one two three four five six seven eight nine"
    assert any(t.speech_final and not t.is_final for t in got)  # the pause after "five": endpointing hint
    interims = [t.text for t in got if not t.is_final]
    assert interims[0] == "one" and "one two three four" in interims
    words = [w for s in finals[0].segments for w in s.words]
    assert [w.text for w in words] == finals[0].text.split()
    assert all(b.start >= a.end for a, b in itertools.pairwise(words))
    assert 3.9 < finals[0].duration < 4.1
    query = fakes.deepgram.requests[-1]["query"]
    assert query["encoding"] == "linear16" and query["sample_rate"] == "16000" and query["model"] == "nova-3"
    assert query["interim_results"] == "true" and query["utterance_end_ms"] == "1000"
    assert "Finalize" in fakes.deepgram.requests[-1]["control"]
    await stt.aclose()


async def test_other_input_rates_are_resampled(fakes: FakeVendors) -> None:
    stt = make(fakes)
    got = await run_turn(stt, encode_words(["one", "two", "three"], 48000), rate=16000)
    assert got[-1].text == "one two three"
    await stt.aclose()


async def test_keepalive_holds_an_idle_connection_open(fakes: FakeVendors) -> None:
    fakes.deepgram.idle_timeout = 0.5  # the fake closes a socket silent that long (Deepgram: 10 s)
    stt = make(fakes, keepalive_s=0.2)
    stream = stt.stream()
    await stream.send(encode_words(["one"]))
    await asyncio.sleep(1.2)  # the caller says nothing for a while
    await stream.send(encode_words(["two"]))
    await stream.finalize()
    final = [t async for t in _until_final(stream)][-1]
    assert final.text == "one two"
    assert fakes.deepgram.requests[-1]["control"].count("KeepAlive") >= 3
    assert fakes.deepgram.connections == 1
    await stream.close()
    await stt.aclose()


async def _until_final(stream: object) -> AsyncIterator[Transcript]:
    async for t in stream:  # type: ignore[attr-defined]
        yield t
        if t.is_final:
            return


@pytest.mark.parametrize("fault", ["drop", "error_mid_stream"])
async def test_reconnects_and_replays_without_losing_or_doubling_words(fakes: FakeVendors, fault: str) -> None:
    # the connection fails 2.0 s into the turn; "four" and "five" were sent but not yet in a final segment
    fakes.deepgram.fail(Fault(fault, after=2.0))  # type: ignore[arg-type]
    stt = make(fakes)
    got = await run_turn(stt, encode_words(WORDS), pace=0.01)
    assert got[-1].is_final and got[-1].text == "one two three four five six seven eight nine"
    assert fakes.deepgram.connections == 2
    await stt.aclose()


async def test_gives_up_after_the_reconnect_budget(fakes: FakeVendors) -> None:
    fakes.deepgram.fail(Fault("drop", after=0.4), Fault("drop", after=0.4), Fault("drop", after=0.4))
    stt = make(fakes, reconnect_attempts=2)
    with pytest.raises(ProviderError, match="reconnect"):
        await run_turn(stt, encode_words(WORDS), pace=0.01)
    await stt.aclose()


async def test_bad_key(fakes: FakeVendors) -> None:
    stt = make(fakes, api_key="dg-wrong-key-123456789")
    with pytest.raises(ProviderError) as info:
        await run_turn(stt, encode_words(["one"]))
    assert not info.value.retryable and "401" in str(info.value) and "INVALID_AUTH" in str(info.value)
    assert "dg-wrong-key-123456789" not in str(info.value) + repr(stt)


async def test_rate_limited_handshake(fakes: FakeVendors) -> None:
    fakes.deepgram.fail("rate_limit", retry_after=3)
    with pytest.raises(ProviderError) as info:
        await run_turn(make(fakes), encode_words(["one"]))
    assert info.value.retryable and info.value.retry_after == 3


async def test_malformed_message(fakes: FakeVendors) -> None:
    fakes.deepgram.fail(Fault("malformed", after=0.8))
    with pytest.raises(ProviderError, match="malformed"):
        await run_turn(make(fakes), encode_words(WORDS))


async def test_slow_connect_times_out(fakes: FakeVendors) -> None:
    fakes.deepgram.connect_delay = 1.0
    with pytest.raises(ProviderError, match="timed out"):
        await run_turn(make(fakes, connect_timeout=0.2), encode_words(["one"]))


async def test_connection_reused_for_the_next_turn_and_prewarm(fakes: FakeVendors) -> None:
    stt = make(fakes)
    await stt.prewarm()
    assert fakes.deepgram.connections == 1
    first = await run_turn(stt, encode_words(["one", "two"]))
    second = await run_turn(stt, encode_words(["three", None, "four"]))
    assert first[-1].text == "one two" and second[-1].text == "three four"
    assert fakes.deepgram.connections == 1
    await stt.aclose()


async def test_fake_answers_finalize_only_with_something_to_finalize(fakes: FakeVendors) -> None:
    """Deepgram: the from_finalize result "is not guaranteed if there is no significant amount of audio data"."""
    url = ws_url(fakes.url("deepgram")) + "/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true"
    async with websockets.connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        await ws.send(encode_words(["one", "two", None]).pcm())  # whole blocks: the pause ends the segment
        while not json.loads(await ws.recv()).get("speech_final"):
            pass
        await ws.send(json.dumps({"type": "Finalize"}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        await ws.send(encode_words(["three"]).pcm()[:9600])  # 0.3 s buffered: something to finalize
        await ws.send(json.dumps({"type": "Finalize"}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert answer["from_finalize"] and answer["is_final"]


@pytest.mark.parametrize(("words", "within"), [(["one", "two", None], 0.15),  # all the audio is in the final
                                               (["one", "two", None, None], 0.8)])  # silence after it: a grace
async def test_final_without_from_finalize_needs_no_finalize_timeout(fakes: FakeVendors, words: list[str | None],
                                                                     within: float) -> None:
    """Nothing left to finalize: Deepgram may never answer the Finalize, and the turn must not wait 2 s for it."""
    stt = make(fakes, finalize_timeout=2.0)
    stream = stt.stream()
    await stream.send(encode_words(words))
    results = aiter(stream)
    while not (await anext(results)).speech_final:  # Deepgram's own final segment, ended by the pause
        pass
    await asyncio.sleep(0.1)  # whatever Deepgram had to say about the rest has arrived
    loop = asyncio.get_running_loop()
    start = loop.time()
    await stream.finalize()
    while not (final := await asyncio.wait_for(anext(results), 3)).is_final:
        pass
    assert final.text == "one two" and loop.time() - start < within
    await stream.close()
    await stt.aclose()


async def test_finalize_without_audio_and_send_after_close(fakes: FakeVendors) -> None:
    stt = make(fakes)
    stream = stt.stream()
    await stream.finalize()
    assert (await anext(aiter(stream))).text == ""
    await stream.close()
    with pytest.raises(ProviderError, match="closed"):
        await stream.send(encode_words(["one"]))
    assert fakes.deepgram.connections == 0


async def test_batch_transcribe(fakes: FakeVendors) -> None:
    stt = make(fakes)
    result = await stt.transcribe(encode_words(["one", "two", None, "three"]), language="en")
    assert result.is_final and result.text == "one two three" and result.language == "en"
    assert [w.text for w in result.segments[0].words] == ["one", "two", "three"]
    assert fakes.deepgram.requests[-1]["body"]["content_type"] == "audio/wav"
    fakes.deepgram.transcript = "hello there world"
    assert (await stt.transcribe(encode_words(["one", "two", "three"]))).text == "hello there world"
    fakes.deepgram.fail("server_error", status=503)
    with pytest.raises(ProviderError) as info:
        await stt.transcribe(encode_words(["one"]))
    assert info.value.retryable and "503" in str(info.value)
    fakes.deepgram.fail("malformed")
    with pytest.raises(ProviderError, match="malformed"):
        await stt.transcribe(encode_words(["one"]))
    await stt.aclose()
