"""Fault injection on fake providers: every fault ends in output or a fallback phrase within 1 s, and the event
list says what happened."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from voxline.audio.frame import AudioFrame
from voxline.errors import ProviderError
from voxline.providers.base import (
    LLM,
    STT,
    TTS,
    VAD,
    LLMDelta,
    Message,
    SpeculativeSTTStream,
    ToolCall,
    Transcript,
)
from voxline.resilience import (
    CircuitBreaker,
    EventLog,
    Fallback,
    FallbackPhrases,
    RetryBudget,
    Retrying,
    is_no_speech,
    with_timeout,
)
from voxline.resilience.wrapper import _spoken_chars

RATE = 16000
CPS = 10.0  # the fake TTS speaks 10 characters per second


def tone(seconds: float, rate: int = RATE) -> AudioFrame:
    t = np.arange(round(seconds * rate)) / rate
    return AudioFrame.from_float(0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32), rate)


@dataclass
class FakeTTS:
    """Speaks CPS characters per second, one frame per word; `fault` decides how it misbehaves."""

    name: str = "fake-tts"
    sample_rate: int = RATE
    fault: str | None = None  # hang | error5xx | fatal | drop | slow | garbage | gone
    fault_after_words: int = 2
    delay: float = 0.01
    calls: list[str] = field(default_factory=list)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        self.calls.append(text)
        if self.fault == "hang":
            await asyncio.sleep(3600)
        if self.fault == "slow":
            await asyncio.sleep(2.0)
        if self.fault == "error5xx":
            raise ProviderError("HTTP 503 from fake", provider=self.name, retryable=True)
        if self.fault == "fatal":
            raise ProviderError("HTTP 401 from fake", provider=self.name, retryable=False)
        if self.fault == "gone":
            raise ConnectionRefusedError("connection refused")
        if self.fault == "garbage":
            yield b"\x00\x01garbage"  # type: ignore[misc]
            return
        for i, word in enumerate(text.split(" ")):
            if self.fault == "drop" and i == self.fault_after_words:
                raise ProviderError("stream dropped", provider=self.name, retryable=True)
            await asyncio.sleep(self.delay)
            yield tone((len(word) + 1) / CPS, self.sample_rate)


@dataclass
class FakeLLM:
    name: str = "fake-llm"
    reply: str = "It is ten past four. Anything else?"
    fault: str | None = None
    fault_after: int = 3
    restart_on_continue: bool = False
    seen: list[list[Message]] = field(default_factory=list)

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()
                     ) -> AsyncIterator[LLMDelta]:
        self.seen.append(list(messages))
        if self.fault == "hang":
            await asyncio.sleep(3600)
        if self.fault == "gone":
            raise ConnectionResetError("peer went away")
        words = [w + " " for w in self.reply.split(" ")]
        if messages[-1].role == "user" and "cut off" in messages[-1].content and not self.restart_on_continue:
            partial = messages[-2].content
            rest = self.reply[len(partial):] if self.reply.startswith(partial) else self.reply
            words = [w + " " for w in rest.split(" ")]
        for i, w in enumerate(words):
            if self.fault == "drop" and i == self.fault_after:
                raise ProviderError("socket closed mid-stream", provider=self.name, retryable=True)
            await asyncio.sleep(0.005)
            yield LLMDelta(text=w)
        yield LLMDelta(input_tokens=10, output_tokens=len(words))


class FakeSTTStream:
    def __init__(self, stt: FakeSTT) -> None:
        self.stt = stt
        self.audio_s = 0.0
        self.q: asyncio.Queue[Transcript | Exception | None] = asyncio.Queue()

    async def send(self, frame: AudioFrame) -> None:
        if self.stt.fault == "gone":
            raise ConnectionResetError("socket closed")
        self.audio_s += frame.duration
        if self.stt.fault == "drop" and self.audio_s >= 0.5:
            self.q.put_nowait(ProviderError("websocket dropped", provider=self.stt.name, retryable=True))

    async def finalize(self) -> None:
        if self.stt.fault == "hang":
            return
        self.q.put_nowait(Transcript(f"heard {self.audio_s:.1f} s", is_final=True, duration=self.audio_s))

    async def close(self) -> None:
        self.q.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return self._it()

    async def _it(self) -> AsyncIterator[Transcript]:
        while (item := await self.q.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item


@dataclass
class FakeSTT:
    name: str = "fake-stt"
    fault: str | None = None
    streams: int = 0

    async def transcribe(self, audio: AudioFrame, language: str | None = None) -> Transcript:
        if self.fault == "hang":
            await asyncio.sleep(3600)
        if self.fault == "gone":
            raise ConnectionRefusedError("refused")
        return Transcript("hello", is_final=True, duration=audio.duration)

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> FakeSTTStream:
        self.streams += 1
        return FakeSTTStream(self)


class FakeVADStream:
    def __init__(self, vad: FakeVAD) -> None:
        self.vad = vad

    async def probability(self, frame: AudioFrame) -> float:
        if self.vad.fault == "hang":
            await asyncio.sleep(3600)
        if self.vad.fault == "garbage":
            return 7.5
        return np.float32(0.9) if self.vad.fault is None else 0.1  # type: ignore[return-value]

    def reset(self) -> None:
        pass


@dataclass
class FakeVAD:
    name: str = "fake-vad"
    frame_duration: float = 0.032
    fault: str | None = None

    def stream(self) -> FakeVADStream:
        return FakeVADStream(self)


async def collect(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


# ---- protocols and composition --------------------------------------------------------------------------------------


def test_wrappers_satisfy_the_protocol_they_wrap() -> None:
    events = EventLog()
    for provider, proto in ((FakeTTS(), TTS), (FakeLLM(), LLM), (FakeSTT(), STT), (FakeVAD(), VAD)):
        for wrapped in (with_timeout(provider, first_item=1), Retrying(provider), CircuitBreaker(provider),
                        Fallback(provider, provider, observer=events)):
            assert isinstance(wrapped, proto), (type(wrapped), proto)
    composed = Fallback(CircuitBreaker(Retrying(with_timeout(FakeTTS(), first_item=1))), FakeTTS(name="b"))
    assert isinstance(composed, TTS) and composed.sample_rate == RATE
    with pytest.raises(TypeError, match="mix provider kinds"):
        Fallback(FakeTTS(), FakeLLM())
    with pytest.raises(TypeError, match="not an STT"):
        Retrying(object())


# ---- TTS faults: output or a phrase within 1 s of the fault ---------------------------------------------------------


def tts_stack(primary: FakeTTS, events: EventLog, secondary: FakeTTS | None = None) -> Any:
    guarded = CircuitBreaker(Retrying(with_timeout(primary, first_item=0.3, total=5, observer=events),
                                      attempts=2, base_delay=0.02, max_delay=0.1, rng=random.Random(1),
                                      observer=events), failures=3, cooldown=60, observer=events)
    return Fallback(guarded, secondary or FakeTTS(name="backup"), observer=events)


@pytest.mark.parametrize("fault", ["hang", "error5xx", "fatal", "slow", "garbage", "gone"])
async def test_tts_fault_before_audio_falls_back_fast(fault: str) -> None:
    events = EventLog()
    primary = FakeTTS(fault=fault)
    tts = tts_stack(primary, events)
    start = time.monotonic()
    frames = [f async for f in tts.synthesize("Hello there, how are you today?")]
    took = time.monotonic() - start
    assert frames and sum(f.duration for f in frames) == pytest.approx(len("Hello there, how are you today?") / CPS
                                                                      + 1 / CPS, abs=0.01)
    assert took < 1.0, f"{fault}: output {took:.2f} s after the fault"
    kinds = events.kinds()
    assert kinds[-1] == "fallback" and events[-1]["from"] == "fake-tts" and events[-1]["provider"] == "backup"
    if fault in ("hang", "slow"):
        assert "timeout" in kinds
    if fault in ("hang", "slow", "error5xx", "gone", "garbage"):
        assert "retry" in kinds  # retryable: tried once more before falling back
    else:
        assert "retry" not in kinds  # a 401 is not worth a retry


async def test_tts_drop_mid_stream_resynthesizes_the_rest_of_the_sentence() -> None:
    events = EventLog()
    text = "one two three four five six"
    primary = FakeTTS(fault="drop", fault_after_words=3)
    backup = FakeTTS(name="backup")
    tts = Fallback(primary, backup, observer=events)
    frames = await collect(tts.synthesize(text))
    # three words from the primary, the rest from the backup: nothing lost, at most one word said twice
    assert backup.calls[0] in ("four five six", "three four five six")
    assert events.kinds() == ["fallback"] and events[0]["resumed_after_items"] == 3
    assert sum(f.duration for f in frames) >= (len(text) + 1) / CPS - 0.01

    # once the fallback has learnt the primary's speaking rate from a whole sentence, the cut is tighter
    primary.fault = None
    await collect(tts.synthesize("a sentence of about forty characters long"))
    primary.fault, backup.calls = "drop", []
    frames = await collect(tts.synthesize("seven eight nine ten eleven twelve thirteen"))
    assert backup.calls[0] in ("ten eleven twelve thirteen", "nine ten eleven twelve thirteen")


def test_spoken_chars_backs_off_to_word_start() -> None:
    text = "alpha beta gamma"
    assert _spoken_chars(text, 0.0, 10) == 0
    assert _spoken_chars(text, 0.9, 10) == 6  # mid "beta" -> say "beta" again
    assert _spoken_chars(text, 10.0, 10) == len(text)


async def test_tts_resample_when_backup_has_another_rate() -> None:
    tts = Fallback(FakeTTS(fault="fatal"), FakeTTS(name="b", sample_rate=22050))
    frames = await collect(tts.synthesize("hi there"))
    assert {f.sample_rate for f in frames} == {RATE}


async def test_everything_fails_plays_the_fallback_phrase_within_1s() -> None:
    events = EventLog()
    voice = FakeTTS(name="phrase-voice")
    phrases = FallbackPhrases(voice, observer=events)
    await phrases.prepare()
    assert phrases.ready and phrases.frames("error")[0].duration > 0
    tts = tts_stack(FakeTTS(fault="hang"), events, FakeTTS(name="backup", fault="hang"))
    start = time.monotonic()
    # the backup hangs too: bound it as well, then the phrase plays
    tts = Fallback(tts.providers[0], with_timeout(tts.providers[1], first_item=0.3), observer=events)
    frames = await collect(phrases.guard(tts.synthesize("What is the weather?")))
    assert time.monotonic() - start < 1.0 + 0.3
    assert sum(f.duration for f in frames) == pytest.approx(sum(f.duration for f in phrases.frames("error")))
    assert "phrase" in events.kinds() and events[-1]["phrase"] == "error"


async def test_phrases_prepare_reports_a_broken_tts() -> None:
    with pytest.raises(ProviderError, match="fallback phrase 'not_understood'"):
        await FallbackPhrases(FakeTTS(fault="fatal")).prepare()
    with pytest.raises(ProviderError, match="not prepared"):
        FallbackPhrases(FakeTTS()).frames("error")
    with pytest.raises(KeyError):
        FallbackPhrases(FakeTTS()).frames("nope")


async def test_consumer_cancellation_is_not_a_failure() -> None:
    events = EventLog()
    breaker = CircuitBreaker(FakeTTS(delay=0.2), failures=1, observer=events)
    tts = Fallback(breaker, FakeTTS(name="b"), observer=events)

    async def consume() -> None:
        async for _ in tts.synthesize("a b c d e f g"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == [] and breaker.state == "closed"


# ---- retries --------------------------------------------------------------------------------------------------------


@dataclass
class Flaky:
    name: str = "flaky"
    sample_rate: int = RATE
    failures: int = 2
    retry_after: float | None = None
    calls: int = 0

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ProviderError("429 slow down", provider=self.name, retryable=True, retry_after=self.retry_after)
        yield tone(0.1)


async def test_retry_full_jitter_and_retry_after() -> None:
    events = EventLog()
    flaky = Flaky(failures=2)
    frames = await collect(Retrying(flaky, attempts=3, base_delay=0.05, max_delay=1, observer=events,
                                    rng=random.Random(0)).synthesize("x"))
    assert len(frames) == 1 and flaky.calls == 3
    delays = [e["delay_s"] for e in events]
    assert events.kinds() == ["retry", "retry"] and 0 <= delays[0] <= 0.05 and 0 <= delays[1] <= 0.1

    events.clear()
    flaky = Flaky(failures=1, retry_after=0.2)
    start = time.monotonic()
    await collect(Retrying(flaky, attempts=2, observer=events).synthesize("x"))
    assert time.monotonic() - start >= 0.2 and events[0]["delay_s"] == 0.2

    flaky = Flaky(failures=1, retry_after=30)  # longer than max_delay: not waited for
    with pytest.raises(ProviderError, match="429"):
        await collect(Retrying(flaky, attempts=5, max_delay=1).synthesize("x"))
    assert flaky.calls == 1

    flaky = Flaky(failures=5)
    with pytest.raises(ProviderError):
        await collect(Retrying(flaky, attempts=3, base_delay=0).synthesize("x"))
    assert flaky.calls == 3


# ---- circuit breaker ------------------------------------------------------------------------------------------------


async def test_breaker_opens_skips_and_recovers() -> None:
    now = [0.0]
    events = EventLog()
    primary = FakeTTS(fault="error5xx")
    breaker = CircuitBreaker(primary, failures=2, cooldown=10, observer=events, clock=lambda: now[0])
    tts = Fallback(breaker, FakeTTS(name="b"), observer=events)
    for _ in range(2):
        await collect(tts.synthesize("hi"))
    assert breaker.state == "open" and "breaker_open" in events.kinds()
    assert breaker.health()["fake-tts"]["state"] == "open"
    calls = len(primary.calls)
    await collect(tts.synthesize("hi"))
    assert len(primary.calls) == calls  # skipped: no call made while open
    now[0] = 11
    assert breaker.state == "half-open"
    primary.fault = None
    await collect(tts.synthesize("hi"))
    assert breaker.state == "closed" and events.kinds()[-1] == "breaker_closed"
    health = tts.health()
    assert health["fake-tts"]["state"] == "ok" and health["b"]["state"] == "ok"
    assert health["fake-tts"]["failures"] >= 2


# ---- LLM ------------------------------------------------------------------------------------------------------------


async def test_llm_drop_mid_stream_continues_on_next_provider() -> None:
    events = EventLog()
    backup = FakeLLM(name="backup")
    llm = Fallback(FakeLLM(fault="drop", fault_after=3), backup, observer=events)
    start = time.monotonic()
    text = "".join([d.text async for d in llm.stream([Message("user", "time?")])])
    assert time.monotonic() - start < 1.0
    assert text.split() == "It is ten past four. Anything else?".split()
    cont = backup.seen[0]
    assert cont[-2].role == "assistant" and cont[-2].content == "It is ten "
    assert events.kinds() == ["fallback"]


async def test_llm_continuation_that_restarts_is_deduplicated() -> None:
    backup = FakeLLM(name="backup", restart_on_continue=True)
    llm = Fallback(FakeLLM(fault="drop", fault_after=3), backup)
    text = "".join([d.text async for d in llm.stream([Message("user", "time?")])])
    assert text.split() == "It is ten past four. Anything else?".split()


@dataclass
class BookingLLM:
    """Says a word, asks for a booking, then its stream drops (before its end was seen)."""

    name: str = "booking"
    calls: int = 0

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()
                     ) -> AsyncIterator[LLMDelta]:
        self.calls += 1
        yield LLMDelta(text="Booking. ")
        yield LLMDelta(tool_call=ToolCall(f"call_{self.calls}", "book", {"seats": 2}))
        raise ProviderError("socket closed mid-stream", provider=self.name, retryable=True)


@pytest.mark.parametrize("wrap", ["retrying", "fallback"])
async def test_llm_drop_after_a_tool_call_is_not_resumed(wrap: str) -> None:
    """Resuming would yield the call again (the tool would run twice): the reply fails, non-retryable, instead."""
    primary, backup = BookingLLM(), BookingLLM(name="backup")
    llm = Retrying(primary, attempts=3, base_delay=0) if wrap == "retrying" else Fallback(primary, backup)
    got: list[LLMDelta] = []
    with pytest.raises(ProviderError, match="tool call") as info:
        async for d in llm.stream([Message("user", "book two seats")]):
            got.append(d)
    assert [d.tool_call.id for d in got if d.tool_call] == ["call_1"]
    assert not info.value.retryable and primary.calls == 1 and backup.calls == 0


@pytest.mark.parametrize("fault", ["hang", "gone"])
async def test_llm_faults_before_first_token(fault: str) -> None:
    events = EventLog()
    llm = Fallback(with_timeout(FakeLLM(fault=fault), first_item=0.3, observer=events), FakeLLM(name="b"),
                   observer=events)
    start = time.monotonic()
    deltas = await collect(llm.stream([Message("user", "hi")]))
    assert time.monotonic() - start < 1.0
    assert "".join(d.text for d in deltas).strip() == FakeLLM().reply
    assert events.kinds()[-1] == "fallback"


# ---- STT ------------------------------------------------------------------------------------------------------------


async def run_turn(stt: Any, seconds: float = 1.0) -> list[Transcript]:
    stream = stt.stream(RATE)
    out: list[Transcript] = []

    async def read() -> None:
        async for t in stream:
            out.append(t)
            if t.is_final:
                return

    reader = asyncio.create_task(read())
    for frame in tone(seconds).chunks(0.1):
        await stream.send(frame)
        await asyncio.sleep(0)
    await stream.finalize()
    await asyncio.wait_for(reader, 1.5)
    await stream.close()
    return out


@pytest.mark.parametrize("fault", ["drop", "gone", "hang"])
async def test_stt_stream_failure_replays_the_turn_to_the_next_provider(fault: str) -> None:
    events = EventLog()
    backup = FakeSTT(name="backup")
    stt = Fallback(with_timeout(FakeSTT(fault=fault), first_item=0.4, observer=events), backup, observer=events)
    start = time.monotonic()
    out = await run_turn(stt)
    assert time.monotonic() - start < 1.0 + 0.4
    assert out[-1].is_final and out[-1].text == "heard 1.0 s"  # the backup heard the whole turn
    assert "fallback" in events.kinds() and "replayed" in events.kinds()
    assert backup.streams == 1


class SpeculatingSTTStream(FakeSTTStream):
    """A stream that hears of the speaker's pauses (`SpeculativeSTTStream`); with fault "hints", the hints fail."""

    async def pause(self) -> None:
        self.stt.hints.append("pause")
        if self.stt.fault == "hints":
            raise RuntimeError("no speculation today")

    async def resume(self) -> None:
        self.stt.hints.append("resume")
        if self.stt.fault == "hints":
            raise RuntimeError("no speculation today")


