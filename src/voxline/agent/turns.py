"""Turn detection: when did the user start talking, pause, and finish their turn?

Three detectors behind one `TurnDetector` protocol, chosen by `TurnOptions.detector`:

- `energy`: RMS level over 20 ms windows, 0.3 s of silence ends the turn. No model; the baseline.
- `silero`: Silero VAD probabilities with silence endpointing (`silence_s`, 0.8 s by default).
- `smart`:  Silero + Smart Turn + the interim transcript. At each pause (`pause_s` of silence) the turn
  model's verdict on the turn so far and the transcript of the pause (`transcript_signal`) say whether the turn
  sounds and reads as finished (a confident verdict asked `model_lead_s` before the pause counts at once).
  Tiers: model confident AND words complete -> the turn ends at once; words complete, model unsure -> after
  `complete_silence_s`; words incomplete or model confidently "not done" -> only at `max_silence_s`; no usable
  transcript yet -> after `unknown_silence_s`, like silence endpointing. Read or hesitant speech pauses
  mid-sentence in a way that *sounds* final to an acoustic model alone; the words say otherwise, and the model
  is unsure at many true ends of read sentences, where the words are clear.

Every detector also reports the start of each silent stretch inside a turn: `silence` after `silence_event_s` (the
session starts the STT's speculative final there, so the words are in early), `pause` after `pause_s`.

The decisions live in small pure state machines (`Endpointer`, `SmartEndpointer`) fed with (time, duration,
probability) per VAD window, so they are testable with synthetic sequences and no audio library. The detector
classes only turn frames into windows, keep the turn audio for the model, and stamp stream times
(`frame.timestamp` + offset of the window end). Measured choice of defaults: docs/turn-taking.md,
bench/turns.py.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError
from voxline.providers.base import VAD, TurnModel, VADStream

EventKind = Literal["speech_started", "silence", "pause", "turn_ended"]


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """Something the detector became sure of, at `time` (stream seconds) - the decision time, not a guess of
    the past: `turn_ended` at 3.1 means "at 3.1 s of stream time the turn was known to be over"."""

    kind: EventKind
    time: float
    speech_end: float | None = None
    """On `turn_ended`: when the last speech of the turn ended (stream seconds), for latency timelines."""


@runtime_checkable
class TurnDetector(Protocol):
    """Per-caller turn detector: push 16 kHz mono frames (any size), read the events each push makes true."""

    async def push(self, frame: AudioFrame) -> list[TurnEvent]: ...

    def set_transcript(self, text: str) -> None:
        """Latest interim transcript of the current turn (detectors that do not read words ignore it)."""

    def reset(self) -> None: ...

    @property
    def in_speech(self) -> bool:
        """True between `speech_started` and `turn_ended`."""

    @property
    def silent(self) -> bool:
        """True inside a turn from its `silence` event until the user speaks again or the turn ends."""

    @property
    def paused(self) -> bool:
        """True inside a turn from its `pause` event until the user speaks again or the turn ends."""


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """How turns are detected. Defaults are the measured choice of bench/turns.py (docs/turn-taking.md)."""

    detector: Literal["energy", "silero", "smart"] = "smart"
    """Which detector: `energy` (no model), `silero` (VAD + silence) or `smart` (VAD + Smart Turn +
    transcript)."""

    threshold: float = 0.5
    """Silero probability at or above which a window is speech; speech ends below `threshold - 0.15`."""

    energy_threshold: float = 0.01
    """Energy detector: RMS level (fraction of full scale, 0.01 = -40 dBFS) at or above which a window is
    speech."""

    start_s: float = 0.2
    """Speech needed before `speech_started` (shorter blips - coughs, clicks - never start a turn)."""

    silence_s: float = 0.8
    """Silero detector: silence after speech that ends the turn (0.8: fewer mid-sentence ends than 0.6 for
    0.2 s more delay; only ~1.5 s avoids them on read speech, see docs/turn-taking.md)."""

    energy_silence_s: float = 0.3
    """Energy detector: silence after speech that ends the turn."""

    pause_s: float = 0.35
    """Silence after speech that counts as a pause: the `pause` event, and when the smart detector asks its
    model. 0.35 rather than 0.25 since the words come at `silence_event_s`: at 0.25 the model and the early words
    together ended 20 of 60 two-part turns too early against 17 at 0.35, for the same median delay
    (docs/turn-taking.md)."""

    silence_event_s: float = 0.1
    """Silence after speech that emits the `silence` event, on which the session has the STT decode the turn so far
    as its possible final: the words of a turn that ends in this pause are then known `pause_s - silence_event_s`
    (0.25 s) sooner than if the decode waited for `pause_s` (see docs/turn-taking.md). Not above `pause_s`."""

    model_lead_s: float = 0.064
    """Smart detector: how long before the pause Smart Turn is first asked. A confident early verdict
    (>= `turn_threshold`) stands, so a turn it ends at the pause is decided there rather than one model call (25-40
    ms on 2 cores, more under load) after it. Any other is asked again at the pause, hearing the whole silence, and
    that verdict counts: heard 0.064 s sooner, Smart Turn said "not done" on dev turns it was only unsure about at
    the pause (docs/turn-taking.md). 0: ask at the pause only."""

    max_silence_s: float = 1.6
    """Smart detector: the turn ends after this much silence even if model or transcript say it is not
    over (the wait when the words end in "and", "the", ... or the model is sure it is not done)."""

    turn_threshold: float = 0.8
    """Smart detector: Smart Turn probability at or above which the model counts as confident the turn is
    over; with a complete transcript the turn then ends at the pause itself."""

    complete_silence_s: float = 0.6
    """Smart detector: silence after which the turn ends when the transcript reads complete but the model is
    unsure (between `not_done_threshold` and `turn_threshold`). Capped by `max_silence_s`."""

    not_done_threshold: float = 0.2
    """Smart detector: Smart Turn probability below which the model counts as sure the turn is NOT over:
    the detector then waits for `max_silence_s` whatever the words say."""

    unknown_silence_s: float = 0.8
    """Smart detector: silence after which the turn ends when no transcript of the pause has arrived (or it
    has no punctuation to go by): silence endpointing, as `silero` does. Capped by `max_silence_s`."""

    use_transcript: bool = True
    """Smart detector: read the interim transcript (False: model only - end at the pause if the model is
    confident, else at `max_silence_s`)."""

    def __post_init__(self) -> None:
        for key in ("start_s", "silence_s", "energy_silence_s", "pause_s", "silence_event_s", "max_silence_s",
                    "complete_silence_s", "unknown_silence_s"):
            value = getattr(self, key)
            if not 0.0 < value <= 10.0:
                raise ConfigError(f"turn option {key} must be in (0, 10] seconds, got {value}")
        for key in ("threshold", "energy_threshold", "turn_threshold", "not_done_threshold"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"turn option {key} must be in [0, 1], got {value}")
        if self.not_done_threshold > self.turn_threshold:
            raise ConfigError(f"not_done_threshold ({self.not_done_threshold}) must not be above turn_threshold "
                              f"({self.turn_threshold})")
        if self.silence_event_s > self.pause_s:
            raise ConfigError(f"silence_event_s ({self.silence_event_s}) must not be longer than pause_s "
                              f"({self.pause_s})")
        if not 0.0 <= self.model_lead_s <= self.pause_s:
            raise ConfigError(f"model_lead_s must be in [0, pause_s ({self.pause_s})], got {self.model_lead_s}")
        if self.max_silence_s < self.pause_s:
            raise ConfigError(f"max_silence_s ({self.max_silence_s}) must not be shorter than pause_s "
                              f"({self.pause_s})")


# ---- the transcript signal
# ------------------------------------------------------------------------------------------

TranscriptSignal = Literal["complete", "incomplete", "unknown"]

# Words after which an English sentence is (almost) never over: conjunctions, articles, prepositions that need
# an object, possessives, subject pronouns and hesitation fillers. Kept short on purpose: each one must be
# explainable.
CONTINUATION_WORDS = frozenset("""
and but or nor so because cause if when while whereas unless until than then
the a an this these those my your our their his its
to of with from into onto about by as at for
i we they he she i'm we're they're it's there's
um uh er erm ah mm like
""".split())

QUESTION_ENDINGS = frozenset("to of with from into onto about by as at for i we they he she like then so".split())
"""Continuation words a question can end in ("Where is it from?", "Who am I?", "And then?"); not articles,
possessives, fillers or most conjunctions ("Can you tell me about the?" is not over)."""
CLOSING_AFTER = {
    "so": frozenset("""do does did doing done think thought hope guess suppose believe imagine expect fear afraid
                       say says said told seem seems seemed appear appears not even just quite""".split()),
    "then": frozenset("since until till by before back even only just".split()),
}
"""Words that, among the two before it, make a continuation word close the sentence after all: "I think so.", "I told
you so.", "since then."."""

