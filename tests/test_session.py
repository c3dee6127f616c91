"""The session engine on scripted STT/LLM/TTS (fixed delays, deterministic) with the real Silero VAD and real speech.

Real-model conversations are in test_conversation.py; here the point is the engine's own logic: turn flow, barge-in
truncation, false-interruption guards, echo, hang-ups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from talk import feed, silence, utterance
from voxline.agent.config import AgentConfig
from voxline.agent.session import Session
from voxline.agent.stack import Stack, scripted_stack
from voxline.audio.frame import AudioFrame
from voxline.errors import ProviderError
from voxline.providers.base import Message, PrefillingLLM, Transcript
from voxline.providers.scripted import ScriptedLLM, ScriptedSTT, ScriptedSTTStream
from voxline.resilience import FallbackPhrases, with_timeout
from voxline.transports.memory import MemoryTransport

LONG_REPLY = ("Sure. The first thing to know is that the weather today will be sunny in the morning. "
              "Later in the afternoon clouds will gather over the hills and by the evening there may be rain.")


def config(**sections: Any) -> AgentConfig:
    return AgentConfig.load(**{"turn": {"detector": "silero", "silence_s": 0.4}, **sections})


@pytest.fixture(scope="module")
def vad_stack() -> Stack:
    return scripted_stack()


def stack_with(base: Stack, **options: Any) -> Stack:
    fresh = scripted_stack(vad=False, **options)
    fresh.vad = base.vad
    return fresh


Script = Callable[[MemoryTransport], Awaitable[None]]


async def run_call(stack: Stack, cfg: AgentConfig, script: Script) -> tuple[Session, MemoryTransport]:
    transport = MemoryTransport()
    session = Session(stack, cfg, transport)
    async with asyncio.timeout(60):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(session.run())
            await script(transport)
            transport.hangup()
    return session, transport


async def test_one_turn_reply_and_timeline(vad_stack: Stack) -> None:
    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(0, 2.5))
        await silence(t, 0.6, start=end)
        await t.wait_for("agent_done", 10)

    session, t = await run_call(vad_stack, config(), script)
    kinds = [e["type"] for e in t.events]
    assert kinds.count("speech_started") == 1 and kinds.count("turn_ended") == 1
    assert {"type": "transcript", "final": True, "text": "what time is it"} in t.events
    assert sum(f.duration for f in t.audio) == pytest.approx(7 * 0.04, abs=0.01)  # 7 words x 40 ms, resampled
    timeline = next(e for e in t.events if e["type"] == "timeline")
    stages = timeline["stages_ms"]
    for stage in ("turn_decided", "final_transcript", "llm_first_token", "first_sentence", "tts_first_audio",
                  "first_audio_sent", "playback_finished"):
        assert stage in stages, stage
    assert stages["final_transcript"] - stages["turn_decided"] >= 99  # the scripted STT's 100 ms
    assert [m.role for m in session.conversation.messages] == ["user", "assistant"]
    assert session.conversation.messages[1].content == "It is ten past four. Anything else?"


def barge_in_stack(base: Stack, interim_after_s: float) -> Stack:
    return stack_with(base, llm={"reply": LONG_REPLY}, tts={"seconds_per_word": 0.25},
                      stt={"texts": ["tell me the weather", "wait, what about tomorrow"],
                           "interim_after_s": interim_after_s})


def barge_in_script(agent_talks_s: float) -> Script:
    """A question, the agent answering for `agent_talks_s`, then the caller cutting in with 1.5 s of speech."""

    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(1, 2.0))
        end = await silence(t, 0.6, start=end)
        await t.wait_for("agent_text", 10)
        end = await silence(t, agent_talks_s, start=end)
        end = await feed(t, utterance(2, 1.5), start=end)
        await silence(t, 0.8, start=end)
        await t.wait_for("interrupted", 10)
        await asyncio.sleep(0.5)

    return script


async def test_barge_in_keeps_only_the_words_heard(vad_stack: Stack) -> None:
    session, t = await run_call(barge_in_stack(vad_stack, 0.3), config(), barge_in_script(1.5))
    interrupted = next(e for e in t.events if e["type"] == "interrupted")
    heard, planned = interrupted["heard"], interrupted["planned"]
    assert heard and len(heard.split()) < len(LONG_REPLY.split())
    assert LONG_REPLY.startswith(heard) or planned.startswith(heard)
    assert {"type": "clear"} in t.events
    # The context holds exactly what was heard, then the interruption as the next user turn.
    roles = [(m.role, m.content) for m in session.conversation.messages]
    assert roles[0] == ("user", "tell me the weather")
    assert roles[1] == ("assistant", heard)
    assert roles[2] == ("user", "wait, what about tomorrow")
    # Audio sent before the clear is about what was heard plus at most the playout lead.
    heard_words = len(heard.split())
    assert heard_words >= 3


async def test_a_barge_in_decided_on_the_final_bills_the_new_turn_after_the_old_one_closed(vad_stack: Stack) -> None:
    # no interims: the final decides the barge-in
    _, t = await run_call(barge_in_stack(vad_stack, 60), config(), barge_in_script(1.0))
    kinds = [e["type"] + (f":{e['kind']}" if e["type"] == "usage" else "") for e in t.events]
    # The new turn's STT usage comes after the interrupted reply's timeline, which closes the old turn's cost.
    assert [i for i, k in enumerate(kinds) if k == "usage:stt"][1] > kinds.index("timeline")


@pytest.mark.parametrize("said", ["mm-hm", "yeah", "the weather today will be sunny"])
async def test_backchannel_and_echo_do_not_interrupt(vad_stack: Stack, said: str) -> None:
    stack = stack_with(vad_stack, llm={"reply": LONG_REPLY}, tts={"seconds_per_word": 0.1},
                       stt={"texts": ["tell me the weather", said], "interim_after_s": 0.3})

    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(1, 2.0))
        end = await silence(t, 0.6, start=end)
        await t.wait_for("agent_text", 10)
        end = await silence(t, 0.5, start=end)
        end = await feed(t, utterance(3, 1.0), start=end)
        end = await silence(t, 0.8, start=end)
        await t.wait_for("agent_done", 15)

    session, t = await run_call(stack, config(), script)
    assert not any(e["type"] == "interrupted" for e in t.events)
    assert any(e["type"] == "ignored" and e["text"] == said for e in t.events)
    assert session.conversation.messages[-1].content == LONG_REPLY


async def test_hang_up_mid_reply_ends_every_task(vad_stack: Stack) -> None:
    stack = stack_with(vad_stack, llm={"reply": LONG_REPLY}, tts={"seconds_per_word": 0.3})
    before = len(asyncio.all_tasks())

    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(4, 2.0))
        await silence(t, 0.6, start=end)
        await t.wait_for("agent_text", 10)
        await asyncio.sleep(0.3)

    session, _ = await run_call(stack, config(), script)
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= before
    assert session.timelines and session.timelines[-1].has("interrupted")


async def test_typed_text_turn_and_greeting(vad_stack: Stack) -> None:
    from voxline.transports.base import ClientEvent

    async def script(t: MemoryTransport) -> None:
        await t.wait_for("agent_done", 10)  # the greeting
        t.events.clear()
        await t.push(ClientEvent("text", {"text": "hello"}))
        await t.wait_for("agent_done", 10)

    session, _ = await run_call(vad_stack, config(agent={"greeting": "Hi, how can I help?"}), script)
    assert session.conversation.messages[0].content == "Hi, how can I help?"
    assert [m.role for m in session.conversation.messages] == ["assistant", "user", "assistant"]


class BrokenLLM:
    """An LLM whose service is down: every call fails (after the resilience wrappers gave up)."""

    name = "broken"

    async def stream(self, messages: Any, **kwargs: Any) -> Any:
        raise ProviderError("503 from the LLM service", provider="broken", retryable=True)
        yield  # pragma: no cover  (makes this an async generator)


async def test_failed_reply_plays_the_fallback_phrase_at_once(vad_stack: Stack) -> None:
    from voxline.transports.base import ClientEvent

    stack = stack_with(vad_stack)
    stack.llm = BrokenLLM()
    stack.phrases = FallbackPhrases(stack.tts)
    await stack.prepare()

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("text", {"text": "hello?"}))
        await t.wait_for("agent_done", 5)

    session, t = await run_call(stack, config(), script)
    error = next(e for e in t.events if e["type"] == "error")
    assert "503" in error["message"]
    phrase = stack.phrases.text("error")
    assert next(e for e in t.events if e["type"] == "agent_done")["text"] == phrase
    timeline = next(e for e in t.events if e["type"] == "timeline")
    assert timeline["stages_ms"]["first_audio_sent"] < 1000  # the apology starts within a second of the fault
    assert session.conversation.messages[-1].content == phrase


async def test_speech_without_words_gets_asked_again(vad_stack: Stack) -> None:
    stack = stack_with(vad_stack, stt={"text": ""})
    stack.phrases = FallbackPhrases(stack.tts)
    await stack.prepare()

    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(12, 2.0))
        await silence(t, 0.6, start=end)
        await t.wait_for("agent_done", 10)

    _, t = await run_call(stack, config(), script)
    assert any(e["type"] == "ignored" and e["reason"] == "no speech" for e in t.events)
    assert next(e for e in t.events if e["type"] == "agent_done")["text"] == stack.phrases.text("not_understood")
    usage = next(e for e in t.events if e["type"] == "usage" and e["kind"] == "stt")
    assert usage["audio_seconds"] > 1.0


async def test_slow_tool_gets_a_filler_and_its_result_reaches_the_reply(vad_stack: Stack) -> None:
    from voxline.agent.tools import ToolBox, tool
    from voxline.providers.base import ToolCall
    from voxline.transports.base import ClientEvent

    ran: list[str] = []

    @tool
    async def weather(city: str) -> str:
        """Look up the weather.

        Args:
            city: The city.
        """
        await asyncio.sleep(1.0)
        ran.append(city)
        return f"sunny in {city}"

    stack = stack_with(vad_stack, llm={"reply": "It is sunny in Paris.",
                                       "tool_call": ToolCall("call_1", "weather", {"city": "Paris"})})
    stack.tools = ToolBox([weather])

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("text", {"text": "weather in Paris?"}))
        await t.wait_for("agent_done", 10)

    session, t = await run_call(stack, config(), script)
    spoken = [e["text"] for e in t.events if e["type"] == "agent_text"]
    assert spoken == ["Let me check.", "One moment.", "It is sunny in Paris."]
    assert ran == ["Paris"]
    roles = [m.role for m in session.conversation.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert session.conversation.messages[2].content == "sunny in Paris"
    last_llm_call = stack.llm.calls[-1]  # type: ignore[attr-defined]
    assert last_llm_call[-1].role == "tool"


async def test_barge_in_cancels_a_running_tool(vad_stack: Stack) -> None:
    from voxline.agent.tools import ToolBox, tool
    from voxline.providers.base import ToolCall
    from voxline.transports.base import ClientEvent

    finished: list[bool] = []

    @tool
    async def slow_search(query: str) -> str:
        """Search slowly.

        Args:
            query: What to look for.
        """
        await asyncio.sleep(5.0)
        finished.append(True)
        return "found"

    stack = stack_with(vad_stack, llm={"tool_call": ToolCall("c1", "slow_search", {"query": "x"})})
    stack.tools = ToolBox([slow_search])

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("text", {"text": "search for x"}))
        await t.wait_for("tool_call", 5)
        await t.push(ClientEvent("interrupt"))
        await t.wait_for("agent_done", 5)
        await asyncio.sleep(0.2)

    _, t = await run_call(stack, config(), script)
    assert any(e["type"] == "interrupted" for e in t.events)
    assert not finished


async def test_end_call_tool_hangs_up_after_the_goodbye(vad_stack: Stack) -> None:
    from voxline.agent.tools import BUILTIN_TOOLS, ToolBox
    from voxline.providers.base import ToolCall
    from voxline.transports.base import ClientEvent

    stack = stack_with(vad_stack, llm={"reply": "Goodbye!", "tool_call": ToolCall("c1", "end_call", {})})
    stack.tools = ToolBox(BUILTIN_TOOLS)
    transport = MemoryTransport()
    session = Session(stack, config(), transport)
    runner = asyncio.create_task(session.run())
    await transport.push(ClientEvent("text", {"text": "that's all, bye"}))
    await asyncio.wait_for(runner, 10)  # the session ends by itself: no hang-up from the caller
    kinds = [e["type"] for e in transport.events]
    assert kinds.index("agent_done") < kinds.index("call_ended")
    assert session.conversation.messages[-1].content == "Goodbye!"


class PausingSTT(ScriptedSTT):
    """Like Whisper's speculative stream: at each pause, the words so far (`pause_text`) arrive as a speculative
    interim; then, if given, `late_text` as a plain interim 0.2 s later (an interim decode of the pause's silence)."""

    def __init__(self, pause_text: str, final_text: str, late_text: str | None = None) -> None:
        super().__init__(text=final_text)
        self.pause_text, self.late_text = pause_text, late_text
        self.resumed = 0
        self.paused_at: list[float] = []  # stream time of each pause()

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> ScriptedSTTStream:
        stt = self

        class Stream(ScriptedSTTStream):
            clock = 0.0

            async def send(self, frame: AudioFrame) -> None:
                self.clock = frame.timestamp + frame.duration
                await super().send(frame)

            async def pause(self) -> None:
                stt.paused_at.append(self.clock)
                self._results.put_nowait(Transcript(stt.pause_text, is_final=False, speculative=True))
                if stt.late_text is not None:
                    late = Transcript(stt.late_text, is_final=False)
                    asyncio.get_running_loop().call_later(0.2, self._results.put_nowait, late)

            async def resume(self) -> None:
                stt.resumed += 1

        return Stream(self)


def drafting_stack(base: Stack, pause_text: str, final_text: str, late_text: str | None = None) -> Stack:
    stack = stack_with(base, llm={"first_token_s": 0.3}, tts={"first_audio_s": 0.3})
    stack.stt = PausingSTT(pause_text, final_text, late_text)
    return stack


async def one_turn_then_silence(t: MemoryTransport) -> None:
    end = await feed(t, utterance(0, 2.5))
    await silence(t, 1.2, start=end)
    await t.wait_for("agent_done", 10)


async def test_a_reply_drafted_in_the_pause_is_used_when_the_turn_ends_there(vad_stack: Stack) -> None:
    stack = drafting_stack(vad_stack, "what time is it", "what time is it")
    session, t = await run_call(stack, config(turn={"detector": "silero", "silence_s": 0.8}), one_turn_then_silence)
    llm = stack.llm
    assert isinstance(llm, ScriptedLLM)
    assert {c[-1].content for c in llm.calls} == {"what time is it"}  # one draft per pause (this clip has two)
    stages = next(e for e in t.events if e["type"] == "timeline")["stages_ms"]
    # The last draft was adopted: its 300 ms to the first token, and the TTS's 300 ms to the first piece's audio,
    # passed while the detector waited out the silence.
    timeline = next(e for e in t.events if e["type"] == "timeline")
    assert timeline["drafted"] and timeline["drafts"] == len(llm.calls)  # every LLM call was a draft
    assert stages["llm_first_token"] - stages["final_transcript"] < 150
    assert stages["tts_first_audio"] - stages["final_transcript"] < 150
    assert [m.content for m in session.conversation.messages] == ["what time is it", llm.reply]


async def test_the_stt_hears_of_a_pause_after_a_tenth_of_a_second_of_silence(vad_stack: Stack) -> None:
    """The detector's `silence` event (0.1 s), not its `pause` (0.35 s), starts the speculative final: its words
    are there ~0.25 s sooner for the turn decision and the draft."""
    stack = drafting_stack(vad_stack, "what time is it", "what time is it")
    _, t = await run_call(stack, config(turn={"detector": "silero", "silence_s": 0.8}), one_turn_then_silence)
    speech_end = next(e for e in t.events if e["type"] == "turn_ended")["time"] - 0.8
    assert isinstance(stack.stt, PausingSTT)
    assert 0.08 <= stack.stt.paused_at[-1] - speech_end < 0.16  # 3 Silero windows, then the rest of a 20 ms frame


async def test_a_draft_answers_the_speculative_final_not_later_interims_of_the_pause(vad_stack: Stack) -> None:
    stack = drafting_stack(vad_stack, "what time is it", "what time is it", late_text="What time is it?")
    _, t = await run_call(stack, config(turn={"detector": "silero", "silence_s": 0.8}), one_turn_then_silence)
    llm = stack.llm
    assert isinstance(llm, ScriptedLLM)
    assert {c[-1].content for c in llm.calls} == {"what time is it"}
    stages = next(e for e in t.events if e["type"] == "timeline")["stages_ms"]
    assert stages["tts_first_audio"] - stages["final_transcript"] < 150


async def test_a_draft_is_dropped_when_the_user_goes_on_or_the_words_change(vad_stack: Stack) -> None:
    stack = drafting_stack(vad_stack, "what time", "what time is it in Paris")

    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(0, 2.0))
        end = await silence(t, 0.3, start=end)  # a pause: a draft starts on "what time"
        end = await feed(t, utterance(1, 1.5), start=end)  # ... and is dropped when the user goes on
        await silence(t, 1.2, start=end)  # another draft on "what time"; the final says more
        await t.wait_for("agent_done", 10)

    session, t = await run_call(stack, config(turn={"detector": "silero", "silence_s": 0.8}), script)
    llm = stack.llm
    assert isinstance(llm, ScriptedLLM)
    asked = [c[-1].content for c in llm.calls]
    assert asked[-1] == "what time is it in Paris" and len(asked) >= 3 and set(asked[:-1]) == {"what time"}
    assert isinstance(stack.stt, PausingSTT) and stack.stt.resumed >= 1  # the stream heard the user went on
    assert [e["text"] for e in t.events if e["type"] == "agent_done"] == [llm.reply]  # one reply, to the final
    timeline = next(e for e in t.events if e["type"] == "timeline")
    assert not timeline["drafted"] and timeline["drafts"] == len(asked) - 1  # all thrown away
    assert [m.content for m in session.conversation.messages] == ["what time is it in Paris", llm.reply]


