"""What every resilience wrapper shares: the provider kinds, health counters, the `_Wrapper` base, and how a
synthesis or a reply goes on after a failure part way."""

from __future__ import annotations

import contextlib
import logging
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from voxline.errors import ProviderError
from voxline.providers.base import LLMDelta, Message, STTStream

if TYPE_CHECKING:
    from voxline.resilience.streams import _StreamPolicy

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
