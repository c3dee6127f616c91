"""`Timeout` / `with_timeout`: bounds on the time to a call's first item and to its end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, overload

from voxline.errors import ProviderError
from voxline.providers.base import LLM, STT, TTS, VAD
from voxline.resilience.faces import _KindDispatch
from voxline.resilience.streams import _StreamPolicy
from voxline.resilience.wrapper import Make, Observer, Resume, T, _aclose, _check, _Wrapper


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