async def test_a_hang_up_in_a_pause_stops_the_draft(vad_stack: Stack) -> None:
    import time

    stack = drafting_stack(vad_stack, "what time is it", "what time is it")
    llm = stack.llm
    assert isinstance(llm, ScriptedLLM)
    llm.reply, llm.token_interval_s = LONG_REPLY, 0.2  # a draft left running would take ~7 s

    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(0, 2.5))
        await silence(t, 0.5, start=end)  # a pause: the draft starts; the turn is not over (0.8 s)
        await asyncio.sleep(0.4)

    started = time.monotonic()
    await run_call(stack, config(turn={"detector": "silero", "silence_s": 0.8}), script)
    assert llm.calls and time.monotonic() - started < 6.0  # 2.5 s + 0.5 s of audio + 0.4 s, then the hang-up


async def test_drafting_can_be_turned_off(vad_stack: Stack) -> None:
    stack = drafting_stack(vad_stack, "what time is it", "what time is it")
    cfg = config(turn={"detector": "silero", "silence_s": 0.8}, agent={"draft_replies": False})
    _, t = await run_call(stack, cfg, one_turn_then_silence)
    llm = stack.llm
    assert isinstance(llm, ScriptedLLM) and len(llm.calls) == 1
    assert not next(e for e in t.events if e["type"] == "timeline")["drafted"]
    stages = next(e for e in t.events if e["type"] == "timeline")["stages_ms"]
    assert stages["llm_first_token"] - stages["final_transcript"] >= 299
    assert stages["tts_first_audio"] - stages["llm_first_token"] >= 299


