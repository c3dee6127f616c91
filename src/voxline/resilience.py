"""Reliability wrappers around any provider: timeouts, retries, fallback chains, a circuit breaker, canned phrases.

Every wrapper takes a provider of one kind (STT, LLM, TTS or VAD, see `voxline.providers.base`) and is itself a
provider of that kind, so they compose from the inside out::

    tts = Fallback(CircuitBreaker(Retrying(with_timeout(eleven, first_item=0.8), attempts=2)),
                   with_timeout(piper, first_item=0.5), observer=events)

What each wrapper bounds:

- `with_timeout(p, first_item=, total=)`: time to the first item of a stream (first audio, first token, the final
  transcript after `finalize()`, a VAD probability) and to its end; expiry raises `ProviderError(retryable=True)`.
- `Retrying(p, attempts=)`: tries again on a retryable `ProviderError`, sleeping with full jitter (or the provider's
  `retry_after`). A failure *after* some output resumes instead of restarting (see below).
- `Fallback(a, b, ...)`: on any failure moves to the next provider, also in the middle of a stream:

  * TTS: the rest of the sentence is re-synthesized. Where the audio stopped in the text is estimated from the
    duration already produced and the provider's speaking rate (characters per second, learnt from its completed
    syntheses, 14 cps until then), backed off to the start of that word: the listener may hear one word twice,
    never a gap (the estimate is also shaded down by 10%).
  * LLM: the reply *continues* on the next provider, which gets the partial reply as an assistant message and a
    request to go on from there; if it starts the reply over anyway, the repeated prefix is dropped. Restarting
    would make the caller hear the start of the answer twice (it has usually been spoken already). A reply that
    broke off after a tool call is not continued (a second attempt would make the call again, and the tool would
    run twice): it fails with a non-retryable `ProviderError`.
  * STT: the audio of the turn so far (bounded, `max_replay_s`) is replayed to the next provider's stream, and a
    pending `finalize()` is repeated.
  * VAD: the next provider's stream takes over (its state starts fresh).
- `CircuitBreaker(p, failures=, cooldown=)`: after N consecutive failures the provider is skipped (a non-retryable
  `ProviderError` at once, so a `Fallback` moves on without waiting) for `cooldown` seconds, then one trial call.

Every wrapper reports what happened to an optional `observer` callable as event dicts, `{"type": "provider",
"event": "retry" | "fallback" | "timeout" | "failure" | "breaker_open" | "breaker_closed" | "phrase", "provider":
..., ...}`; session records store them. `health()` on any wrapper gives a per-provider snapshot for `/healthz`.

`FallbackPhrases` holds a few apologies synthesized at start-up in the session's voice, to play when everything
else fails; `is_no_speech` and `RetryBudget` are the session's recovery rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

import numpy as np

from voxline.audio.frame import AudioFrame
from voxline.errors import ProviderError
from voxline.providers.base import (
    LLM,
    STT,
    TTS,
    VAD,
    LLMDelta,
    Message,
    PrefillingLLM,
    SpeculativeSTTStream,
    STTStream,
    Transcript,
    VADStream,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["stt", "llm", "tts", "vad"]
Observer = Callable[[dict[str, Any]], None]
# A call on one provider that yields items, and how to go on after it failed having produced some of them.
Make = Callable[[Any], AsyncIterator[Any]]
Resume = Callable[[list[Any]], "tuple[Make, Resume | None] | None"]

DEFAULT_CPS = 13.0  # characters of text per second of speech, a usual speaking rate (~150 words per minute)
CONTINUE_PROMPT = ("(Your previous reply was cut off by a technical problem. Continue it from exactly where it "
                   "stopped, without repeating anything.)")


class EventLog(list[dict[str, Any]]):
    """A list that is also an observer: `events = EventLog(); Fallback(a, b, observer=events)`."""

    def __call__(self, event: dict[str, Any]) -> None:
        self.append(event)

    def kinds(self) -> list[str]:
        """The `event` field of each provider event, in order (handy in tests and logs)."""
        return [str(e.get("event")) for e in self]


def kind_of(provider: Any) -> Kind:
    """Which protocol `provider` implements, from the methods it has."""
    if isinstance(provider, _Wrapper):
        return provider.kind
    if callable(getattr(provider, "synthesize", None)):
        return "tts"
    if callable(getattr(provider, "transcribe", None)):
        return "stt"
    if hasattr(provider, "frame_duration") and callable(getattr(provider, "stream", None)):
        return "vad"
    if callable(getattr(provider, "stream", None)):
        return "llm"
    raise TypeError(f"{type(provider).__name__} is not an STT, LLM, TTS or VAD provider")


def as_provider_error(exc: BaseException, provider: str) -> ProviderError:
    """Any failure of a provider as a `ProviderError`; network trouble and timeouts count as retryable."""
    if isinstance(exc, ProviderError):
        if not exc.provider:
            exc.provider = provider
        return exc
    retryable = isinstance(exc, TimeoutError | OSError | ConnectionError)
    err = ProviderError(f"{provider} failed: {type(exc).__name__}: {exc}", provider=provider, retryable=retryable)
    err.__cause__ = exc
    return err


# ---- health ---------------------------------------------------------------------------------------------------------


@dataclass
class Health:
    """Counters of one provider as seen by one wrapper; `snapshot()` is what `/healthz` shows."""

    calls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    state: str = "ok"  # ok | degraded | open (skipped by a circuit breaker)
    extra: dict[str, Any] = field(default_factory=dict)

    def success(self) -> None:
        self.calls += 1
        self.consecutive_failures = 0
        self.last_success_at = time.time()
        if self.state == "degraded":
            self.state = "ok"

    def failure(self, exc: BaseException) -> None:
        self.calls += 1
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = str(exc)[:300]
        self.last_failure_at = time.time()
        if self.state == "ok":
            self.state = "degraded"

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "calls": self.calls, "failures": self.failures,
                "consecutive_failures": self.consecutive_failures, "last_error": self.last_error,
                "last_failure_at": self.last_failure_at, "last_success_at": self.last_success_at, **self.extra}


def _merge_health(into: dict[str, dict[str, Any]], provider: Any) -> None:
    inner = getattr(provider, "health", None)
    if callable(inner):
        for name, snap in inner().items():
            into.setdefault(name, {}).update(snap)


# ---- the kind-specific faces ----------------------------------------------------------------------------------------


def _check(item: Any, expected: type, provider: str) -> Any:
    if not isinstance(item, expected):
        raise ProviderError(f"{provider} returned {type(item).__name__} where {expected.__name__} was expected",
                            provider=provider, retryable=True)
    return item


async def _aclose(it: Any) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def close_quietly(stream: STTStream) -> None:
    """Close a stream whose errors no longer matter (it failed, or its turn is over)."""
    with contextlib.suppress(Exception):
        await stream.close()


class _Wrapper:
    """What every wrapper shares: the kind, a name, an observer, health, and two ways to run a call.

    Subclasses implement `_iterate` (a call yielding items) and `_call` (a call returning one value); the kind
    faces below map the protocol methods onto them, and the STT/VAD stream proxies use `_stream_policy`.
    """

    kind: Kind
    name: str
    providers: tuple[Any, ...]

    def __init__(self, providers: Sequence[Any], observer: Observer | None, name: str | None) -> None:
        if not providers:
            raise ValueError("a wrapper needs at least one provider")
        kinds = {kind_of(p) for p in providers}
        if len(kinds) != 1:
            raise TypeError(f"cannot mix provider kinds {sorted(kinds)} in one wrapper")
        self.kind = kinds.pop()
        self.providers = tuple(providers)
        self.name = name or "|".join(str(getattr(p, "name", type(p).__name__)) for p in providers)
        self.observer = observer
        self._health: dict[str, Health] = {}

    @property
    def inner(self) -> Any:
        return self.providers[0]

    def _pname(self, provider: Any) -> str:
        return str(getattr(provider, "name", type(provider).__name__))

    def _h(self, provider: Any) -> Health:
        return self._health.setdefault(self._pname(provider), Health())

    def emit(self, event: str, provider: Any, **data: Any) -> None:
        if self.observer is None:
            return
        try:
            self.observer({"type": "provider", "event": event, "provider": self._pname(provider),
                           "kind": self.kind, **data})
        except Exception:  # an observer must never break a call
            log.exception("resilience observer failed")

    def health(self) -> dict[str, dict[str, Any]]:
        """Per provider name: state, call and failure counts, last error, as seen by this wrapper and inner ones."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.providers:
            _merge_health(out, p)
            if (h := self._health.get(self._pname(p))) is not None:
                snap = h.snapshot()
                prev = out.get(self._pname(p), {})
                if prev.get("state") == "open":  # the innermost breaker knows best whether it is open
                    snap["state"] = "open"
                out[self._pname(p)] = {**prev, **snap}
        return out

    def _setup_face(self) -> None:
        """Copy what the kind's protocol needs from the inner provider (sample_rate, frame_duration)."""

    # -- to implement --

    def _iterate(self, make: Make, expected: type, resume: Resume | None) -> AsyncIterator[Any]:
        raise NotImplementedError

    async def _call(self, make: Callable[[Any], Awaitable[T]], expected: type) -> T:
        raise NotImplementedError

    def _stream_policy(self) -> _StreamPolicy:
        raise NotImplementedError

    # -- shared by the faces --

    def _tts_plan(self, text: str, voice: str | None) -> tuple[Make, Resume | None]:
        """How to synthesize `text`, and how to go on with the rest of it after a failure part way."""

        def make(p: Any) -> AsyncIterator[Any]:
            return p.synthesize(text, voice=voice)

        def resume(frames: list[Any]) -> tuple[Make, Resume | None] | None:
            spoken = sum(f.duration for f in frames)
            rest = text[_spoken_chars(text, spoken, self._cps()):].strip()
            return self._tts_plan(rest, voice) if rest else None

        return make, resume

    def _cps(self) -> float:
        return DEFAULT_CPS

    def _llm_plan(self, messages: Sequence[Message], kwargs: dict[str, Any],
                  partial: str = "") -> tuple[Make, Resume | None]:
        """How to produce a reply; after a failure, continue it with the partial reply as context (never after a
        tool call: that fails the reply, non-retryable, so no wrapper asks for the call a second time)."""

        def make(p: Any) -> AsyncIterator[Any]:
            if not partial:
                return p.stream(messages, **kwargs)
            cont = [*messages, Message("assistant", partial), Message("user", CONTINUE_PROMPT)]
            return _drop_repeat(p.stream(cont, **kwargs), partial)

        def resume(deltas: list[Any]) -> tuple[Make, Resume | None] | None:
            calls = [d.tool_call.name for d in deltas if d.tool_call is not None]
            if calls:  # another attempt would ask for the call again: the tool would run twice (a booking made twice)
                raise ProviderError(f"{self.name}: the reply broke off after its tool call ({', '.join(calls)}); "
                                    "not resumed, which would repeat the call", provider=self.name, retryable=False)
            said = partial + "".join(d.text for d in deltas)
            return self._llm_plan(messages, kwargs, said)

        return make, resume