_WORD = re.compile(r"[a-z0-9']+")


def transcript_signal(text: str) -> TranscriptSignal:
    """Does the transcript so far read as a finished turn?

    `incomplete`: it ends in a continuation word ("and", "the", "to", "um", ...) whatever punctuation the
    recogniser put after it, or in a comma, dash, colon or ellipsis. `complete`: it ends in ". ! ?" after any
    other word, or after a continuation word that closes the sentence: a question may end in one ("Where is it
    from?"), and "so" and "then" stand for a whole clause after some words ("I think so.", "since then.").
    `unknown`: empty, or no punctuation to go by.
    """
    stripped = text.strip().strip('"\'”“’)] ')
    if not stripped:
        return "unknown"
    words = _WORD.findall(stripped.lower().replace("’", "'"))
    if words and words[-1] in CONTINUATION_WORDS and not _closes(words, stripped):
        return "incomplete"
    if stripped.endswith(("...", "…", ",", "-", "–", "—", ":", ";")):
        return "incomplete"
    if stripped.endswith((".", "!", "?")):
        return "complete"
    return "unknown"


def _closes(words: list[str], stripped: str) -> bool:
    """Whether the continuation word that ends `words` closes the sentence (see `transcript_signal`)."""
    last = words[-1]
    if stripped.endswith("?"):
        return last in QUESTION_ENDINGS
    return stripped.endswith((".", "!")) and any(w in CLOSING_AFTER.get(last, ()) for w in words[-3:-1])