@dataclass
class PrefillingScriptedLLM(ScriptedLLM):
    prefilled: list[list[Message]] = field(default_factory=list)

    def prefill(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> None:
        assert max_tokens == AgentConfig.load().agent.max_tokens  # the reply's, so both trim alike
        self.prefilled.append(list(messages))


async def test_the_llm_reads_the_users_words_while_they_speak(vad_stack: Stack) -> None:
    """A local LLM gets the interim words to evaluate ahead of the reply, through the stack's resilience wrapper."""
    stack = stack_with(vad_stack, stt={"interim_after_s": 0.4})  # while speaking: the clip has a short silence 0.6 s in
    llm = PrefillingScriptedLLM()
    stack.llm = with_timeout(llm, first_item=5.0)
    assert isinstance(stack.llm, PrefillingLLM)
    session, _ = await run_call(stack, config(agent={"draft_replies": False}), one_turn_then_silence)
    assert llm.prefilled and len(llm.calls) == 1
    assert all(p == llm.calls[0] for p in llm.prefilled)  # the interim had the final's words: the reply's prompt
    assert llm.calls[0][-1] == Message("user", "what time is it")
    assert [m.content for m in session.conversation.messages] == ["what time is it", llm.reply]


async def test_no_prefill_while_the_agent_speaks(vad_stack: Stack) -> None:
    stack = stack_with(vad_stack, stt={"interim_after_s": 0.3, "texts": ["what time is it", "mm-hm"]})
    llm = PrefillingScriptedLLM(reply=LONG_REPLY)
    stack.llm = llm

    async def script(t: MemoryTransport) -> None:
        end = await feed(t, utterance(0, 2.5))
        end = await silence(t, 0.8, start=end)
        await t.wait_for("agent_text", 10)
        prefills = len(llm.prefilled)
        end = await feed(t, utterance(1, 1.0), start=end)  # a backchannel over the reply: interims, no prefill
        await silence(t, 0.8, start=end)
        assert {"type": "transcript", "final": False, "text": "mm-hm"} in t.events
        assert len(llm.prefilled) == prefills

    await run_call(stack, config(agent={"draft_replies": False}), script)
    assert llm.prefilled


async def test_no_prefill_in_a_pause(vad_stack: Stack) -> None:
    """Words that come in a pause (here a late interim) are left to the STT's speculation and the draft."""
    stack = drafting_stack(vad_stack, "what time is it", "what time is it", late_text="What time is it?")
    llm = PrefillingScriptedLLM()
    stack.llm = llm
    await run_call(stack, config(turn={"detector": "silero", "silence_s": 0.8}, agent={"draft_replies": False}),
                   one_turn_then_silence)
    assert len(llm.calls) == 1 and not any(p[-1].content == "What time is it?" for p in llm.prefilled)


# ---- client controls (typed turns, manual turns, truncation) ---------------------------------------------------------


def energy_config(**sections: Any) -> AgentConfig:
    return AgentConfig.load(**{"turn": {"detector": "energy"}, **sections})


async def test_typed_turns_arriving_together_all_join_the_conversation_in_order() -> None:
    from voxline.transports.base import ClientEvent

    stack = scripted_stack(vad=False, llm={"reply": LONG_REPLY})

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("text", {"text": "first question"}))
        await t.wait_for("agent_text", 5)
        await asyncio.sleep(0.3)  # the agent is speaking
        t.events.clear()
        await t.push(ClientEvent("text", {"text": "second question"}))  # both read before either reply runs
        await t.push(ClientEvent("text", {"text": "third question"}))
        await t.wait_for("agent_done", 10)  # the first reply, interrupted
        t.events.clear()
        await t.wait_for("agent_done", 15)  # the reply to the third question, spoken to its end

    session, _ = await run_call(stack, energy_config(), script)
    users = [m.content for m in session.conversation.messages if m.role == "user"]
    assert users == ["first question", "second question", "third question"]
    roles = [m.role for m in session.conversation.messages]
    assert roles[:2] == ["user", "assistant"]  # what was heard of the first reply comes before the next question
    assert roles[-1] == "assistant" and session.conversation.messages[-1].content == LONG_REPLY