def _spoken_chars(text: str, seconds: float, cps: float) -> int:
    """Index in `text` where speech lasting `seconds` at `cps` stopped, moved back to the start of that word."""
    pos = min(len(text), int(seconds * cps * 0.9))  # under-estimate: better a word twice than a word lost
    if pos >= len(text):
        return len(text)
    while pos > 0 and not text[pos - 1].isspace():
        pos -= 1
    return pos


def _norm(s: str) -> str:
    return " ".join(unicodedata.normalize("NFC", s).split()).lower()


async def _drop_repeat(stream: AsyncIterator[LLMDelta], partial: str) -> AsyncIterator[LLMDelta]:
    """Pass a continuation through, minus a restart of `partial` at its beginning (a model that starts over)."""
    target = _norm(partial)
    pending = ""
    decided = not target
    try:
        async for delta in stream:
            if decided or not isinstance(delta, LLMDelta) or not delta.text:
                yield delta
                continue
            pending += delta.text
            seen = _norm(pending)
            if target.startswith(seen) and len(seen) < len(target):
                continue  # so far the same as what was already said: wait
            decided = True
            if seen.startswith(target):  # a restart: keep only what goes beyond the partial reply
                cut = next(i for i in range(len(pending) + 1) if _norm(pending[:i]) == target)
                rest = pending[cut:]
            else:
                rest = pending
                if partial and not partial[-1].isspace() and rest[:1].isalnum() and partial[-1] in ".,;:!?":
                    rest = " " + rest
            if rest.strip():
                yield LLMDelta(text=rest)
        if not decided and pending and _norm(pending) != target:
            yield LLMDelta(text=pending)
    finally:
        await _aclose(stream)