# ---- the state machines (pure)
# --------------------------------------------------------------------------------------


@dataclass
class Endpointer:
    """Silence endpointing over VAD windows: idle -> (start_s of speech) -> in speech -> (silence_s) -> idle.

    Feed `step(time, duration, probability)` per VAD window, `time` being the window's end. Before the turn
    starts, speech accumulates and a gap longer than `start_reset_s` starts the count over. In speech, a
    window is silence below `threshold - hysteresis` and speech again at `threshold` or more (in between it
    keeps its state), as Silero's own iterator does, so a flickering probability does not split a pause.
    """

    threshold: float = 0.5
    """Probability at or above which a window is speech."""
    start_s: float = 0.2
    """Speech needed before speech_started."""
    silence_s: float = 0.6
    """Silence that ends the turn."""
    pause_s: float = 0.35
    """Silence that emits one `pause` per silent stretch (none if it is not shorter than silence_s)."""
    silence_event_s: float = 0.1
    """Silence that emits one `silence` per silent stretch, before its `pause` (none if the turn ends first)."""
    hysteresis: float = 0.15
    """In speech, windows count as silence only below threshold - hysteresis."""
    start_reset_s: float = 0.3
    """Before the turn starts: a gap this long throws away the speech counted so far."""

    in_speech: bool = False
    """Between speech_started and turn_ended."""
    now: float = 0.0
    """End time of the last window seen."""
    speech_start: float | None = None
    """When the speech that started (or is starting) the turn began."""
    speech_end: float | None = None
    """When the current silent stretch began (None while speech goes on)."""
    _speech_run: float = 0.0
    _gap_run: float = 0.0
    _silence_run: float = 0.0
    _silent: bool = False
    _paused: bool = False

    def reset(self) -> None:
        self.in_speech, self.speech_start, self.speech_end = False, None, None
        self._speech_run = self._gap_run = self._silence_run = 0.0
        self._silent = self._paused = False

    @property
    def silent(self) -> bool:
        return self.in_speech and self._silent

    @property
    def paused(self) -> bool:
        return self.in_speech and self._paused

    @property
    def silence(self) -> float:
        """Length of the current silent stretch inside a turn (0 while speaking or idle)."""
        return self._silence_run

    def step(self, time: float, duration: float, probability: float) -> list[TurnEvent]:
        self.now = time
        return self._in_turn(time, duration, probability) if self.in_speech else self._idle(time, duration,
                                                                                              probability)

    def end_turn(self, time: float) -> list[TurnEvent]:
        """End the current turn now (used by smarter policies); nothing if no turn is running."""
        if not self.in_speech:
            return []
        speech_end = self.speech_end
        self.reset()
        return [TurnEvent("turn_ended", time, speech_end)]

    def _idle(self, time: float, duration: float, probability: float) -> list[TurnEvent]:
        if probability >= self.threshold:
            if self._speech_run == 0.0:
                self.speech_start = time - duration
            self._speech_run += duration
            self._gap_run = 0.0
            if self._speech_run >= self.start_s - 1e-9:
                self.in_speech, self.speech_end = True, None
                self._silence_run, self._silent, self._paused = 0.0, False, False
                return [TurnEvent("speech_started", time)]
        elif self._speech_run > 0.0:
            self._gap_run += duration
            if self._gap_run >= self.start_reset_s:
                self._speech_run = self._gap_run = 0.0
                self.speech_start = None
        return []

    def _in_turn(self, time: float, duration: float, probability: float) -> list[TurnEvent]:
        silent = self._silence_run > 0.0
        if probability >= self.threshold:
            silent = False
        elif probability < self.threshold - self.hysteresis:
            silent = True
        if not silent:
            self._silence_run, self.speech_end, self._silent, self._paused = 0.0, None, False, False
            return []
        if self._silence_run == 0.0:
            self.speech_end = time - duration
        self._silence_run += duration
        # Silence is counted in whole windows (32 ms for Silero): end at the window nearest to `silence_s`, not at the
        # first one past it, which would add up to a window of latency to every turn.
        if self._silence_run >= self.silence_s - duration / 2:
            return self.end_turn(time)
        events: list[TurnEvent] = []
        if not self._silent and self._silence_run >= self.silence_event_s - duration / 2:
            self._silent = True
            events.append(TurnEvent("silence", time))
        if not self._paused and self._silence_run >= self.pause_s - duration / 2:
            self._paused = True
            events.append(TurnEvent("pause", time))
        return events