async def _feed_tone(t: MemoryTransport, seconds: float, start: float) -> float:
    import math

    import numpy as np
    n = np.arange(round(seconds * 16000)) / 16000
    return await feed(t, AudioFrame.from_float((0.2 * np.sin(2 * math.pi * 220 * n)).astype(np.float32), 16000),
                      start=start)


async def test_speech_right_after_a_manual_commit_is_a_turn_of_its_own() -> None:
    from voxline.transports.base import ClientEvent

    stack = scripted_stack(vad=False, stt={"texts": ["first utterance", "second utterance"]})

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("configure", {"auto_end_turns": False, "auto_respond": False}))
        x = await _feed_tone(t, 1.0, 0.0)
        x = await silence(t, 0.1, start=x)
        await t.push(ClientEvent("commit"))  # push to talk released ...
        x = await silence(t, 0.1, start=x)
        x = await _feed_tone(t, 1.0, x)  # ... and pressed again at once
        await silence(t, 0.1, start=x)
        await t.push(ClientEvent("commit"))
        await asyncio.sleep(0.5)

    session, _ = await run_call(stack, energy_config(), script)
    assert [(m.role, m.content) for m in session.conversation.messages] == [
        ("user", "first utterance"), ("user", "second utterance")]


async def _speak_commit_and_respond(t: MemoryTransport) -> None:
    """Push to talk: one second of speech, released, and the reply asked for before its final (100 ms) is in."""
    from voxline.transports.base import ClientEvent

    await t.push(ClientEvent("configure", {"auto_end_turns": False, "auto_respond": False}))
    x = await _feed_tone(t, 1.0, 0.0)
    await silence(t, 0.1, start=x)
    await t.push(ClientEvent("commit"))
    await t.push(ClientEvent("respond"))


