"""One caller's conversation, as a task group.

    transport -> resample to 16 kHz -> turn detector -> STT stream -> user turn -> reply task
    reply task = LLM stream -> sentence splitter -> TTS -> paced playout -> transport

At most one reply task runs. Barge-in is `reply.cancel()`: cancellation stops the LLM, the TTS and the playout
wherever they are; the playout then knows how much audio the caller heard, and the assistant message keeps exactly
those words. Side concerns (metrics, records, cost) are observers of the session's events, not part of the flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from voxline.agent.config import AgentConfig, turn_options
from voxline.agent.context import Conversation, ReplyRecord, join_heard
from voxline.agent.draft import Draft
from voxline.agent.playout import Playout
from voxline.agent.sentences import SentenceSplitter
from voxline.agent.stack import Stack
from voxline.agent.timeline import TurnTimeline
from voxline.agent.tools import ToolBox
from voxline.agent.turns import TurnDetector, TurnEvent
from voxline.audio.frame import AudioFrame, Resampler
from voxline.errors import VoxlineError
from voxline.observe import reporting_to
from voxline.providers.base import PrefillingLLM, SpeculativeSTTStream, STTStream, ToolCall, Transcript
from voxline.resilience import RetryBudget, close_quietly, is_no_speech
from voxline.transports.base import ClientEvent, Transport

log = logging.getLogger(__name__)

Observer = Callable[[dict[str, Any]], None]

STT_RATE = 16000
PRE_ROLL_S = 0.4  # audio kept from before speech_started, so the STT hears the first syllable
MAX_TOOL_ROUNDS = 3  # LLM -> tools -> LLM rounds in one reply
FILLER_AFTER_S = 0.6  # a tool still running after this long gets a spoken filler
FILLER = "One moment."
NOT_UNDERSTOOD_AFTER_S = 1.0  # a turn this long whose transcript holds no words gets "Sorry, I didn't catch that"
BACKCHANNELS = frozenset("mm mhm mm-hm mm-hmm hmm uh-huh uh huh yeah yep yes ok okay right sure um uh ah oh "
                         "i see got it".split())
_WORD = re.compile(r"[a-z']+(?:-[a-z']+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


async def _outlive(tasks: list[asyncio.Task[None]]) -> bool:
    """Wait until `tasks` are done, even if the waiter is cancelled meanwhile; return whether it was."""
    cancelled = False
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def is_backchannel(text: str) -> bool:
    """A short acknowledgement ("mm-hm", "yeah", "okay") that should not interrupt the agent."""
    words = _words(text)
    return 0 < len(words) <= 2 and all(w in BACKCHANNELS for w in words)


def is_echo(user_text: str, agent_text: str) -> bool:
    """Whether a transcript heard during playback is the agent's own recent words coming back (no echo
    cancellation on the caller's side). Word pairs, not single words, must match: a real interruption often
    reuses the agent's words ("and on Mondays?") but rarely in the agent's order."""
    user = _words(user_text)
    if len(user) < 2:
        return False
    agent = _words(agent_text)
    agent_pairs = set(pairwise(agent))
    user_pairs = list(pairwise(user))
    return sum(p in agent_pairs for p in user_pairs) / len(user_pairs) >= 0.6


class _PreRoll:
    """The last `seconds` of audio before speech started, so the STT hears the first syllable. Its length is kept as
    a running total: this runs on every frame of every caller who is not speaking."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._frames: deque[AudioFrame] = deque()
        self._length_s = 0.0

    def append(self, frame: AudioFrame) -> None:
        self._frames.append(frame)
        self._length_s += frame.duration
        while self._length_s > self.seconds + 1e-6 and self._frames:  # (20 x 0.02 s sums to a hair over 0.4)
            self._length_s -= self._frames.popleft().duration

    def take(self) -> list[AudioFrame]:
        frames = list(self._frames)
        self.clear()
        return frames

    def clear(self) -> None:
        self._frames.clear()
        self._length_s = 0.0