@dataclass
class SmartEndpointer(Endpointer):
    """Endpointer whose turn may end before `silence_s` (here: the cap) when model and words allow it.

    After a `pause` the owner sets `turn_probability` (Smart Turn's verdict on the turn so far). From then on,
    every window of the same silent stretch asks `end_after()` how much silence this pause needs, from the
    verdict and the latest transcript set after the speech stopped (an older one is stale):

    1. verdict >= `turn_threshold` and words `complete`: none - the turn ends at once;
    2. words `complete`, verdict in [`not_done_threshold`, `turn_threshold`): `complete_silence_s`;
    3. words `incomplete`, or verdict < `not_done_threshold`: `silence_s` (the cap);
    4. no fresh transcript, or one without punctuation: `unknown_silence_s`.

    A transcript arriving late (STT lag) moves the deadline at the window where it is first seen, so a late
    "complete" still ends the turn early and a late "incomplete" still holds it. Speech again clears the
    verdict. Before the model has answered, only the cap ends the turn.
    """

    turn_threshold: float = 0.8
    """Smart Turn probability that counts as confident (tier 1)."""
    complete_silence_s: float = 0.6
    """Silence needed when the words are complete but the model unsure (tier 2)."""
    not_done_threshold: float = 0.2
    """Smart Turn probability below which the turn waits for the cap (tier 3)."""
    unknown_silence_s: float = 0.8
    """Silence needed without a usable transcript (tier 4)."""
    use_transcript: bool = True
    """Read the transcript; False reproduces "model alone" endpointing (at the pause if confident, else cap)."""

    turn_probability: float | None = None
    """The model's verdict for the current silent stretch (None: not asked yet)."""
    transcript: str = ""
    """Latest interim transcript of the turn."""
    transcript_time: float = -1.0
    """Stream time (`now`) when the transcript was last set."""

    def reset(self) -> None:
        super().reset()
        self.turn_probability = None
        self.transcript, self.transcript_time = "", -1.0

    def set_transcript(self, text: str) -> None:
        self.transcript, self.transcript_time = text, self.now

    def words(self) -> TranscriptSignal:
        """What the transcript of the current pause says (`unknown` if none was set since the speech stopped)."""
        if self.speech_end is None or self.transcript_time < self.speech_end - 1e-9:
            return "unknown"
        return transcript_signal(self.transcript)

    def end_after(self) -> float:
        """Silence (seconds since the speech stopped) after which the current pause ends the turn, given what
        is known now; `silence_s` (the cap) until the model has answered."""
        p = self.turn_probability
        if p is None:
            return self.silence_s
        if not self.use_transcript:
            return 0.0 if p >= self.turn_threshold else self.silence_s
        words = self.words()
        if words == "incomplete" or p < self.not_done_threshold:
            return self.silence_s
        if words == "complete":
            return 0.0 if p >= self.turn_threshold else min(self.complete_silence_s, self.silence_s)
        return min(self.unknown_silence_s, self.silence_s)

    def ready_to_end(self) -> bool:
        """Whether the turn may end at this point of a pause."""
        if not self.in_speech or self.speech_end is None or self.turn_probability is None:
            return False
        return self.silence >= self.end_after() - 1e-9

    def step(self, time: float, duration: float, probability: float) -> list[TurnEvent]:
        events = super().step(time, duration, probability)
        if self.speech_end is None:
            self.turn_probability = None  # speech again: the old verdict is stale
        if self.ready_to_end():
            events += self.end_turn(time)  # reset() also drops the transcript: its words belong to this turn
        return events


