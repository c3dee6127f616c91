"""Unit tests of the session's pure parts: sentence splitting, words heard, config, backchannel and echo rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from voxline.agent.config import AgentConfig
from voxline.agent.context import Conversation, ReplyRecord, heard_per_piece, join_heard
from voxline.agent.draft import Draft
from voxline.agent.playout import Playout
from voxline.agent.sentences import SentenceSplitter, split_sentences
from voxline.agent.session import is_backchannel, is_echo
from voxline.agent.timeline import TurnTimeline
from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError, ProviderError
from voxline.providers.base import LLM, TTS, LLMDelta, Message


def stream(tokens: list[str], clause_min_words: int = 8) -> list[str]:
    s = SentenceSplitter(clause_min_words=clause_min_words)
    out = []
    for t in tokens:
        out += s.push(t)
    return out + s.flush()


def test_sentences_cut_as_tokens_arrive() -> None:
    s = SentenceSplitter()
    assert s.push("It is ten ") == []
    assert s.push("past four. ") == ["It is ten past four."]
    assert s.push("Anything else?") == []  # end of text: wait, it may go on ("?!")
    assert s.flush() == ["Anything else?"]


def test_abbreviations_initials_and_decimals_do_not_end_sentences() -> None:
    text = "Dr. Smith paid 3.5 dollars to J. R. Tolkien at 5 p.m. today. Then he left!"
    assert split_sentences(text) == ["Dr. Smith paid 3.5 dollars to J. R. Tolkien at 5 p.m. today.",
                                     "Then he left!"]
    assert stream(["It costs 3.", "14 dollars. ", "Ok."]) == ["It costs 3.14 dollars.", "Ok."]


def test_long_first_sentence_is_cut_at_a_clause() -> None:
    tokens = ("Well, when you think about the question you asked me earlier today, the answer is "
              "actually quite simple, and here it is.").split(" ")
    pieces = stream([t + " " for t in tokens], clause_min_words=8)
    assert pieces[0].endswith("today,")
    assert len(pieces[0].split()) >= 8
    assert " ".join(pieces).split() == " ".join(tokens).split()  # nothing lost, nothing added


def test_a_long_first_sentence_without_commas_is_cut_before_a_conjunction() -> None:
    text = "He should make inquiries as to symptoms and time at which the attack began and why."
    pieces = stream([t + " " for t in text.split(" ")], clause_min_words=4)
    assert pieces == ["He should make inquiries as to symptoms", "and time at which the attack began and why."]
    short = "Rock and roll is here to stay."
    assert stream([t + " " for t in short.split(" ")]) == [short]  # too few words before "and": no cut
    assert split_sentences(text) == [text]  # whole texts (Piper) are cut at sentence ends only


def test_words_heard_follow_the_playout_position() -> None:
    spans = [("Hello there.", 0.0, 1.0), ("The weather is sunny today.", 1.0, 3.0)]

    def words_heard(played_until: float) -> str:
        return join_heard(heard_per_piece(spans, played_until))

    assert words_heard(0.0) == ""
    assert words_heard(1.0) == "Hello there."
    assert words_heard(5.0) == "Hello there. The weather is sunny today."
    partial = words_heard(1.9)
    assert partial.startswith("Hello there. The weather")
    assert "today" not in partial


def test_a_reply_record_gives_each_tool_round_the_heard_words_of_its_own_pieces() -> None:
    from voxline.providers.base import Message

    pieces = ["Let me check.", "One moment.", "And the forecast too.", "It is sunny.", "Anything else?"]
    spans = [(text, float(i), float(i + 1)) for i, text in enumerate(pieces)]
    assert heard_per_piece(spans, 2.0) == ["Let me check.", "One moment."]
    assert heard_per_piece(spans, 2.01) == ["Let me check.", "One moment.", ""]

    def reply(played_s: float) -> tuple[Conversation, ReplyRecord]:
        c = Conversation("be brief")
        c.add_user("weather and forecast?")
        record = ReplyRecord(c)
        record.pieces = 1  # "Let me check." queued
        record.tool_round(Message("assistant", "Let me check.", tool_calls=[{"id": "a"}]))
        c.messages.append(Message("tool", "sunny", tool_call_id="a"))
        # the filler played while the first call ran belongs to the round after it
        record.pieces = 3
        record.tool_round(Message("assistant", "And the forecast too.", tool_calls=[{"id": "b"}]))
        c.messages.append(Message("tool", "dry", tool_call_id="b"))
        record.close(heard_per_piece(spans, played_s))
        return c, record

    c, record = reply(5.0)
    c.messages.insert(0, Message("assistant", "It is sunny. Anything else?"))  # an earlier, equal message stays
    assert [m.content for m in c.messages[1:]] == [
        "weather and forecast?", "Let me check.", "sunny", "One moment. And the forecast too.", "dry",
        "It is sunny. Anything else?"]
    record.rewrite(heard_per_piece(spans, 1.5))  # the caller stopped playback in the filler
    assert [m.content for m in c.messages] == ["It is sunny. Anything else?", "weather and forecast?", "Let me check.",
                                               "sunny", "One", "dry"]

    c, _ = reply(0.5)  # cut inside the first preamble: nothing after it was heard
    assert [m.content for m in c.messages] == ["weather and forecast?", "Let me", "sunny", "", "dry"]

    c, record = reply(5.0)
    c.add_user("thanks")
    record.rewrite(heard_per_piece(spans, 1.5))  # too late: the conversation went on
    assert c.messages[-2].content == "It is sunny. Anything else?"


def test_conversation_trims_old_turns_but_keeps_system_prompt() -> None:
    c = Conversation("be brief", max_history_turns=2)
    for i in range(5):
        c.add_user(f"q{i}")
        c.add_assistant(f"a{i}")
    msgs = c.for_llm()
    assert msgs[0].role == "system" and msgs[0].content == "be brief"
    assert [m.content for m in msgs[1:]] == ["q3", "a3", "q4", "a4"]


def test_backchannels_and_echo() -> None:
    assert is_backchannel("Mm-hmm.") and is_backchannel("yeah okay") and is_backchannel("Uh-huh")
    assert not is_backchannel("wait, stop") and not is_backchannel("")
    assert is_echo("the weather is sunny", "The weather is sunny today, with a light breeze.")
    assert not is_echo("what about tomorrow", "The weather is sunny today.")
    assert not is_echo("and on mondays", "It opens at nine and closes at five, except on Mondays.")
    assert not is_echo("stop", "Stop the music, said the conductor.")  # one word is never judged an echo


def test_config_defaults_overrides_and_errors(tmp_path: Path) -> None:
    cfg = AgentConfig.load()
    assert cfg.agent.max_tokens > 0 and "short" in cfg.agent.system_prompt
    f = tmp_path / "a.toml"
    f.write_text('[agent]\nmax_tokens = 20\n[turn]\ndetector = "energy"\n')
    cfg = AgentConfig.load(f)
    assert cfg.agent.max_tokens == 20 and cfg.turn.detector == "energy" and cfg.agent.system_prompt
    f.write_text('[turn]\ndetector = "psychic"\n')
    with pytest.raises(ConfigError, match="detector"):
        AgentConfig.load(f)
    f.write_text("not toml [")
    with pytest.raises(ConfigError, match="TOML"):
        AgentConfig.load(f)
    with pytest.raises(ConfigError, match="not found"):
        AgentConfig.load(tmp_path / "missing.toml")


@pytest.mark.parametrize(("line", "message"), [
    ('use_transcript = "false"', "use_transcript must be a bool"),  # a string, true as a truth value
    ("threshold = true", "threshold must be a float"),
    ('silence_s = "1.0"', "silence_s must be a float"),
    ("silense_s = 1.0", "unknown key in \\[turn\\]: silense_s"),
])
def test_turn_options_of_the_wrong_type_or_name_are_config_errors(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "a.toml"
    f.write_text(f"[turn]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        AgentConfig.load(f)
    f.write_text("[turn]\nsilence_s = 1\nuse_transcript = false\n")  # an integer is a fine float
    cfg = AgentConfig.load(f)
    assert cfg.turn.silence_s == 1.0 and isinstance(cfg.turn.silence_s, float) and cfg.turn.use_transcript is False


def test_a_misspelt_provider_option_is_a_config_error() -> None:
    from voxline.agent.stack import build_stack

    cfg = AgentConfig.load(providers={"stt": "scripted", "llm": "scripted", "tts": "scripted",
                                      "options": {"scripted": {"langauge": "en"}}},
                           turn={"detector": "energy"})
    with pytest.raises(ConfigError, match=r"providers\.options\.scripted.*'langauge'"):
        build_stack(cfg)


def test_timeline_relative_and_v2v() -> None:
    t = TurnTimeline(1)
    t.mark("speech_end", 10.0)
    t.mark("first_audio_sent", 10.5)
    t.mark("first_audio_sent", 11.0)  # first mark wins
    assert t.voice_to_voice == pytest.approx(0.5)
    assert t.as_event()["stages_ms"] == {"speech_end": 0.0, "first_audio_sent": 500.0}
    with pytest.raises(ValueError):
        t.mark("nonsense")


def test_a_detector_the_config_did_not_load_is_loaded_once_per_stack(model_store: object) -> None:
    from voxline.agent.stack import scripted_stack
    from voxline.agent.turns import TurnOptions

    stack = scripted_stack(vad=False)  # e.g. an energy-detector config; then a Realtime client asks for semantic_vad
    assert stack.vad is None and stack.turn_model is None
    stack.turn_detector(TurnOptions(detector="smart"))
    vad, model = stack.vad, stack.turn_model
    assert vad is not None and model is not None
    stack.turn_detector(TurnOptions(detector="smart"))
    stack.turn_detector(TurnOptions(detector="silero"))
    assert stack.vad is vad and stack.turn_model is model  # shared by every later session, not loaded again


class _SlowLLM:
    """Streams `words` one per 20 ms, then `usage` (input, output tokens) if given, or fails after `fail_after` of
    them; records cancellations."""

    name = "slow"

    def __init__(self, words: list[str], fail_after: int | None = None,
                 usage: tuple[int, int] | None = None) -> None:
        self.words, self.fail_after, self.usage, self.cancelled = words, fail_after, usage, False

    async def stream(self, messages: Sequence[Message], **_: Any) -> AsyncIterator[LLMDelta]:
        try:
            for i, word in enumerate(self.words):
                if i == self.fail_after:
                    raise ProviderError("stream dropped", provider=self.name)
                await asyncio.sleep(0.02)
                yield LLMDelta(text=word)
            if self.usage is not None:
                yield LLMDelta(input_tokens=self.usage[0], output_tokens=self.usage[1])
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def _draft(llm: _SlowLLM, tasks: asyncio.TaskGroup) -> Draft:
    return Draft(cast(LLM, llm), [Message("user", "hi")], "hi", 0, tasks=tasks, max_tokens=10, temperature=0.0)


async def test_a_draft_replays_what_it_has_then_streams_the_rest() -> None:
    llm = _SlowLLM(["a ", "b ", "c ", "d"])
    async with asyncio.TaskGroup() as tasks:
        draft = _draft(llm, tasks)
        await asyncio.sleep(0.05)  # two words buffered before anyone asks
        assert draft.fits("hi", 0) and not draft.fits("hi there", 0) and not draft.fits("hi", 2)
        started = time.perf_counter()
        seen = []
        async for delta in draft.replay():
            seen.append((delta.text, time.perf_counter() - started))
    assert [text for text, _ in seen] == ["a ", "b ", "c ", "d"]
    assert seen[1][1] < 0.01 < seen[3][1]  # the buffered ones at once, the rest as generated
    assert not llm.cancelled


async def test_a_draft_stopped_early_or_dropped_stops_its_llm_and_keeps_its_error() -> None:
    llm = _SlowLLM(["a ", "b ", "c ", "d "] * 5)
    async with asyncio.TaskGroup() as tasks:
        draft = _draft(llm, tasks)
        async for _ in draft.replay():
            break
    assert llm.cancelled
    llm = _SlowLLM(["a ", "b "] * 5)
    async with asyncio.TaskGroup() as tasks:
        draft = _draft(llm, tasks)
        await asyncio.sleep(0.03)  # generating
        draft.cancel()
        assert not draft.fits("hi", 0)
    assert llm.cancelled
    llm = _SlowLLM(["a ", "b ", "c "], fail_after=2)
    async with asyncio.TaskGroup() as tasks:  # the error reaches the reply, not the session's task group
        draft = _draft(llm, tasks)
        with pytest.raises(ProviderError, match="dropped"):
            [d async for d in draft.replay()]


class _RecordingTTS:
    """Two 20 ms frames per piece after `delay_s`, or an error; records what it was asked and its cancellations."""

    name = "recording"

    def __init__(self, delay_s: float = 0.01, fail: bool = False) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.asked: list[tuple[str, str | None]] = []
        self.cancelled = False

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        self.asked.append((text, voice))
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise ProviderError("tts down", provider=self.name)
            for _ in range(2):
                yield AudioFrame.silence(0.02, 24000)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def _speaking_draft(llm: _SlowLLM, tts: _RecordingTTS, tasks: asyncio.TaskGroup) -> Draft:
    return Draft(cast(LLM, llm), [Message("user", "hi")], "hi", 0, tasks=tasks, max_tokens=10, temperature=0.0,
                 tts=cast(TTS, tts), voice="joe")


async def test_a_draft_synthesizes_its_first_piece_once_for_the_reply() -> None:
    llm, tts = _SlowLLM(["Hello ", "there. ", "How ", "are ", "you?"]), _RecordingTTS()
    async with asyncio.TaskGroup() as tasks:
        draft = _speaking_draft(llm, tts, tasks)
        await asyncio.sleep(0.2)  # the whole reply is written, its first piece spoken: nobody has asked yet
        assert tts.asked == [("Hello there.", "joe")]
        replayed = "".join([d.text async for d in draft.replay()])
        assert SentenceSplitter().push(replayed)[0] == "Hello there."  # what the reply's splitter will cut
        assert draft.speech("Hello there.", "amy") is None  # another voice, another piece: not this audio
        assert draft.speech("How are you?", "joe") is None
        speech = draft.speech("Hello there.", "joe")
        assert speech is not None and len([f async for f in speech]) == 2
        assert draft.speech("Hello there.", "joe") is None  # played once
    assert tts.asked == [("Hello there.", "joe")]
    llm, tts = _SlowLLM(["Sure"]), _RecordingTTS()  # no punctuation: the whole reply is the first piece
    async with asyncio.TaskGroup() as tasks:
        draft = _speaking_draft(llm, tts, tasks)
        speech = None
        while speech is None:
            await asyncio.sleep(0.01)
            speech = draft.speech("Sure", "joe")
        assert len([f async for f in speech]) == 2


async def test_a_dropped_draft_stops_its_speech_and_a_failed_one_fails_the_reply() -> None:
    llm, tts = _SlowLLM(["Hello. ", "Bye."]), _RecordingTTS(delay_s=5.0)
    async with asyncio.TaskGroup() as tasks:
        draft = _speaking_draft(llm, tts, tasks)
        await asyncio.sleep(0.1)
        assert tts.asked == [("Hello.", "joe")]
        draft.cancel()
    assert tts.cancelled
    llm, tts = _SlowLLM(["Hello. ", "Bye."]), _RecordingTTS(fail=True)
    async with asyncio.TaskGroup() as tasks:  # the error reaches the reply, not the session's task group
        draft = _speaking_draft(llm, tts, tasks)
        await asyncio.sleep(0.1)
        speech = draft.speech("Hello.", "joe")
        assert speech is not None
        with pytest.raises(ProviderError, match="tts down"):
            [f async for f in speech]


def test_the_conversation_previews_the_llm_view_with_the_next_user_turn() -> None:
    c = Conversation("sys", max_history_turns=1)
    c.add_user("one")
    c.add_assistant("two")
    assert [m.content for m in c.for_llm_with_user("three")] == ["sys", "three"]
    assert [m.content for m in c.messages] == ["one", "two"]


class _Sink:
    """A transport that keeps what is sent, at 16 kHz."""

    output_sample_rate = 16000

    def __init__(self) -> None:
        self.sent: list[AudioFrame] = []

    async def send_audio(self, frame: AudioFrame) -> None:
        self.sent.append(frame)

    async def clear(self) -> None:
        pass


def _quiet(seconds: float, rate: int) -> AudioFrame:
    return AudioFrame(np.zeros((round(seconds * rate), 1), np.int16), rate)


async def test_audio_queued_before_playout_starts_is_resampled_too() -> None:
    sink = _Sink()
    playout = Playout(sink, TurnTimeline(1))  # type: ignore[arg-type]
    playout.begin_piece("Hello there.")  # a drafted piece: all its audio is there before `run` has started
    for _ in range(3):
        await playout.put(_quiet(0.02, 24000))
    await playout.end_piece()
    playout.close()
    await playout.run()
    assert {f.sample_rate for f in sink.sent} == {16000}
    assert sum(f.num_frames for f in sink.sent) == pytest.approx(0.06 * 16000, abs=2)


async def test_ending_a_piece_on_a_full_queue_waits_for_room() -> None:
    playout = Playout(_Sink(), TurnTimeline(1), max_queued=4)  # type: ignore[arg-type]
    playout.begin_piece("x")
    while not playout._queue.full():  # resampled: the resampler keeps a tail for the piece's end
        await playout.put(_quiet(0.02, 22050))
    ending = asyncio.create_task(playout.end_piece())
    await asyncio.sleep(0.05)
    assert not ending.done()  # waiting for the consumer, not failing
    player = asyncio.create_task(playout.run())
    await ending
    playout.close()
    await player


async def test_a_barge_in_inside_a_piece_still_streaming_keeps_its_words_heard() -> None:
    playout = Playout(_Sink(), TurnTimeline(1))  # type: ignore[arg-type]
    text = "Hello there, I can help you with your booking today."

    async def speak() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(playout.run())
            playout.begin_piece(text)
            for _ in range(200):  # a streaming TTS, a little faster than real time
                await playout.put(_quiet(0.02, 16000))
                await asyncio.sleep(0.015)
            await playout.end_piece()
            playout.close()

    task = asyncio.create_task(speak())
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await playout.stop()
    assert playout.spans == []  # the piece never ended
    heard = playout.heard()
    # ~1.5 s of a 52-character piece at 15 characters a second: the first half or so, never all of it
    assert heard.startswith("Hello there, I can") and "today" not in heard
    assert playout.heard(0.0) == ""


class _CachedTTS(_RecordingTTS):
    """A TTS that reports a cache hit for every piece, as `CachedTTS` does for the session it serves."""

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        from voxline.observe import report

        report({"type": "tts_cache", "hit": True, "characters": len(text)})
        async for frame in super().synthesize(text, voice=voice):
            yield frame


async def test_what_a_drafts_synthesis_reports_counts_only_once_a_reply_adopts_it() -> None:
    from voxline.observe import reporting_to

    for adopted in (False, True):
        seen: list[dict[str, Any]] = []
        with reporting_to(seen.append):  # the session's observer
            async with asyncio.TaskGroup() as tasks:
                draft = _speaking_draft(_SlowLLM(["Hello ", "there. "]), cast(Any, _CachedTTS()), tasks)
                await asyncio.sleep(0.2)  # its first piece synthesized from the cache
                assert seen == []  # held: a dropped draft's hit must not credit what nobody is charged for
                if adopted:
                    speech = draft.speech("Hello there.", "joe")
                    assert speech is not None
                    assert len([f async for f in speech]) == 2
                else:
                    draft.cancel()
        assert seen == ([{"type": "tts_cache", "hit": True, "characters": 12}] if adopted else [])


async def test_a_dropped_draft_reports_what_it_was_billed_for_and_an_adopted_one_leaves_that_to_its_reply() -> None:
    from voxline.observe import reporting_to

    for adopted in (False, True):
        seen: list[dict[str, Any]] = []
        with reporting_to(seen.append):  # the session's observer
            async with asyncio.TaskGroup() as tasks:
                draft = _speaking_draft(_SlowLLM(["Hello ", "there. "], usage=(7, 2)), _RecordingTTS(), tasks)
                await asyncio.sleep(0.2)  # written and its first piece synthesized
                if adopted:  # the reply reads both, and reports their usage itself
                    assert [d.output_tokens async for d in draft.replay()][-1] == 2
                    speech = draft.speech("Hello there.", "joe")
                    assert speech is not None and len([f async for f in speech]) == 2
                draft.cancel()
                draft.cancel()  # reported once
        assert seen == ([] if adopted else [
            {"type": "usage", "kind": "llm", "provider": "slow", "draft": "dropped", "input_tokens": 7,
             "output_tokens": 2},
            {"type": "usage", "kind": "tts", "provider": "recording", "draft": "dropped", "characters": 12}])


def test_the_pre_roll_keeps_the_last_frames_up_to_its_length() -> None:
    import numpy as np

    from voxline.agent.session import _PreRoll

    pre = _PreRoll(0.4)
    for i in range(50):  # 1 s of 20 ms frames, each holding its index
        pre.append(AudioFrame(np.full((320, 1), i, np.int16), 16000))
    frames = pre.take()
    assert [int(f.samples[0, 0]) for f in frames] == list(range(30, 50))  # the last 0.4 s
    assert pre.take() == []
    pre.append(AudioFrame(np.zeros((16000, 1), np.int16), 16000))  # one frame longer than the pre-roll: dropped
    assert pre.take() == []
