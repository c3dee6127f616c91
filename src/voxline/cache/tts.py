"""`CachedTTS`: a `TTS` that answers repeated sentences from a cache and writes new ones through to it.

A miss starts one synthesis as a task of the `CachedTTS`; the entry is registered as "in flight" at once, so
every caller asking for the same key meanwhile streams from it: the frames already produced first, then each new
frame as it comes (the model is home-assistant's `TTSCache`). When the synthesis completes, the joined audio is
written to the backend (best-effort) and the in-flight entry dropped. When every reader of an unfinished entry
has gone (barge-in), its synthesis is cancelled and nothing is stored: a 2-core machine should not finish a
sentence nobody will hear. A failed synthesis fails its readers and stores nothing, and so does one that the
reliability wrappers had to rescue (a retry, a resume after a mid-stream failure, a fallback provider): its audio
is not, or not all, what the primary provider says for that text, so it must not be replayed under its key.

The key is built from the innermost primary provider behind the wrappers (`Timeout`, `Retrying`, `Fallback`...):
its name, default voice and everything else that shapes its audio (model, speed, voice settings, output format).
Each request is reported to the session it serves (`voxline.observe.report`), whose `CostMeter` credits hits.

Hit ratio and bytes saved are Prometheus metrics in the `CollectorRegistry` given (a private one otherwise).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from voxline.audio.frame import AudioFrame
from voxline.cache import CacheBackend, cache_key, normalize_text
from voxline.observe import report
from voxline.providers.base import TTS

log = logging.getLogger(__name__)

Observer = Callable[[dict[str, Any]], None]

# Provider attributes that change the audio for the same text and voice (OpenAI: model, speed, instructions,
# response_format; ElevenLabs: model_id, voice_settings, output_format; Piper: "<voice file>@calibrated" and
# `synthesis`, its speaker, length, noise and volume settings).
SHAPING_ATTRS = ("model", "model_id", "speed", "instructions", "response_format", "output_format", "voice_settings",
                 "language", "synthesis")
VOICE_ATTRS = ("voice", "voice_id")  # the default voice, used when a request names none


def primary_path(tts: Any) -> list[Any]:
    """The reliability wrappers from `tts` inwards to its primary provider (each wrapper's first provider), then
    that provider itself."""
    path = [tts]
    while isinstance(providers := getattr(path[-1], "providers", None), tuple) and providers:
        path.append(providers[0])
    return path


def default_voice(provider: Any) -> str:
    return next((str(v) for a in VOICE_ATTRS if (v := getattr(provider, a, None))), "")


def identity(provider: Any) -> dict[str, Any]:
    """What shapes `provider`'s audio besides text and voice, for the cache key (JSON-able)."""
    out: dict[str, Any] = {a: v for a in SHAPING_ATTRS if (v := getattr(provider, a, None)) is not None}
    inner = getattr(provider, "tts", None)  # a TTS transforming another one's audio (MatchedVoiceTTS)
    if inner is not None and callable(getattr(inner, "synthesize", None)):
        out["of"] = {"name": str(getattr(inner, "name", "")), "voice": default_voice(inner), **identity(inner)}
    return out


def _failures(path: list[Any]) -> tuple[int, ...]:
    """Failures each wrapper on the primary path has booked against its first provider so far. They only grow, and
    every retry, resume or fallback books one first, so an unchanged tuple means no rescue happened meanwhile
    (a concurrent call's failure also changes it: that entry is then not stored, which is only a missed chance)."""
    counts = []
    for wrapper, inner in itertools.pairwise(path):
        health = getattr(wrapper, "health", None)
        snap = health().get(str(getattr(inner, "name", type(inner).__name__)), {}) if callable(health) else {}
        counts.append(int(snap.get("failures", 0)))
    return tuple(counts)


class CacheMetrics:
    """Requests by result (hit: from the backend, shared: joined an in-flight synthesis, miss), bytes and
    characters not synthesized, and the hit ratio so far ((hit + shared) / all)."""

    def __init__(self, registry: CollectorRegistry | None = None, backend: str = "") -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("voxline_tts_cache_requests", "TTS requests by cache result", ["backend", "result"],
                                registry=self.registry)
        self.bytes_saved = Counter("voxline_tts_cache_bytes_saved", "PCM bytes served without synthesis",
                                   ["backend"], registry=self.registry)
        self.chars_saved = Counter("voxline_tts_cache_characters_saved", "Characters not sent to the TTS",
                                   ["backend"], registry=self.registry)
        self.hit_ratio = Gauge("voxline_tts_cache_hit_ratio", "Share of TTS requests served from the cache",
                               ["backend"], registry=self.registry)
        self.counts = {"hit": 0, "shared": 0, "miss": 0}
        self.backend = backend

    def record(self, result: str, characters: int = 0, nbytes: int = 0) -> None:
        self.counts[result] += 1
        self.requests.labels(self.backend, result).inc()
        if result != "miss":
            self.bytes_saved.labels(self.backend).inc(nbytes)
            self.chars_saved.labels(self.backend).inc(characters)
        self.hit_ratio.labels(self.backend).set(self.ratio)

    @property
    def ratio(self) -> float:
        total = sum(self.counts.values())
        return (self.counts["hit"] + self.counts["shared"]) / total if total else 0.0


class _Entry:
    """One synthesis in flight: its frames so far, its readers' queues, how it ended."""

    def __init__(self) -> None:
        self.frames: list[AudioFrame] = []
        self.queues: list[asyncio.Queue[AudioFrame | None]] = []
        self.done = False
        self.error: BaseException | None = None
        self.readers = 0
        self.task: asyncio.Task[None] | None = None

    def push(self, frame: AudioFrame) -> None:
        self.frames.append(frame)
        for q in self.queues:
            q.put_nowait(frame)

    def finish(self, error: BaseException | None = None) -> None:
        self.done, self.error = True, error
        for q in self.queues:
            q.put_nowait(None)


class CachedTTS:
    """`tts` (a provider, or one behind reliability wrappers) behind `cache`. `model` names the voice model for the
    key in place of the primary provider's own `model`. `observer` gets each request's `tts_cache` event, as the
    session served does (through `voxline.observe.report`: so not that session's own observer, which would then
    credit each hit twice)."""

    def __init__(self, tts: TTS, cache: CacheBackend, *, model: str | None = None, max_chars: int = 1000,
                 registry: CollectorRegistry | None = None, observer: Observer | None = None) -> None:
        self.tts, self.cache = tts, cache
        self.name = tts.name
        self.sample_rate = tts.sample_rate
        self._path = primary_path(tts)
        primary = self._path[-1]
        self.provider = str(getattr(primary, "name", tts.name))
        self.default_voice = default_voice(primary)
        shape = identity(primary)
        if model is not None:
            shape["model"] = model
        self.model = json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)
        self.max_chars = max_chars
        self.metrics = CacheMetrics(registry, cache.name)
        self.observer = observer
        self._inflight: dict[str, _Entry] = {}

    def key(self, text: str, voice: str | None = None) -> str:
        return cache_key(text, provider=self.provider, voice=voice or self.default_voice, model=self.model,
                         sample_rate=self.sample_rate)

    def stats(self) -> dict[str, Any]:
        return {**self.metrics.counts, "hit_ratio": round(self.metrics.ratio, 4), "in_flight": len(self._inflight)}

    def _emit(self, result: str, text: str, seconds: float) -> None:
        event = {"type": "tts_cache", "result": result, "hit": result != "miss", "characters": len(text),
                 "provider": self.tts.name, "lookup_ms": round(seconds * 1000, 3)}
        for send in (self.observer, report):  # report: the session served, whose cost meter credits a hit
            if send is not None:
                try:
                    send(dict(event))
                except Exception:
                    log.exception("cache observer failed")

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        norm = normalize_text(text) if isinstance(text, str) else ""
        if not norm or len(norm) > self.max_chars:
            async for frame in self.tts.synthesize(text, voice=voice):
                yield frame
            return
        start = time.perf_counter()
        key = self.key(norm, voice)
        entry = self._inflight.get(key)
        if entry is None:
            audio = await self.cache.get(key)
            if audio is not None and audio.sample_rate != self.sample_rate:
                audio = audio.resample(self.sample_rate)
            if audio is not None:
                self.metrics.record("hit", len(norm), audio.num_frames * 2 * audio.channels)
                self._emit("hit", norm, time.perf_counter() - start)
                yield audio
                return
            entry = self._inflight.get(key)  # someone may have started it while we looked
        if entry is not None:
            self.metrics.record("shared", len(norm), sum(f.num_frames * 2 * f.channels for f in entry.frames))
            self._emit("shared", norm, time.perf_counter() - start)
        else:
            entry = _Entry()
            self._inflight[key] = entry
            entry.task = asyncio.create_task(self._produce(key, entry, text, voice), name=f"tts-cache-{key[:8]}")
            self.metrics.record("miss", len(norm))
            self._emit("miss", norm, time.perf_counter() - start)
        async for frame in self._read(key, entry):
            yield frame

    async def _read(self, key: str, entry: _Entry) -> AsyncIterator[AudioFrame]:
        queue: asyncio.Queue[AudioFrame | None] = asyncio.Queue()
        backlog = list(entry.frames)
        live = not entry.done
        if live:
            entry.queues.append(queue)
        entry.readers += 1
        try:
            for old in backlog:
                yield old
            if live:
                while (frame := await queue.get()) is not None:
                    yield frame
            if entry.error is not None:
                raise entry.error
        finally:
            entry.readers -= 1
            if queue in entry.queues:
                entry.queues.remove(queue)
            if entry.readers == 0 and not entry.done and entry.task is not None:
                if self._inflight.get(key) is entry:  # nobody listens any more: stop synthesizing
                    del self._inflight[key]
                entry.task.cancel()

    async def _produce(self, key: str, entry: _Entry, text: str, voice: str | None) -> None:
        failures = _failures(self._path)
        try:
            async for frame in self.tts.synthesize(text, voice=voice):
                entry.push(frame if frame.sample_rate == self.sample_rate else frame.resample(self.sample_rate))
        except asyncio.CancelledError:
            entry.finish(asyncio.CancelledError())
            if self._inflight.get(key) is entry:
                del self._inflight[key]
            raise
        except Exception as exc:
            entry.finish(exc)
            if self._inflight.get(key) is entry:
                del self._inflight[key]
            return
        entry.finish()
        try:
            if _failures(self._path) != failures:
                log.debug("not caching %r: the reliability wrappers retried, resumed or fell back", text[:40])
            elif entry.frames:
                audio = AudioFrame.concat(entry.frames) if len(entry.frames) > 1 else entry.frames[0]
                await self.cache.put(key, audio)
        except Exception:  # the cache is best-effort; the caller already has its audio
            log.exception("storing a TTS cache entry failed")
        finally:
            if self._inflight.get(key) is entry:
                del self._inflight[key]

    async def close(self) -> None:
        for entry in list(self._inflight.values()):
            if entry.task is not None:
                entry.task.cancel()
        self._inflight.clear()
        await self.cache.close()