# ---- detectors: frames -> windows -> state machine
# ------------------------------------------------------------------


class _WindowedStream(Protocol):
    async def windows(self, frame: AudioFrame) -> list[tuple[int, float]]: ...

    def reset(self) -> None: ...


class _PerFrameStream:
    """Adapter for a foreign `VADStream` without `windows()`: one probability per pushed frame."""

    def __init__(self, stream: VADStream) -> None:
        self._stream = stream

    async def windows(self, frame: AudioFrame) -> list[tuple[int, float]]:
        return [(frame.num_frames, await self._stream.probability(frame))] if frame.num_frames else []

    def reset(self) -> None:
        self._stream.reset()


def _windowed(vad: VAD) -> _WindowedStream:
    stream = vad.stream()
    return stream if hasattr(stream, "windows") else _PerFrameStream(stream)  # type: ignore[return-value]


class VADTurnDetector:
    """A VAD stream feeding an `Endpointer`: the energy and Silero detectors (see the factories below)."""

    def __init__(self, vad: VAD, machine: Endpointer) -> None:
        self._vad = vad
        self._stream = _windowed(vad)
        self.machine = machine
        self._clock: float | None = None
        self._transcript = ""

    @property
    def in_speech(self) -> bool:
        return self.machine.in_speech

    @property
    def silent(self) -> bool:
        return self.machine.silent

    @property
    def paused(self) -> bool:
        return self.machine.paused

    def set_transcript(self, text: str) -> None:
        self._transcript = text

    def reset(self) -> None:
        self._stream.reset()
        self.machine.reset()
        self._clock = None
        self._transcript = ""

    def _base_time(self, frame: AudioFrame) -> float:
        """Stream time of the frame's first sample: its timestamp, unless timestamps are missing or go
        backwards (then the running sample clock)."""
        base = frame.timestamp if self._clock is None else max(frame.timestamp, self._clock)
        self._clock = base + frame.duration
        return base

    async def push(self, frame: AudioFrame) -> list[TurnEvent]:
        base = self._base_time(frame)
        events: list[TurnEvent] = []
        previous = 0
        for end, probability in await self._stream.windows(frame):
            size = getattr(self._stream, "window_samples", None) or max(end - previous, 1)
            previous = end
            events += await self._on_window(base + end / frame.sample_rate, size / frame.sample_rate,
                                            probability, frame)
        return events

    async def _on_window(self, time: float, duration: float, probability: float,
                         frame: AudioFrame) -> list[TurnEvent]:
        return self.machine.step(time, duration, probability)