async def test_respond_right_after_commit_answers_the_committed_words() -> None:
    stack = scripted_stack(vad=False, stt={"texts": ["what time is it"]})

    async def script(t: MemoryTransport) -> None:
        await _speak_commit_and_respond(t)
        await t.wait_for("agent_done", 10)

    session, t = await run_call(stack, energy_config(), script)
    assert [(m.role, m.content) for m in session.conversation.messages] == [
        ("user", "what time is it"), ("assistant", "It is ten past four. Anything else?")]
    assert not any(e["type"] == "interrupted" for e in t.events)


async def test_a_truncate_while_the_reply_plays_stops_it_there() -> None:
    from voxline.transports.base import ClientEvent

    stack = scripted_stack(vad=False, llm={"reply": LONG_REPLY}, tts={"seconds_per_word": 0.25})

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("text", {"text": "tell me the weather"}))
        await t.wait_for("agent_text", 5)
        await asyncio.sleep(1.5)
        await t.push(ClientEvent("truncate", {"played_ms": 500}))  # the caller stopped playback at 0.5 s
        await t.wait_for("agent_done", 5)

    session, t = await run_call(stack, energy_config(), script)
    done = next(e for e in t.events if e["type"] == "agent_done")
    assert done["interrupted"]
    # 0.5 s at 0.25 s a word: "Sure." and "The", not what was sent after the caller stopped listening
    assert done["text"] == "Sure. The" and session.conversation.messages[-1].content == "Sure. The"


