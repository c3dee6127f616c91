"""STT and VAD stream proxies that survive their provider: a failed stream's turn audio is replayed to the next."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from voxline.audio.frame import AudioFrame
from voxline.errors import ProviderError
from voxline.providers.base import SpeculativeSTTStream, STTStream, Transcript, VADStream
from voxline.resilience.wrapper import _aclose, _check, _Wrapper, as_provider_error, close_quietly

log = logging.getLogger(__name__)


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