@dataclass
class _UserTurn:
    """The user's turn in progress: its STT stream, the reader of that stream, and the latest text."""

    stream: STTStream
    started_at: float
    timeline: TurnTimeline
    interim: str = ""
    in_pause: bool = False
    """The STT stream was told of a pause (the detector's `silence` event), and not yet that the speaker went on."""
    pause_words: str | None = None
    """The speculative final of the current pause, once the STT has sent it (what a draft should answer)."""
    audio_s: float = 0.0
    reader: asyncio.Task[None] | None = None
    final: asyncio.Future[Transcript] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Session:
    """A conversation with one caller over one transport. `await session.run()` until the caller hangs up."""

    def __init__(self, stack: Stack, config: AgentConfig, transport: Transport, *,
                 observers: tuple[Observer, ...] = (), session_id: str = "") -> None:
        self.stack, self.config, self.transport = stack, config, transport
        self.id = session_id
        self.observers = observers
        self.conversation = Conversation(config.agent.system_prompt, config.agent.max_history_turns)
        self.turn_options = config.turn
        self.detector: TurnDetector = stack.turn_detector(config.turn)
        self.voice = config.providers.voice or None
        self._recoveries = RetryBudget(config.reliability.max_recoveries)
        self.end_requested = asyncio.Event()
        """Set by the `end_call` tool: the session ends once the current reply has been spoken."""
        self.auto_end_turns = True
        """False: the detector still finds speech, but only a `commit` event ends the user's turn."""
        self.auto_respond = True
        """False: a finished user turn joins the context, and a `respond` event asks for the reply."""
        self.timelines: list[TurnTimeline] = []
        self._resampler: Resampler | None = None
        self._pre_roll = _PreRoll(PRE_ROLL_S)
        self._user: _UserTurn | None = None
        self._reply: asyncio.Task[None] | None = None
        self._replies: list[asyncio.Task[None]] = []
        """Reply tasks not yet seen done: the current one, and the interrupted ones still recording what was heard."""
        self._waiting_user_texts: list[str] = []
        """User turns answered by a reply that has not started yet (it waits for the interrupted ones)."""
        self._draft: Draft | None = None
        self._ending = False
        self._finishing: list[asyncio.Task[None]] = []
        """Ended user turns still waiting for their final transcript."""
        self._playout: Playout | None = None
        self._record: ReplyRecord | None = None
        """The messages of the last reply that spoke (what a late truncate cuts)."""
        self._tasks: asyncio.TaskGroup | None = None
        self._stream_clock: tuple[float, float] = (0.0, time.monotonic())  # (stream time, monotonic) of last frame

    # ---- lifecycle ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the caller until they hang up, or until the agent ends the call (the `end_call` tool)."""
        with reporting_to(self.emit):  # what the shared providers do for this caller reaches this caller
            await self._serve()

    async def _serve(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                if self.config.agent.greeting:
                    self._start_reply(None, TurnTimeline(0), fixed_text=self.config.agent.greeting)
                listening = tasks.create_task(self._listen())
                ending = tasks.create_task(self._end_when_asked(listening))
                await asyncio.wait([listening])  # the caller hung up, or `_end_when_asked` stopped listening
                ending.cancel()
                await self._end()
        finally:
            self._tasks = None

    async def _listen(self) -> None:
        async for item in self.transport.receive():
            if isinstance(item, AudioFrame):
                await self._on_audio(item)
            else:
                await self._on_client_event(item)

    async def _end_when_asked(self, listening: asyncio.Task[None]) -> None:
        await self.end_requested.wait()
        if self._reply is not None:  # say goodbye first
            await asyncio.wait([self._reply])
        self.emit({"type": "call_ended", "reason": "the agent ended the call"})
        listening.cancel()

    async def _end(self) -> None:
        """The caller hung up: stop everything this session started; turns still being transcribed start no reply."""
        self._ending = True
        self._drop_draft()
        self.detector.reset()  # drops a turn-model question still open (smart detector)
        if self._reply is not None:
            self._reply.cancel()
        if self._user is not None:
            if self._user.reader is not None:
                self._user.reader.cancel()
            with contextlib.suppress(Exception):
                await self._user.stream.close()
            self._user = None

    def emit(self, event: dict[str, Any]) -> None:
        """Queue an event for the caller, then hand it to the observers (metrics, records, cost). Queued first, so
        that events an observer emits in response reach the caller after the event they answer."""
        if self._tasks is not None:
            self._tasks.create_task(self._send_event(event))
        for observer in self.observers:
            try:
                observer({"session": self.id, **event})
            except Exception:  # an observer must never break a call
                log.exception("session observer failed on %s", event.get("type"))

    async def _send_event(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # a caller that went away is the receive loop's business
            await self.transport.send_event(event)

    # ---- input --------------------------------------------------------------------------------------------------

    async def _on_audio(self, frame: AudioFrame) -> None:
        if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
            self._resampler = Resampler(frame.sample_rate, STT_RATE)
        mono = self._resampler.process(frame.to_mono())
        if mono.num_frames == 0:
            return
        self._stream_clock = (mono.timestamp + mono.duration, time.monotonic())
        events = await self.detector.push(mono)
        if self._user is not None and self._user.in_pause and self.detector.in_speech and not self.detector.silent:
            await self._resume(self._user)  # (not at the turn's end, where the detector stops being silent too)
        if self._user is not None:
            await self._user.stream.send(mono)
            self._user.audio_s += mono.duration
        else:
            self._pre_roll.append(mono)
        for event in events:
            await self._on_turn_event(event)
        if self._user is not None and self._agent_speaking():
            self._maybe_barge_in()

    def _monotonic_of(self, stream_time: float) -> float:
        last_stream, last_mono = self._stream_clock
        return last_mono - max(0.0, last_stream - stream_time)

    async def _on_turn_event(self, event: TurnEvent) -> None:
        if event.kind == "speech_started":
            await self._open_user_turn()
            self.emit({"type": "speech_started", "time": event.time})
        elif event.kind == "silence" and self._user is not None:
            self._user.in_pause = True
            if isinstance(self._user.stream, SpeculativeSTTStream):
                await self._user.stream.pause()
        elif event.kind == "pause" and self._user is not None and self._user.pause_words is not None:
            self._maybe_draft(self._user)  # the STT had the words of this silence before it became a pause
        elif event.kind == "turn_ended" and self._user is not None:
            self.emit({"type": "turn_ended", "time": event.time})
            if self.auto_end_turns:
                ended = event.speech_end if event.speech_end is not None else event.time
                self._end_user_turn(self._monotonic_of(ended))

    async def _resume(self, user: _UserTurn) -> None:
        """The speaker went on after a pause: the pause's words are not the turn's, and a draft answers too little."""
        self._drop_draft()
        user.in_pause, user.pause_words = False, None
        if isinstance(user.stream, SpeculativeSTTStream):
            await user.stream.resume()

    def _end_user_turn(self, speech_end: float) -> None:
        user, self._user = self._user, None
        if user is None:
            return
        user.timeline.mark("speech_end", speech_end)
        user.timeline.mark("turn_decided")
        assert self._tasks is not None
        self._finishing = [t for t in self._finishing if not t.done()]
        self._finishing.append(self._tasks.create_task(self._finish_user_turn(user)))

    async def _open_user_turn(self) -> None:
        if self._user is not None:
            return
        stream = self.stack.stt.stream(STT_RATE)
        timeline = TurnTimeline(len(self.timelines) + 1)
        assert self._tasks is not None
        user = _UserTurn(stream, time.monotonic(), timeline)
        user.reader = self._tasks.create_task(self._read_transcripts(user))
        self._user = user
        for frame in self._pre_roll.take():
            await stream.send(frame)

    async def _read_transcripts(self, user: _UserTurn) -> None:
        try:
            async for transcript in user.stream:
                if transcript.is_final:
                    if not user.final.done():
                        user.final.set_result(transcript)
                    return
                user.interim = transcript.text
                if transcript.speculative:
                    user.pause_words = transcript.text
                self.detector.set_transcript(transcript.text)
                self.emit({"type": "transcript", "final": False, "text": transcript.text})
                self._maybe_draft(user)
                self._maybe_prefill(user)
        except VoxlineError as exc:
            self.emit({"type": "error", "source": "stt", "message": str(exc)})
        finally:
            if not user.final.done():
                user.final.set_result(Transcript(user.interim, is_final=True))

    async def _finish_user_turn(self, user: _UserTurn) -> None:
        """Turn ended: get the final transcript, then reply (or, during playback, decide on a barge-in)."""
        try:
            await user.stream.finalize()
            transcript = await user.final
        finally:  # off the reply's path: a provider's goodbye (a socket's closing handshake) can take a while
            assert self._tasks is not None
            self._tasks.create_task(close_quietly(user.stream))
        user.timeline.mark("final_transcript")
        text = transcript.text.strip()
        draft, self._draft = self._draft, None
        # A draft answers the conversation as it was in the pause: usable only if nothing was said since.
        usable = draft if draft is not None and draft.fits(text, len(self.conversation.messages)) \
            and not self._agent_speaking() else None
        handed: Draft | None = None
        try:
            handed = self._answer(user, text, usable)
        finally:
            if draft is not None and draft is not handed:
                draft.cancel()

    def _answer(self, user: _UserTurn, text: str, draft: Draft | None) -> Draft | None:
        """Reply to the final transcript (or decide on a barge-in); returns `draft` if the reply took it over."""
        self.emit({"type": "transcript", "final": True, "text": text})
        usage = {"type": "usage", "kind": "stt", "provider": self.stack.stt.name,
                 "audio_seconds": round(user.audio_s, 3)}
        speaking = self._agent_speaking()
        if speaking:
            if not self._is_interruption(text, time.monotonic() - user.started_at, final=True):
                self.emit(usage)  # a cough, an "mm-hm", the agent's own echo: not a turn
                self.emit({"type": "ignored", "text": text, "reason": "not an interruption"})
                return None
            if self.auto_respond:  # (without: the client decides, e.g. with response.cancel)
                self._interrupt()
            # This turn's cost, and its words, come after the playing reply's: it closes that turn's cost, and
            # what the caller heard of it was said before these words.
            self._after_replies(lambda: self.emit(usage))  # even at a hang-up: usage is money
        else:
            self.emit(usage)
        if is_no_speech(text):
            self.emit({"type": "ignored", "text": text, "reason": "no speech"})
            if user.audio_s >= NOT_UNDERSTOOD_AFTER_S and not self._agent_speaking():
                self._start_reply(None, user.timeline, phrase="not_understood")  # speech, but no words in it
            return None
        if not self.auto_respond:
            if speaking:
                self._waiting_user_texts.append(text)  # joins when the playing reply has recorded its words
                self._after_replies(self._add_waiting_users)
            else:
                self.conversation.add_user(text)
            return None
        self._start_reply(text, user.timeline, draft=draft)
        return draft

    def _maybe_draft(self, user: _UserTurn) -> None:
        """The words of a pause are in: start the reply's LLM on them while the detector still listens (see Draft)."""
        text = (user.pause_words if user.pause_words is not None else user.interim).strip()
        if (not self.config.agent.draft_replies or user is not self._user or not self.detector.paused
                or not (self.auto_end_turns and self.auto_respond) or self._agent_speaking() or is_no_speech(text)):
            return
        if self._draft is not None:
            if self._draft.fits(text, len(self.conversation.messages)):
                return
            self._drop_draft()
        assert self._tasks is not None
        tools = self.stack.tools
        user.timeline.drafts += 1
        self._draft = Draft(self.stack.llm, self.conversation.for_llm_with_user(text), text,
                            len(self.conversation.messages), tasks=self._tasks,
                            max_tokens=self.config.agent.max_tokens, temperature=self.config.agent.temperature,
                            tools=tools.specs() if tools is not None and len(tools) else [], tts=self.stack.tts,
                            voice=self.voice)

    def _maybe_prefill(self, user: _UserTurn) -> None:
        """Let a local LLM read the user's words while they speak, so the reply evaluates only the last ones. Not in
        a pause: the STT is decoding the pause's words then, and a draft reads them once they are in."""
        llm = self.stack.llm
        if (isinstance(llm, PrefillingLLM) and user is self._user and not user.in_pause and self._draft is None
                and self.auto_respond and not self._agent_speaking() and not is_no_speech(user.interim)):
            llm.prefill(self.conversation.for_llm_with_user(user.interim.strip()),
                        max_tokens=self.config.agent.max_tokens)

    def _drop_draft(self) -> None:
        if self._draft is not None:
            self._draft.cancel()
            self._draft = None

    # ---- barge-in -----------------------------------------------------------------------------------------------

    def _agent_speaking(self) -> bool:
        return self._reply is not None and not self._reply.done()

    def _is_interruption(self, text: str, speech_s: float, final: bool = False) -> bool:
        rules = self.config.barge_in
        if not rules.enabled:
            return False
        words = _words(text)
        if speech_s < rules.min_speech_s and not (final and len(words) >= max(rules.min_words, 2)):
            return False
        if len(words) < rules.min_words:
            return False
        if rules.ignore_backchannels and is_backchannel(text):
            return False
        return not (self._playout is not None and is_echo(text, self._playout.recent_text()))

    def _maybe_barge_in(self) -> None:
        user = self._user
        assert user is not None
        if self._is_interruption(user.interim, time.monotonic() - user.started_at):
            self._interrupt()

    def _interrupt(self) -> None:
        if self._reply is not None and not self._reply.done() and not self._reply.cancelling():
            self._reply.cancel()  # once: a second cancel would cut short its clean-up (the caller's `clear`)

    # ---- reply --------------------------------------------------------------------------------------------------

    def _start_reply(self, user_text: str | None, timeline: TurnTimeline, fixed_text: str | None = None,
                     phrase: str | None = None, draft: Draft | None = None) -> None:
        assert self._tasks is not None
        if self._ending:  # the caller hung up while this turn was being transcribed
            if draft is not None:
                draft.cancel()
            return
        earlier = [task for task in self._replies if not task.done()]
        for task in earlier:
            if not task.cancelling():  # not again: a second cancel would cut short its clean-up
                task.cancel()
        if user_text is not None:
            self._waiting_user_texts.append(user_text)
        self.timelines.append(timeline)
        timeline.drafted = draft is not None
        self._reply = self._tasks.create_task(self._run_reply(earlier, timeline, fixed_text, phrase, draft))
        if draft is not None:  # not adopted after all (the reply was cancelled first): stop its LLM and TTS
            self._reply.add_done_callback(lambda _: draft.cancel())
        self._replies = [*earlier, self._reply]

    async def _run_reply(self, earlier: list[asyncio.Task[None]], timeline: TurnTimeline, fixed_text: str | None,
                         phrase: str | None = None, draft: Draft | None = None) -> None:
        # The interrupted replies record what was heard before the user's new words join the conversation. A reply
        # cancelled meanwhile, even before it ran, leaves its user's words to the next one: none is lost.
        cancelled = await _outlive(earlier)
        self._add_waiting_users()
        if cancelled:
            raise asyncio.CancelledError
        self.emit({"type": "reply_started", "turn": timeline.turn})
        playout = Playout(self.transport, timeline)
        self._playout = playout
        record = self._record = ReplyRecord(self.conversation)
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        interrupted = False
        try:
            failed = False
            try:
                if phrase is not None:
                    await self._play_phrase(playout, phrase)
                else:
                    async with asyncio.TaskGroup() as reply:
                        reply.create_task(self._generate(pieces, record, timeline, fixed_text, draft))
                        reply.create_task(self._speak(pieces, playout, timeline, draft))
                    self._recoveries.ok()
            except* VoxlineError as group:
                failed = True
                self.emit({"type": "error", "source": "reply", "message": "; ".join(map(str, group.exceptions))})
            if failed and not playout.spans:  # nothing was said: apologise at once, from memory
                record.close([])  # a tool call's preamble, if any, was not heard either
                record = self._record = ReplyRecord(self.conversation)
                playout = self._playout = Playout(self.transport, timeline)
                await self._play_phrase(playout, "error")
            await playout.drain()
            timeline.mark("playback_finished")
        except asyncio.CancelledError:
            interrupted = True
            await playout.stop()
            timeline.mark("interrupted")
            raise
        finally:
            heard_pieces = playout.heard_pieces()
            heard = join_heard(heard_pieces)
            record.close(heard_pieces)
            if interrupted:
                self.emit({"type": "interrupted", "heard": heard, "planned": playout.text_so_far()})
            self.emit({"type": "agent_done", "text": heard, "interrupted": interrupted})
            self.emit(timeline.as_event())

    async def _play_phrase(self, playout: Playout, key: str) -> None:
        """Play a fallback phrase synthesized at start-up (no provider involved), within the recovery budget."""
        phrases = self.stack.phrases
        if phrases is None or not phrases.ready or not self._recoveries.take():
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(playout.run())
            try:
                playout.begin_piece(phrases.text(key))
                self.emit({"type": "agent_text", "text": phrases.text(key), "phrase": key})
                async for frame in phrases.play(key):
                    await playout.put(frame)
                await playout.end_piece()
            finally:
                playout.close()

    async def _generate(self, pieces: asyncio.Queue[str | None], record: ReplyRecord, timeline: TurnTimeline,
                        fixed_text: str | None, draft: Draft | None = None) -> None:
        """LLM tokens -> speakable pieces, queued for the TTS as soon as each is complete (the first round from
        `draft` when the reply was drafted in the pause); tool-call rounds go to `record`."""
        splitter = SentenceSplitter()

        async def say(piece: str) -> None:
            record.pieces += 1
            await pieces.put(piece)

        try:
            if fixed_text is not None:
                for piece in splitter.push(fixed_text) + splitter.flush():
                    await say(piece)
                return
            tools = self.stack.tools
            specs = tools.specs() if tools is not None and len(tools) else []
            for _ in range(MAX_TOOL_ROUNDS + 1):
                said, calls = [], []
                stream = draft.replay() if draft is not None else self.stack.llm.stream(
                    self.conversation.for_llm(), max_tokens=self.config.agent.max_tokens,
                    temperature=self.config.agent.temperature, tools=specs)
                draft = None
                async for delta in stream:
                    if delta.text:
                        timeline.mark("llm_first_token")
                        said.append(delta.text)
                        for piece in splitter.push(delta.text):
                            timeline.mark("first_sentence")
                            await say(piece)
                    if delta.tool_call is not None:
                        calls.append(delta.tool_call)
                    if delta.input_tokens is not None or delta.output_tokens is not None:
                        self.emit({"type": "usage", "kind": "llm", "provider": self.stack.llm.name,
                                   "input_tokens": delta.input_tokens, "output_tokens": delta.output_tokens})
                if not calls or tools is None:
                    break
                for piece in splitter.flush():  # what was said before the call is spoken while the tools run
                    await say(piece)
                await self._run_tools(tools, "".join(said), calls, say, record)
            for piece in splitter.flush():
                timeline.mark("first_sentence")
                await say(piece)
        finally:
            pieces.put_nowait(None)

    async def _run_tools(self, tools: ToolBox, said: str, calls: list[ToolCall],
                         say: Callable[[str], Awaitable[None]], record: ReplyRecord) -> None:
        """Run the calls the LLM asked for (cancelled with the reply on barge-in); if they are slow, say a filler
        meanwhile. Calls and results join the conversation, so the next LLM round (and later turns) see them; the
        call's message holds `said` until the reply ends and keeps what was heard of it (`ReplyRecord`)."""
        for call in calls:
            self.emit({"type": "tool_call", "name": call.name, "arguments": call.arguments})
        running = [tools.start(call) for call in calls]
        try:
            done, _ = await asyncio.wait(running, timeout=FILLER_AFTER_S)
            if len(done) < len(running):
                await say(FILLER)
            results = [await task for task in running]
        finally:
            for task in running:
                task.cancel()
        record.tool_round(ToolBox.assistant_message(said, calls))
        for result in results:
            self.conversation.messages.append(result.message())
            self.emit({"type": "tool_result", "name": result.call.name, "error": result.is_error,
                       "seconds": round(result.seconds, 3)})
            if result.ends_call:
                self.end_requested.set()

    async def _speak(self, pieces: asyncio.Queue[str | None], playout: Playout, timeline: TurnTimeline,
                     draft: Draft | None = None) -> None:
        """Synthesize piece after piece (the first from `draft` if it synthesized it in the pause); playout paces the
        audio out while the next piece is synthesized."""
        tts = self.stack.tts
        voice = self.voice
        async with asyncio.TaskGroup() as group:
            group.create_task(playout.run())
            try:
                while (piece := await pieces.get()) is not None:
                    self.emit({"type": "agent_text", "text": piece})
                    self.emit({"type": "usage", "kind": "tts", "provider": tts.name, "characters": len(piece)})
                    playout.begin_piece(piece)
                    drafted = draft.speech(piece, voice) if draft is not None else None
                    async for frame in drafted or tts.synthesize(piece, voice=voice):
                        timeline.mark("tts_first_audio")
                        await playout.put(frame)
                    await playout.end_piece()
            finally:
                playout.close()

    # ---- client events ------------------------------------------------------------------------------------------

    async def _on_client_event(self, event: ClientEvent) -> None:
        """Control from the caller's side: typed turns, playback reports, and the manual controls that the OpenAI
        Realtime protocol needs (commit, respond, truncate, configure)."""
        data = event.data
        if event.type == "text":
            text = str(data.get("text", "")).strip()
            if not text:
                return
            if data.get("respond", True):
                self._interrupt()
                self._start_reply(text, TurnTimeline(len(self.timelines) + 1))
            else:
                self.conversation.add_user(text)
        elif event.type == "respond":
            self._interrupt()
            committed = [t for t in self._finishing if not t.done()]
            if committed:  # the words just committed are still being transcribed: answer them, not the turn before
                assert self._tasks is not None
                self._tasks.create_task(self._respond_after(committed))
            else:
                self._start_reply(None, TurnTimeline(len(self.timelines) + 1))
        elif event.type == "commit":
            self._end_user_turn(time.monotonic())
            self.detector.reset()  # what the caller says next is a new turn, with its own speech_started
        elif event.type == "clear_input":
            if self._user is not None:
                user, self._user = self._user, None
                if user.reader is not None:
                    user.reader.cancel()
                await user.stream.close()
                self.detector.reset()
            self._drop_draft()
            self._pre_roll.clear()
        elif event.type in ("playback", "truncate"):
            played = data.get("played_ms")
            if isinstance(played, int | float) and self._playout is not None:
                self._playout.report_played(played / 1000)
                if event.type == "truncate":  # the caller stopped playback there
                    if self._agent_speaking():
                        self._interrupt()  # the reply keeps the words up to the reported position
                    else:
                        self._rewrite_last_reply(played / 1000)
        elif event.type == "interrupt":
            self._interrupt()
        elif event.type == "configure":
            self._configure(data)
        elif event.type == "dtmf":
            self.emit({"type": "dtmf", "digit": str(data.get("digit", ""))})

    def _after_replies(self, action: Callable[[], None]) -> None:
        """Run `action` once the replies running now are done, even if the call ends meanwhile."""
        running = [t for t in self._replies if not t.done()]

        async def later() -> None:
            cancelled = await _outlive(running)
            action()
            if cancelled:
                raise asyncio.CancelledError

        assert self._tasks is not None
        self._tasks.create_task(later())

    def _add_waiting_users(self) -> None:
        for text in self._waiting_user_texts:
            self.conversation.add_user(text)
        self._waiting_user_texts.clear()

    async def _respond_after(self, committed: list[asyncio.Task[None]]) -> None:
        await asyncio.wait(committed)
        self._start_reply(None, TurnTimeline(len(self.timelines) + 1))

    def _rewrite_last_reply(self, played_s: float) -> None:
        """The caller says it played only `played_s` of the last reply: keep only those words in the context."""
        if self._playout is not None and self._record is not None:
            self._record.rewrite(self._playout.heard_pieces(played_s))

    def _configure(self, data: dict[str, Any]) -> None:
        if isinstance(prompt := data.get("system_prompt"), str):
            self.conversation.system_prompt = prompt
        if "voice" in data:
            self.voice = data["voice"] or None
        if isinstance(turn := data.get("turn"), dict) and turn:
            try:
                options = turn_options(turn, self.turn_options)
                if options != self.turn_options:
                    self.detector = self.stack.turn_detector(options)
                    self.turn_options = options
            except (VoxlineError, ValueError) as exc:  # an unknown key, a wrong type, a detector that cannot load
                self.emit({"type": "error", "source": "configure", "message": f"turn options not applied: {exc}"})
        for flag in ("auto_end_turns", "auto_respond"):
            if isinstance(data.get(flag), bool):
                setattr(self, flag, data[flag])