def _weather_stack(preamble: str, **tts: Any) -> Stack:
    """A stack whose LLM says `preamble`, calls a (fast) weather tool, then says "It is sunny in Paris."."""
    from voxline.agent.tools import ToolBox, tool
    from voxline.providers.base import ToolCall

    @tool
    async def weather(city: str) -> str:
        """Look up the weather.

        Args:
            city: The city.
        """
        return f"sunny in {city}"

    stack = scripted_stack(vad=False, llm={"reply": "It is sunny in Paris.", "tool_preamble": preamble,
                                           "tool_call": ToolCall("c1", "weather", {"city": "Paris"})}, tts=tts)
    stack.tools = ToolBox([weather])
    return stack


async def test_words_said_before_a_tool_call_are_not_repeated_in_the_context() -> None:
    from voxline.transports.base import ClientEvent

    stack = _weather_stack("Sure!\nLet me check.")

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("text", {"text": "weather in Paris?"}))
        await t.wait_for("agent_done", 10)

    session, _ = await run_call(stack, energy_config(), script)
    last = session.conversation.messages[-1]
    assert last.role == "assistant" and last.content == "It is sunny in Paris."


async def test_a_barge_in_during_a_tool_calls_preamble_cuts_that_message_to_the_words_heard() -> None:
    from voxline.transports.base import ClientEvent

    preamble = "Sure, I will look up the weather in Paris for you right now."
    stack = _weather_stack(preamble, seconds_per_word=0.25)

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("text", {"text": "weather in Paris?"}))
        await t.wait_for("tool_result", 5)
        await asyncio.sleep(1.0)  # the answer is queued behind the preamble, which still plays
        await t.push(ClientEvent("truncate", {"played_ms": 1000}))  # the caller heard a second of it
        await t.wait_for("agent_done", 5)

    session, t = await run_call(stack, energy_config(), script)
    done = next(e for e in t.events if e["type"] == "agent_done")
    heard = done["text"]
    assert done["interrupted"] and heard and preamble.startswith(heard) and heard != preamble
    # The call's message says what was heard of the preamble; the answer was never heard, so it is not there.
    assert [(m.role, m.content) for m in session.conversation.messages] == [
        ("user", "weather in Paris?"), ("assistant", heard), ("tool", "sunny in Paris")]
    assert session.conversation.messages[1].tool_calls