@dataclass
class SpeculatingSTT(FakeSTT):
    hints: list[str] = field(default_factory=list)

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> FakeSTTStream:
        return SpeculatingSTTStream(self)


@pytest.mark.parametrize("fault", [None, "hints"])
async def test_stt_pause_and_resume_reach_the_provider_and_their_failures_do_not_end_the_turn(
        fault: str | None) -> None:
    inner = SpeculatingSTT(fault=fault)
    stream = Fallback(with_timeout(inner, first_item=1.0), FakeSTT(name="backup")).stream(RATE)
    assert isinstance(stream, SpeculativeSTTStream)
    await stream.send(tone(0.3))
    await stream.pause()
    await stream.send(tone(0.3))
    await stream.resume()
    await stream.finalize()
    final = await anext(aiter(stream))
    assert inner.hints == ["pause", "resume"] and final.text == "heard 0.6 s"  # no fallback
    await stream.close()


async def test_stt_transcribe_and_vad() -> None:
    events = EventLog()
    stt = Fallback(with_timeout(FakeSTT(fault="hang"), total=0.2), FakeSTT(name="b"), observer=events)
    assert (await stt.transcribe(tone(0.5))).text == "hello"
    vad = Fallback(with_timeout(FakeVAD(fault="hang"), total=0.1), FakeVAD(name="b"), observer=events)
    s = vad.stream()
    assert await s.probability(tone(0.032)) == pytest.approx(0.9)
    assert vad.frame_duration == 0.032
    bad = Retrying(FakeVAD(fault="garbage"), attempts=1)
    with pytest.raises(ProviderError, match="outside"):
        await bad.stream().probability(tone(0.032))


# ---- recovery rules -------------------------------------------------------------------------------------------------


def test_no_speech_and_retry_budget() -> None:
    assert is_no_speech("") and is_no_speech("  .. ") and is_no_speech("[BLANK_AUDIO]") and is_no_speech("(music) a")
    assert is_no_speech(None)
    assert not is_no_speech("hi") and not is_no_speech("What time is it?")
    assert is_no_speech(Transcript("uh", is_final=True, duration=0.1), min_duration_s=0.3)
    budget = RetryBudget(2)
    assert budget.take() and budget.take() and not budget.take()
    budget.ok()
    assert budget.remaining == 1 and budget.take()