class _TTSFace(_Wrapper):
    sample_rate: int

    def _setup_face(self) -> None:
        self.sample_rate = int(self.inner.sample_rate)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        make, resume = self._tts_plan(text, voice)
        it = self._iterate(make, AudioFrame, resume)
        try:
            async for frame in it:
                yield frame if frame.sample_rate == self.sample_rate else frame.resample(self.sample_rate)
        finally:
            await _aclose(it)


class _LLMFace(_Wrapper):
    def _setup_face(self) -> None:
        pass

    def prefill(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> None:
        """Passed to the first provider, the one that answers while it works."""
        if isinstance(self.inner, PrefillingLLM):
            self.inner.prefill(messages, max_tokens=max_tokens)

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()
                     ) -> AsyncIterator[LLMDelta]:
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "tools": tools}
        make, resume = self._llm_plan(list(messages), kwargs)
        it = self._iterate(make, LLMDelta, resume)
        try:
            async for delta in it:
                yield delta
        finally:
            await _aclose(it)


class _STTFace(_Wrapper):
    def _setup_face(self) -> None:
        pass

    async def transcribe(self, audio: AudioFrame, language: str | None = None) -> Transcript:
        return await self._call(lambda p: p.transcribe(audio, language), Transcript)

    def stream(self, sample_rate: int = 16000, language: str | None = None) -> STTStream:
        return _ResilientSTTStream(self, self._stream_policy(), sample_rate, language)


class _VADFace(_Wrapper):
    frame_duration: float

    def _setup_face(self) -> None:
        self.frame_duration = float(self.inner.frame_duration)

    def stream(self) -> VADStream:
        return _ResilientVADStream(self)


_FACES: dict[Kind, type[_Wrapper]] = {"tts": _TTSFace, "llm": _LLMFace, "stt": _STTFace, "vad": _VADFace}
_CLASSES: dict[tuple[type, Kind], type] = {}


def _kinded(cls: type, kind: Kind) -> type:
    """`cls` combined with the face of `kind` (e.g. Retrying + TTS face = a class with `synthesize`)."""
    key = (cls, kind)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"{cls.__name__}{kind.upper()}", (cls, _FACES[kind]), {"__doc__": cls.__doc__})
    return _CLASSES[key]


class _KindDispatch:
    """`Wrapper(provider, ...)` builds an instance of the wrapper class with the provider kind's face."""

    def __new__(cls, *providers: Any, **kwargs: Any) -> Any:
        first = providers[0] if providers else kwargs.get("provider", kwargs.get("primary"))
        return object.__new__(_kinded(cls, kind_of(first)))