class SmartTurnDetector(VADTurnDetector):
    """Silero + Smart Turn + transcript: ends the turn at a pause as soon as `SmartEndpointer`'s tiers allow,
    at the latest after `max_silence_s`."""

    def __init__(self, vad: VAD, model: TurnModel, options: TurnOptions | None = None) -> None:
        o = options or TurnOptions(detector="smart")
        machine = SmartEndpointer(threshold=o.threshold, start_s=o.start_s, silence_s=o.max_silence_s,
                                  pause_s=o.pause_s, silence_event_s=o.silence_event_s,
                                  turn_threshold=o.turn_threshold,
                                  complete_silence_s=o.complete_silence_s,
                                  not_done_threshold=o.not_done_threshold,
                                  unknown_silence_s=o.unknown_silence_s, use_transcript=o.use_transcript)
        super().__init__(vad, machine)
        self.smart: SmartEndpointer = self.machine  # type: ignore[assignment]
        self._model = model
        self._audio: deque[AudioFrame] = deque()  # recent audio, kept to the last `keep_s`
        self._audio_s = 0.0
        self.keep_s = 8.5
        self.early_s = o.pause_s - o.model_lead_s if o.model_lead_s > 0 else None
        """Silence after which the model is first asked about the current pause (None: only at the pause)."""
        self._early: asyncio.Future[float] | None = None  # the early verdict in the making

    def set_transcript(self, text: str) -> None:
        self.smart.set_transcript(text)

    def reset(self) -> None:
        super().reset()
        self._audio.clear()
        self._audio_s = 0.0
        self._forget_early()

    async def push(self, frame: AudioFrame) -> list[TurnEvent]:
        self._audio.append(frame)
        self._audio_s += frame.duration
        while len(self._audio) > 1 and self._audio_s - self._audio[0].duration >= self.keep_s:
            self._audio_s -= self._audio.popleft().duration
        return await super().push(frame)

    def turn_audio(self, end: float) -> AudioFrame:
        """The current turn's audio (from 0.2 s before its speech began) up to stream time `end`."""
        mono = [f.to_mono() for f in self._audio]
        audio = AudioFrame.concat(mono).with_timestamp(self._clock - self._audio_s if self._clock else 0.0)
        start = (self.smart.speech_start or audio.timestamp) - 0.2
        return audio.slice(max(0.0, start - audio.timestamp), end - audio.timestamp)

    async def _on_window(self, time: float, duration: float, probability: float,
                         frame: AudioFrame) -> list[TurnEvent]:
        smart = self.smart
        events = smart.step(time, duration, probability)
        if smart.speech_end is None:
            self._forget_early()  # speech again (or the turn is over): the question is moot
        elif (self.early_s is not None and self._early is None and smart.turn_probability is None
              and not smart.paused and smart.silence >= self.early_s - duration / 2):
            audio = self.turn_audio(time)
            if audio.num_frames:
                self._early = asyncio.ensure_future(self._model.completion_probability(audio))
        if not any(e.kind == "pause" for e in events):
            return events
        early, self._early = self._early, None
        verdict = await early if early is not None else None  # mostly in already: asked `model_lead_s` ago
        if verdict is None or verdict < smart.turn_threshold:  # none, or unsure: ask again, with the whole pause
            audio = self.turn_audio(time)
            if audio.num_frames:
                verdict = await self._model.completion_probability(audio)
        if verdict is not None:
            smart.turn_probability = verdict
            if smart.ready_to_end():
                events += smart.end_turn(time)
        return events

    def _forget_early(self) -> None:
        early, self._early = self._early, None
        if early is not None and not early.cancel() and not early.cancelled():
            early.exception()  # a failure nobody waits for any more: retrieved, so asyncio does not log it


class EnergyTurnDetector(VADTurnDetector):
    """The seed's detector: RMS >= `energy_threshold` is speech, `start_s` starts a turn, `energy_silence_s`
    of silence ends it. Needs no model."""

    def __init__(self, options: TurnOptions | None = None) -> None:
        from voxline.providers.energy import EnergyVAD

        o = options or TurnOptions(detector="energy")
        super().__init__(EnergyVAD(o.energy_threshold),
                         Endpointer(threshold=0.5, start_s=o.start_s, silence_s=o.energy_silence_s,
                                    pause_s=o.pause_s, silence_event_s=o.silence_event_s))


class SileroTurnDetector(VADTurnDetector):
    """Silero VAD (shared, batched) + silence endpointing after `silence_s`."""

    def __init__(self, vad: VAD, options: TurnOptions | None = None) -> None:
        o = options or TurnOptions(detector="silero")
        super().__init__(vad, Endpointer(threshold=o.threshold, start_s=o.start_s, silence_s=o.silence_s,
                                         pause_s=o.pause_s, silence_event_s=o.silence_event_s))


def make_turn_detector(options: TurnOptions, vad: VAD | None = None,
                       model: TurnModel | None = None) -> VADTurnDetector:
    """Build one session's detector. `vad` and `model` are the process-wide Silero and Smart Turn instances:
    pass them so every session shares one of each (they are created here only when missing)."""
    if options.detector == "energy":
        return EnergyTurnDetector(options)
    if vad is None:
        from voxline.providers.silero import SileroVAD
        vad = SileroVAD()
    if options.detector == "silero":
        return SileroTurnDetector(vad, options)
    if options.detector == "smart":
        if model is None:
            from voxline.providers.smart_turn import SmartTurnModel
            model = SmartTurnModel()
        return SmartTurnDetector(vad, model, options)
    raise ConfigError(f"unknown turn detector {options.detector!r}; use energy, silero or smart")
