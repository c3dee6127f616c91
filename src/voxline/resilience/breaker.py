"""`CircuitBreaker`: a provider that keeps failing is skipped for a while, then tried once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from voxline.errors import ProviderError
from voxline.resilience.faces import _KindDispatch
from voxline.resilience.streams import _StreamPolicy
from voxline.resilience.wrapper import Health, Make, Observer, Resume, T, _aclose, _check, _Wrapper, as_provider_error


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