async def test_turn_options_that_cannot_apply_are_reported_and_the_call_goes_on() -> None:
    from voxline.transports.base import ClientEvent

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("configure", {"turn": {"no_such_option": 1}}))
        await t.push(ClientEvent("text", {"text": "hello"}))
        await t.wait_for("agent_done", 10)

    session, t = await run_call(scripted_stack(vad=False), energy_config(), script)
    error = next(e for e in t.events if e["type"] == "error")
    assert error["source"] == "configure" and "no_such_option" in error["message"]
    assert session.turn_options.detector == "energy"
    assert [m.role for m in session.conversation.messages] == ["user", "assistant"]


async def test_without_auto_replies_speech_over_the_agent_is_filtered_and_joins_after_its_words() -> None:
    from voxline.transports.base import ClientEvent

    stack = scripted_stack(vad=False, llm={"reply": LONG_REPLY}, tts={"seconds_per_word": 0.1},
                           stt={"texts": ["mm-hm", "what about tomorrow"], "interim_after_s": 60})

    async def script(t: MemoryTransport) -> None:
        await t.push(ClientEvent("configure", {"auto_respond": False}))
        await t.push(ClientEvent("text", {"text": "tell me the weather"}))
        await t.wait_for("agent_text", 5)
        x = await _feed_tone(t, 0.6, 0.0)  # "mm-hm" over the reply
        x = await silence(t, 0.5, start=x)
        x = await _feed_tone(t, 1.0, x)  # a real turn over the reply: the client decides what to do with it
        await silence(t, 0.5, start=x)
        await t.wait_for("agent_done", 10)

    session, t = await run_call(stack, energy_config(), script)
    assert any(e["type"] == "ignored" and e["text"] == "mm-hm" for e in t.events)
    assert not any(e["type"] == "interrupted" for e in t.events)
    assert [(m.role, m.content) for m in session.conversation.messages] == [
        ("user", "tell me the weather"), ("assistant", LONG_REPLY), ("user", "what about tomorrow")]