# ---- STT and VAD streams --------------------------------------------------------------------------------------------


@dataclass
class _StreamPolicy:
    """How an STT/VAD stream proxy opens streams and what it does when one fails.

    `open(attempt, failure)` returns the provider for that attempt (None: give up, raise `failure`), after any
    waiting (backoff) it wants; `final_timeout` bounds finalize -> final transcript; `done(provider, exc)` books
    the outcome.
    """

    open: Callable[[int, ProviderError | None], Awaitable[Any | None]]
    done: Callable[[Any, BaseException | None], None]
    final_timeout: float | None = None
    max_replay_s: float = 60.0


class _ResilientSTTStream:
    """A live recognition stream that survives its provider: the turn's audio is kept and replayed to the next."""

    def __init__(self, owner: _Wrapper, policy: _StreamPolicy, sample_rate: int, language: str | None) -> None:
        self._owner, self._policy = owner, policy
        self._rate, self._language = sample_rate, language
        self._audio: deque[AudioFrame] = deque()
        self._audio_s = 0.0
        self._finalized = False
        self._closed = False
        self._attempt = 0
        self._provider: Any = None
        self._inner: STTStream | None = None
        self._switch_lock = asyncio.Lock()
        self._gave_up: ProviderError | None = None  # every provider failed: the stream is over
        self._retiring: set[asyncio.Task[None]] = set()  # failed streams being closed
        self._scope: asyncio.Timeout | None = None  # the reader's wait, to tighten once the turn is finalized

    async def _current(self) -> STTStream:
        if self._inner is None:
            await self._switch(None)
        assert self._inner is not None
        return self._inner

    async def _switch(self, failure: ProviderError | None, failed: STTStream | None = None) -> None:
        """Open the next stream (the first one when `failure` is None) and replay the turn to it."""
        async with self._switch_lock:
            if self._gave_up is not None:
                raise self._gave_up
            if failure is None and self._inner is not None:
                return  # another task opened it meanwhile
            if failure is not None and failed is not self._inner:
                return  # another task already moved past the stream that failed
            while True:
                if failure is not None and self._inner is not None:
                    self._policy.done(self._provider, failure)
                    self._retire(self._inner)
                    self._inner = None
                provider = await self._policy.open(self._attempt, failure)
                self._attempt += 1
                if provider is None:
                    assert failure is not None
                    self._gave_up = failure
                    raise failure
                try:
                    inner = provider.stream(self._rate, self._language)
                    for frame in list(self._audio):
                        await inner.send(frame)
                    if self._finalized:
                        await inner.finalize()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._provider, self._inner = provider, None
                    failure = as_provider_error(exc, self._owner._pname(provider))
                    self._policy.done(provider, failure)
                    continue
                self._provider, self._inner = provider, inner
                if failure is not None:
                    self._owner.emit("replayed", provider, audio_s=round(self._audio_s, 3),
                                     finalized=self._finalized)
                return

    async def send(self, frame: AudioFrame) -> None:
        inner = await self._current()  # before buffering: opening a stream replays the buffer
        self._audio.append(frame)
        self._audio_s += frame.duration
        while self._audio_s > self._policy.max_replay_s and len(self._audio) > 1:
            self._audio_s -= self._audio.popleft().duration
        try:
            await inner.send(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._switch(as_provider_error(exc, self._owner._pname(self._provider)), inner)

    async def finalize(self) -> None:
        self._finalized = True
        limit = self._policy.final_timeout
        if self._scope is not None and limit is not None:
            when = asyncio.get_running_loop().time() + limit
            current = self._scope.when()
            self._scope.reschedule(when if current is None else min(current, when))
        inner = await self._current()
        try:
            await inner.finalize()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._switch(as_provider_error(exc, self._owner._pname(self._provider)), inner)

    async def pause(self) -> None:
        """Pass the speaker's pause on to a stream that can decode early (`SpeculativeSTTStream`)."""
        await self._hint("pause")

    async def resume(self) -> None:
        """Pass on that the speaker went on after a pause."""
        await self._hint("resume")

    async def _hint(self, name: Literal["pause", "resume"]) -> None:
        # Hints are an optimisation: if one fails, the final decode still reads the whole turn.
        if isinstance(self._inner, SpeculativeSTTStream):
            try:
                await getattr(self._inner, name)()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("%s() failed on %s", name, self._owner._pname(self._provider), exc_info=True)

    def _retire(self, stream: STTStream) -> None:
        """Close a failed stream in the background: a stuck server's closing handshake (up to the socket's close
        timeout) must not hold up the turn's transcript. `close()` waits for it."""
        task = asyncio.get_running_loop().create_task(close_quietly(stream))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        self._closed = True
        try:
            if self._inner is not None:
                await self._inner.close()
        finally:
            if self._retiring:
                await asyncio.gather(*self._retiring, return_exceptions=True)

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Transcript]:
        loop = asyncio.get_running_loop()
        while True:
            inner = await self._current()
            it = aiter(inner)
            try:
                while True:
                    limit = self._policy.final_timeout
                    deadline = None if limit is None or not self._finalized else loop.time() + limit
                    try:
                        async with asyncio.timeout_at(deadline) as scope:
                            self._scope = scope
                            item = await anext(it)
                    except StopAsyncIteration:
                        if inner is not self._inner and not self._closed:
                            break  # replaced (or being replaced) by a fallback stream, whose closing of the old
                            # one ended it: read the new one, once the switch is done
                        self._policy.done(self._provider, None)
                        return
                    except TimeoutError as exc:
                        if scope.expired():
                            self._owner.emit("timeout", self._provider, stage="final_transcript", limit_s=limit)
                            raise ProviderError(f"{self._owner._pname(self._provider)} gave no final transcript "
                                                f"within {limit} s of the end of the turn",
                                                provider=self._owner._pname(self._provider),
                                                retryable=True) from exc
                        raise
                    yield _check(item, Transcript, self._owner._pname(self._provider))
                    if item.is_final:
                        self._policy.done(self._provider, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                await self._switch(as_provider_error(exc, self._owner._pname(self._provider)), inner)
            finally:
                self._scope = None
                await _aclose(it)


class _ResilientVADStream:
    """VAD state per provider, created lazily; `probability` goes through the owner's policy."""

    def __init__(self, owner: _Wrapper) -> None:
        self._owner = owner
        self._streams: dict[int, VADStream] = {}

    def _for(self, provider: Any) -> VADStream:
        key = id(provider)
        if key not in self._streams:
            self._streams[key] = provider.stream()
        return self._streams[key]

    async def probability(self, frame: AudioFrame) -> float:
        async def one(p: Any) -> float:
            value = await self._for(p).probability(frame)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise ProviderError(f"{self._owner._pname(p)} returned {type(value).__name__} as a VAD probability",
                                    provider=self._owner._pname(p), retryable=True)
            return float(value)

        value = await self._owner._call(one, float)
        if not 0.0 <= value <= 1.0:
            raise ProviderError(f"VAD probability {value} is outside [0, 1]", provider=self._owner.name)
        return value

    def reset(self) -> None:
        for s in self._streams.values():
            s.reset()


# ---- timeouts -------------------------------------------------------------------------------------------------------


class Timeout(_KindDispatch, _Wrapper):
    """Bounds time to the first item and to the end of each call; expiry is a retryable `ProviderError`."""

    def __init__(self, provider: Any, *, first_item: float | None = None, total: float | None = None,
                 observer: Observer | None = None) -> None:
        for label, value in (("first_item", first_item), ("total", total)):
            if value is not None and not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds, got {value}")
        _Wrapper.__init__(self, [provider], observer, getattr(provider, "name", None))
        self.first_item, self.total = first_item, total
        self._setup_face()

    def _expired(self, first: bool, elapsed: float) -> ProviderError:
        what = "first output" if first else "complete output"
        limit = self.first_item if first and self.first_item is not None else self.total
        self.emit("timeout", self.inner, stage="first_item" if first else "total", limit_s=limit,
                  elapsed_s=round(elapsed, 3))
        err = ProviderError(f"{self.name} gave no {what} within {limit} s", provider=self.name, retryable=True)
        self._h(self.inner).failure(err)
        return err

    async def _iterate(self, make: Make, expected: type, resume: Resume | None) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + self.total if self.total is not None else None
        it = make(self.inner)
        first = True
        try:
            while True:
                deadlines = [d for d in (end, start + self.first_item if first and self.first_item else None) if d]
                try:
                    async with asyncio.timeout_at(min(deadlines) if deadlines else None) as scope:
                        item = await anext(it)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if scope.expired():
                        raise self._expired(first, loop.time() - start) from None
                    raise
                first = False
                yield _check(item, expected, self.name)
            self._h(self.inner).success()
        finally:
            await _aclose(it)

    async def _call(self, make: Callable[[Any], Awaitable[T]], expected: type) -> T:
        limits = [x for x in (self.first_item, self.total) if x is not None]
        start = time.monotonic()
        try:
            async with asyncio.timeout(min(limits) if limits else None) as scope:
                value = await make(self.inner)
        except TimeoutError:
            if scope.expired():
                raise self._expired(True, time.monotonic() - start) from None
            raise
        self._h(self.inner).success()
        return _check(value, expected, self.name)

    def _stream_policy(self) -> _StreamPolicy:
        async def open_(attempt: int, failure: ProviderError | None) -> Any:
            return self.inner if attempt == 0 else None

        def done(provider: Any, exc: BaseException | None) -> None:
            if exc is None:
                self._h(provider).success()
            else:
                self._h(provider).failure(exc)

        return _StreamPolicy(open_, done, final_timeout=self.first_item or self.total)


@overload
def with_timeout(provider: TTS, *, first_item: float | None = ..., total: float | None = ...,
                 observer: Observer | None = ...) -> TTS: ...
@overload
def with_timeout(provider: LLM, *, first_item: float | None = ..., total: float | None = ...,
                 observer: Observer | None = ...) -> LLM: ...
@overload
def with_timeout(provider: STT, *, first_item: float | None = ..., total: float | None = ...,
                 observer: Observer | None = ...) -> STT: ...
@overload
def with_timeout(provider: VAD, *, first_item: float | None = ..., total: float | None = ...,
                 observer: Observer | None = ...) -> VAD: ...
def with_timeout(provider: Any, *, first_item: float | None = None, total: float | None = None,
                 observer: Observer | None = None) -> Any:
    """`provider` with a time limit on its first item (first audio, token, final transcript) and on each call."""
    return Timeout(provider, first_item=first_item, total=total, observer=observer)


# ---- attempts: retries and fallbacks share one loop ------------------------------------------------------------------


class _Attempts(_Wrapper):
    """Runs a call as a series of attempts; subclasses choose the provider of each attempt and the wait before it."""

    def _next(self, attempt: int, failure: ProviderError, produced: bool) -> tuple[Any, float] | None:
        """(provider, delay) for attempt number `attempt` (>= 1) after `failure`, or None to give up."""
        raise NotImplementedError

    def _announce(self, attempt: int, provider: Any, previous: Any, failure: ProviderError, delay: float,
                  produced: int) -> None:
        raise NotImplementedError

    async def _iterate(self, make: Make, expected: type, resume: Resume | None) -> AsyncIterator[Any]:
        provider, attempt = self.providers[0], 0
        plan: tuple[Make, Resume | None] | None = (make, resume)
        while plan is not None:
            current_make, current_resume = plan
            produced: list[Any] = []
            it: Any = None
            try:
                it = current_make(provider)
                async for item in it:
                    produced.append(_check(item, expected, self._pname(provider)))
                    yield item
                self._h(provider).success()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = as_provider_error(exc, self._pname(provider))
                self._h(provider).failure(failure)
                attempt += 1
                choice = self._next(attempt, failure, bool(produced))
                if choice is None:
                    raise failure from exc
                previous, (provider, delay) = provider, choice
                if produced:
                    if current_resume is None:
                        raise failure from exc
                    plan = current_resume(produced)
                    if plan is None:  # the failure came after everything was produced (TTS: all text spoken)
                        return
                self._announce(attempt, provider, previous, failure, delay, len(produced))
                if delay > 0:
                    await asyncio.sleep(delay)
            finally:
                await _aclose(it)

    async def _call(self, make: Callable[[Any], Awaitable[T]], expected: type) -> T:
        provider, attempt = self.providers[0], 0
        while True:
            try:
                value = _check(await make(provider), expected, self._pname(provider))
                self._h(provider).success()
                return value
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = as_provider_error(exc, self._pname(provider))
                self._h(provider).failure(failure)
                attempt += 1
                choice = self._next(attempt, failure, False)
                if choice is None:
                    raise failure from exc
                previous, (provider, delay) = provider, choice
                self._announce(attempt, provider, previous, failure, delay, 0)
                if delay > 0:
                    await asyncio.sleep(delay)

    def _stream_policy(self) -> _StreamPolicy:
        current: list[Any] = [self.providers[0]]

        async def open_(attempt: int, failure: ProviderError | None) -> Any:
            if attempt == 0 or failure is None:
                return current[0]
            choice = self._next(attempt, failure, False)
            if choice is None:
                return None
            previous, (current[0], delay) = current[0], choice
            self._announce(attempt, current[0], previous, failure, delay, 0)
            if delay > 0:
                await asyncio.sleep(delay)
            return current[0]

        def done(provider: Any, exc: BaseException | None) -> None:
            if exc is None:
                self._h(provider).success()
            else:
                self._h(provider).failure(exc)

        return _StreamPolicy(open_, done, max_replay_s=getattr(self, "max_replay_s", 60.0))


class Retrying(_KindDispatch, _Attempts):
    """Tries a provider again on retryable `ProviderError`s, `attempts` times in all.

    The wait before attempt n is uniform in [0, min(max_delay, base_delay * 2**(n-1))] ("full jitter"), or the
    provider's `retry_after` when it gave one; a `retry_after` longer than `max_delay` is not waited for (a live
    call cannot wait that long): the error is raised, for a `Fallback` to handle. A failure after some output
    resumes where the output stopped (see the module docstring) rather than starting over.
    """

    def __init__(self, provider: Any, attempts: int = 3, *, base_delay: float = 0.05, max_delay: float = 1.0,
                 rng: random.Random | None = None, observer: Observer | None = None,
                 max_replay_s: float = 60.0) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must not be negative")
        _Wrapper.__init__(self, [provider], observer, getattr(provider, "name", None))
        self.attempts, self.base_delay, self.max_delay = attempts, base_delay, max_delay
        self.max_replay_s = max_replay_s
        self._rng = rng or random.Random()
        self._setup_face()

    def _next(self, attempt: int, failure: ProviderError, produced: bool) -> tuple[Any, float] | None:
        if not failure.retryable or attempt >= self.attempts:
            return None
        if failure.retry_after is not None:
            if failure.retry_after > self.max_delay:
                return None
            return self.inner, max(0.0, failure.retry_after)
        return self.inner, self._rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    def _announce(self, attempt: int, provider: Any, previous: Any, failure: ProviderError, delay: float,
                  produced: int) -> None:
        self.emit("retry", provider, attempt=attempt + 1, of=self.attempts, delay_s=round(delay, 3),
                  error=str(failure), resumed_after_items=produced)


class Fallback(_KindDispatch, _Attempts):
    """The first provider that works, in order; a failure part way through a stream continues on the next one.

    Any failure moves on (a non-retryable one too: another vendor may well accept what this one refused). When
    every provider has failed the last error is raised, and the caller plays a `FallbackPhrases` apology.
    """

    def __init__(self, primary: Any, *others: Any, observer: Observer | None = None,
                 max_replay_s: float = 60.0, name: str | None = None) -> None:
        if not others:
            raise ValueError("Fallback needs at least two providers")
        _Wrapper.__init__(self, [primary, *others], observer, name or getattr(primary, "name", None))
        self.max_replay_s = max_replay_s
        self._rates: dict[int, float] = {}
        self._setup_face()

    def _next(self, attempt: int, failure: ProviderError, produced: bool) -> tuple[Any, float] | None:
        return (self.providers[attempt], 0.0) if attempt < len(self.providers) else None

    def _announce(self, attempt: int, provider: Any, previous: Any, failure: ProviderError, delay: float,
                  produced: int) -> None:
        log.warning("%s failed (%s); falling back to %s", self._pname(previous), failure, self._pname(provider))
        self.emit("fallback", provider, **{"from": self._pname(previous)}, error=str(failure),
                  resumed_after_items=produced)

    def _tts_plan(self, text: str, voice: str | None) -> tuple[Make, Resume | None]:
        make, resume = _Wrapper._tts_plan(self, text, voice)

        async def learning(p: Any) -> AsyncIterator[Any]:
            # learn this provider's speaking rate from its complete syntheses, to place resumes better
            seconds = 0.0
            it = make(p)
            try:
                async for frame in it:
                    if isinstance(frame, AudioFrame):
                        seconds += frame.duration
                    yield frame
            finally:
                await _aclose(it)
            if seconds > 0.5 and len(text) >= 10:
                old = self._rates.get(id(p))
                cps = len(text) / seconds
                self._rates[id(p)] = cps if old is None else 0.8 * old + 0.2 * cps

        return learning, resume

    def _cps(self) -> float:
        rates = list(self._rates.values())
        return sum(rates) / len(rates) if rates else DEFAULT_CPS

    def _stream_policy(self) -> _StreamPolicy:
        policy = _Attempts._stream_policy(self)
        policy.max_replay_s = self.max_replay_s
        return policy


# ---- circuit breaker ------------------------------------------------------------------------------------------------


class CircuitBreaker(_KindDispatch, _Wrapper):
    """Skips a provider after `failures` consecutive failures, for `cooldown` seconds; then lets one trial through.

    While open, calls fail at once with a non-retryable `ProviderError` (no network round trip, no timeout spent),
    so a `Fallback` around it goes straight to the next provider. `clock` is injectable for tests.
    """

    def __init__(self, provider: Any, failures: int = 3, cooldown: float = 30.0, *,
                 observer: Observer | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown < 0:
            raise ValueError("failures must be >= 1 and cooldown >= 0")
        _Wrapper.__init__(self, [provider], observer, getattr(provider, "name", None))
        self.threshold, self.cooldown, self._clock = failures, cooldown, clock
        self._opened_at: float | None = None
        self._trial = False
        self._setup_face()

    @property
    def state(self) -> str:
        """closed (calls pass), open (calls skipped) or half-open (one trial call allowed)."""
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.cooldown else "open"

    def _admit(self) -> None:
        state = self.state
        if state == "open" or (state == "half-open" and self._trial):
            assert self._opened_at is not None
            left = self.cooldown - (self._clock() - self._opened_at)
            raise ProviderError(f"{self.name} is skipped after {self.threshold} consecutive failures "
                                f"(circuit open, {max(0.0, left):.1f} s left)", provider=self.name, retryable=False)
        if state == "half-open":
            self._trial = True

    def _record(self, exc: BaseException | None) -> None:
        h = self._h(self.inner)
        if exc is None:
            h.success()
            if self._opened_at is not None:
                self._opened_at, self._trial = None, False
                self.emit("breaker_closed", self.inner)
            h.state = "ok"
            h.extra["breaker"] = "closed"
            return
        h.failure(exc)
        if self._opened_at is not None or h.consecutive_failures >= self.threshold:
            self._opened_at, self._trial = self._clock(), False
            h.state = "open"
            h.extra["breaker"] = "open"
            self.emit("breaker_open", self.inner, failures=h.consecutive_failures, cooldown_s=self.cooldown,
                      error=str(exc))

    def health(self) -> dict[str, dict[str, Any]]:
        out = _Wrapper.health(self)
        snap = out.setdefault(self._pname(self.inner), Health().snapshot())
        snap["breaker"] = self.state
        if self.state != "closed":
            snap["state"] = "open"
        return out

    async def _iterate(self, make: Make, expected: type, resume: Resume | None) -> AsyncIterator[Any]:
        self._admit()
        it = make(self.inner)
        try:
            async for item in it:
                yield _check(item, expected, self.name)
        except Exception as exc:
            self._record(as_provider_error(exc, self.name))
            raise
        except BaseException:  # stopped by its consumer (GeneratorExit): neither a success nor a failure
            self._trial = False
            raise
        finally:
            await _aclose(it)
        self._record(None)

    async def _call(self, make: Callable[[Any], Awaitable[T]], expected: type) -> T:
        self._admit()
        try:
            value = _check(await make(self.inner), expected, self.name)
        except asyncio.CancelledError:
            self._trial = False
            raise
        except Exception as exc:
            self._record(as_provider_error(exc, self.name))
            raise
        self._record(None)
        return value

    def _stream_policy(self) -> _StreamPolicy:
        async def open_(attempt: int, failure: ProviderError | None) -> Any:
            if attempt > 0:
                return None
            self._admit()
            return self.inner

        return _StreamPolicy(open_, lambda p, exc: self._record(exc))


# ---- canned phrases and recovery rules ------------------------------------------------------------------------------

DEFAULT_PHRASES: Mapping[str, str] = {
    "not_understood": "Sorry, I didn't catch that. Could you repeat?",
    "error": "Sorry, I'm having trouble right now. Please try again in a moment.",
    "still_there": "Are you still there?",
    "goodbye": "Sorry, something went wrong on my side. Goodbye for now.",
}


class FallbackPhrases:
    """A few sentences synthesized once at start-up, kept as audio in memory, played when all else fails.

    `await phrases.prepare()` at start-up (a failure there is an error at start-up, not in the middle of a call);
    then `phrases.frames("error")` is instant, and `phrases.guard(tts_stream)` passes a synthesis through and
    plays the "error" phrase in its place if it fails before any audio came out.
    """

    def __init__(self, tts: TTS, phrases: Mapping[str, str] | None = None, *, voice: str | None = None,
                 observer: Observer | None = None) -> None:
        self.tts, self.voice, self.observer = tts, voice, observer
        self.texts: dict[str, str] = dict(DEFAULT_PHRASES if phrases is None else phrases)
        self._audio: dict[str, tuple[AudioFrame, ...]] = {}

    async def prepare(self) -> None:
        """Synthesize every phrase (raises `ProviderError` naming the phrase that failed)."""
        for key, text in self.texts.items():
            try:
                frames = tuple([f async for f in self.tts.synthesize(text, voice=self.voice)])
            except Exception as exc:
                raise ProviderError(f"cannot prepare the fallback phrase {key!r} with "
                                    f"{getattr(self.tts, 'name', 'the TTS')}: {exc}") from exc
            if not frames or sum(f.duration for f in frames) <= 0:
                raise ProviderError(f"the TTS produced no audio for the fallback phrase {key!r}")
            self._audio[key] = frames

    @property
    def ready(self) -> bool:
        return bool(self._audio) and set(self._audio) == set(self.texts)

    def frames(self, key: str) -> tuple[AudioFrame, ...]:
        if key not in self.texts:
            raise KeyError(f"no fallback phrase {key!r}; known: {', '.join(sorted(self.texts))}")
        if key not in self._audio:
            raise ProviderError(f"fallback phrase {key!r} is not prepared: call `await phrases.prepare()` at start")
        return self._audio[key]

    def text(self, key: str) -> str:
        return self.texts[key]

    async def play(self, key: str) -> AsyncIterator[AudioFrame]:
        frames = self.frames(key)
        if self.observer is not None:
            self.observer({"type": "provider", "event": "phrase", "phrase": key, "text": self.texts[key]})
        for frame in frames:
            yield frame

    async def guard(self, frames: AsyncIterator[AudioFrame], key: str = "error") -> AsyncIterator[AudioFrame]:
        """`frames`, or the `key` phrase if they fail before any audio; a failure after some audio just ends."""
        produced = False
        try:
            async for frame in frames:
                produced = True
                yield frame
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.observer is not None:
                self.observer({"type": "provider", "event": "failure", "provider": getattr(self.tts, "name", ""),
                               "error": str(exc), "after_audio": produced})
            if not produced:
                async for frame in self.play(key):
                    yield frame
        finally:
            await _aclose(frames)


def is_no_speech(transcript: Transcript | str | None, *, min_chars: int = 2, min_duration_s: float = 0.0) -> bool:
    """True when a final transcript should be handled as "no speech": empty, only punctuation or noise tags
    ("[BLANK_AUDIO]", "(music)"), fewer than `min_chars` letters, or audio shorter than `min_duration_s`."""
    if transcript is None:
        return True
    text = transcript if isinstance(transcript, str) else transcript.text
    if isinstance(transcript, Transcript) and min_duration_s and 0 < transcript.duration < min_duration_s:
        return True
    depth, letters = 0, 0
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth = max(0, depth - 1)
        elif depth == 0 and ch.isalnum():
            letters += 1
    return letters < min_chars


class RetryBudget:
    """A bounded number of recoveries per session (re-asks, fallback phrases): after `limit`, give up politely.

    `take()` returns True while budget is left; `ok()` after a good turn refills one (`refill_on_success`).
    """

    def __init__(self, limit: int = 3, *, refill_on_success: bool = True) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self.limit, self.used, self.refill = limit, 0, refill_on_success

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def ok(self) -> None:
        if self.refill and self.used:
            self.used -= 1
