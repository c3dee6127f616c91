"""The small typed interfaces every provider implements, local models and cloud vendors alike.

All streaming methods are async iterators: a consumer stops a provider by cancelling the task that iterates it (that
is how barge-in works), so providers must release their resources in `finally` blocks and never swallow
`asyncio.CancelledError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from voxline.audio.frame import AudioFrame

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised or spoken word with its time span in seconds (relative to its utterance)."""

    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class Segment:
    """A timed piece of a transcript (a Whisper segment, a Deepgram alternative)."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcription result. Interim results may change; a final one will not."""

    text: str
    is_final: bool
    segments: tuple[Segment, ...] = ()
    language: str | None = None
    duration: float = 0.0
    # Deepgram's speech_final: the provider itself believes the speaker finished the turn.
    speech_final: bool = False
    # An interim that is the turn's final should the turn end in the current pause (`SpeculativeSTTStream.pause()`);
    # later interims of the same pause only re-read its silence.
    speculative: bool = False


@dataclass(slots=True)
class Message:
    """One entry of a conversation, in the shape chat LLM APIs share."""

    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call requested by the LLM, complete with parsed JSON arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LLMDelta:
    """One streamed piece of an LLM reply: text, a finished tool call, or the final usage figures."""

    text: str = ""
    tool_call: ToolCall | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


@runtime_checkable
class STTStream(Protocol):
    """One live recognition stream: push frames, read interim and final transcripts."""

    async def send(self, frame: AudioFrame) -> None: ...

    async def finalize(self) -> None:
        """The turn ended: flush what is buffered and emit a final transcript for it."""

    async def close(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[Transcript]: ...


@runtime_checkable
class SpeculativeSTTStream(STTStream, Protocol):
    """A stream that can start its final decode early, when the speaker pauses.

    Contract: the session calls `pause()` at every pause in the user's speech (at its first 0.1 s of silence, the
    turn detector's `silence` event); if `finalize()` follows with no speech in between (only the silence that ended
    the turn), the stream may return the speculative result at once. It calls `resume()` when the speaker goes on
    after a pause: until then, what the stream receives is that pause's silence, which interim decodes need not read
    again.
    """

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...


@runtime_checkable
class STT(Protocol):
    """Speech to text: batch transcription of whole audio, and live streams for conversations."""

    name: str

    async def transcribe(self, audio: AudioFrame, language: str | None = None) -> Transcript: ...

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> STTStream: ...


@runtime_checkable
class LLM(Protocol):
    """A chat model: messages in, token deltas out; cancel the iterating task to stop generation."""

    name: str

    def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
               temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()) -> AsyncIterator[LLMDelta]: ...


@runtime_checkable
class PrefillingLLM(LLM, Protocol):
    """An LLM that can read a prompt before it is asked to answer it (a local model's KV cache): a request that
    starts like the prefilled prompt then pays only for the rest."""

    def prefill(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> None:
        """A hint that returns at once: a request starting like `messages` (and with this `max_tokens`) will likely
        come soon. May do nothing."""


@runtime_checkable
class TTS(Protocol):
    """Text to speech: a sentence (or a stream of text) in, audio frames out as soon as they exist."""

    name: str
    sample_rate: int

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]: ...


@runtime_checkable
class StreamingTTS(TTS, Protocol):
    """A TTS that takes the text itself as a stream (e.g. LLM tokens) and decides where to cut."""

    def synthesize_stream(self, text: AsyncIterable[str], *,
                          voice: str | None = None) -> AsyncIterator[AudioFrame]: ...


@runtime_checkable
class VADStream(Protocol):
    """Per-caller VAD state (recurrent models keep state between frames)."""

    async def probability(self, frame: AudioFrame) -> float:
        """Probability in [0, 1] that `frame` contains speech."""

    def reset(self) -> None: ...


@runtime_checkable
class VAD(Protocol):
    """Voice activity detection; `stream()` makes the state one caller needs."""

    name: str
    frame_duration: float

    def stream(self) -> VADStream: ...


@runtime_checkable
class TurnModel(Protocol):
    """Semantic/acoustic end-of-turn model: audio of the turn so far in, P(turn complete) out."""

    name: str

    async def completion_probability(self, audio: AudioFrame) -> float: ...