async def test_a_hang_up_after_commit_and_respond_starts_no_reply() -> None:
    stack = scripted_stack(vad=False, stt={"texts": ["what time is it"]})
    # the caller hangs up before the final is in
    session, t = await run_call(stack, energy_config(), _speak_commit_and_respond)
    llm = stack.llm
    assert isinstance(llm, ScriptedLLM) and llm.calls == []
    assert not any(e["type"] in ("reply_started", "agent_text") for e in t.events)
    assert [(m.role, m.content) for m in session.conversation.messages] == [("user", "what time is it")]


class SlowClearTransport(MemoryTransport):
    """A caller whose `clear` takes a while to send (a Twilio socket, say)."""

    cleared = 0

    async def clear(self) -> None:
        await asyncio.sleep(0.2)
        await super().clear()
        self.cleared += 1


async def test_a_reply_cleaning_up_after_a_barge_in_is_not_cut_short_by_the_next() -> None:
    from voxline.transports.base import ClientEvent

    stack = scripted_stack(vad=False, llm={"reply": LONG_REPLY})
    transport = SlowClearTransport()
    session = Session(stack, energy_config(), transport)
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(session.run())
        await transport.push(ClientEvent("text", {"text": "first question"}))
        await transport.wait_for("agent_text", 5)
        await transport.push(ClientEvent("text", {"text": "second question"}))  # the first reply starts to clear
        await asyncio.sleep(0.05)
        await transport.push(ClientEvent("text", {"text": "third question"}))  # ... and is not cancelled again
        await transport.push(ClientEvent("interrupt"))
        await transport.wait_for("interrupted", 5)
        await asyncio.sleep(0.5)
        transport.hangup()
    assert transport.cleared >= 1  # the first reply's clear reached the caller
    assert [m.content for m in session.conversation.messages if m.role == "user"] == [
        "first question", "second question", "third question"]
