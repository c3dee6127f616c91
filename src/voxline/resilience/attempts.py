"""`Retrying` and `Fallback`: one loop of attempts, on the same provider again or on the next one."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from voxline.audio.frame import AudioFrame
from voxline.errors import ProviderError
from voxline.resilience.faces import _KindDispatch
from voxline.resilience.streams import _StreamPolicy
from voxline.resilience.wrapper import (
    DEFAULT_CPS,
    Make,
    Observer,
    Resume,
    T,
    _aclose,
    _check,
    _Wrapper,
    as_provider_error,
)

log = logging.getLogger(__name__)


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
