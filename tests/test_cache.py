"""TTS cache: keys, disk backend (atomic, write-once, several processes, LRU cap), Redis backend (a real
redis-server), the caching TTS wrapper (hits, partial entries streamed to a second reader, cancellation), metrics."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from voxline.audio.frame import AudioFrame
from voxline.cache import (
    CachedTTS,
    CacheError,
    DiskCache,
    RedisCache,
    cache_key,
    decode_entry,
    encode_entry,
    normalize_text,
)
from voxline.errors import ProviderError
from voxline.resilience import Fallback, Retrying, with_timeout

RATE = 22050


def audio(seed: int, seconds: float = 0.5) -> AudioFrame:
    rng = np.random.default_rng(seed)
    return AudioFrame.from_float(rng.uniform(-0.5, 0.5, round(seconds * RATE)).astype(np.float32), RATE)


@dataclass
class SlowTTS:
    """Three frames per sentence, `delay` apart; counts its syntheses."""

    name: str = "slow"
    sample_rate: int = RATE
    delay: float = 0.05
    fail: bool = False
    calls: int = 0
    finished: int = 0
    frames: list[AudioFrame] = field(default_factory=lambda: [audio(i, 0.2) for i in range(3)])

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        self.calls += 1
        for i, frame in enumerate(self.frames):
            await asyncio.sleep(self.delay)
            if self.fail and i == 1:
                raise ProviderError("synthesis broke", provider=self.name, retryable=True)
            yield frame
        self.finished += 1


# ---- keys and entries -----------------------------------------------------------------------------------------------


def test_key_normalization() -> None:
    base = dict(provider="piper", voice="joe", model="m", sample_rate=22050)
    k = cache_key("Hello  there.\n", **base)
    assert k == cache_key(" Hello there. ", **base)
    assert k == cache_key("Hello\tthere.", **base)
    assert cache_key("Cafe\u0301", **base) == cache_key("Café", **base)  # NFD == NFC
    assert k != cache_key("hello there.", **base)  # case kept
    for change in (dict(provider="x"), dict(voice="amy"), dict(model="n"), dict(sample_rate=16000)):
        assert cache_key("Hello there.", **{**base, **change}) != k
    assert cache_key("a", provider="ab", sample_rate=1) != cache_key("ab", provider="a", sample_rate=1)
    assert normalize_text("  a \n b ") == "a b"


def test_entry_roundtrip_and_damage() -> None:
    frame = audio(1)
    blob = encode_entry(frame)
    assert decode_entry(blob) == frame
    for bad in (blob[:10], blob[:-3], b"XXXX" + blob[4:]):
        with pytest.raises(CacheError):
            decode_entry(bad)


# ---- disk -----------------------------------------------------------------------------------------------------------


def test_disk_put_get_write_once_and_damaged(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    key = "ab" * 32
    assert cache.get_sync(key) is None
    assert cache.put_sync(key, audio(1))
    assert not cache.put_sync(key, audio(2))  # write-once: the first entry stays
    assert cache.get_sync(key) == audio(1)
    cache.path(key).write_bytes(b"garbage")
    assert cache.get_sync(key) is None and not cache.path(key).exists()
    assert not list(tmp_path.rglob("*.tmp"))


def _writer(root: str, worker: int, keys: list[str], q: mp.Queue) -> None:  # type: ignore[type-arg]
    cache = DiskCache(root, max_bytes=1 << 30)
    won = 0
    for key in keys:
        won += cache.put_sync(key, audio(worker, 0.3))
    q.put(won)


def test_disk_several_processes_write_the_same_keys(tmp_path: Path) -> None:
    keys = [f"{i:064x}" for i in range(40)]
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, keys, q)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    wins = sum(q.get(timeout=5) for _ in procs)
    assert wins == len(keys)  # each key published exactly once
    cache = DiskCache(tmp_path)
    candidates = [audio(w, 0.3) for w in range(4)]
    for key in keys:
        got = cache.get_sync(key)
        assert got is not None and any(got == c for c in candidates)  # whole, from one writer
    assert not list(tmp_path.rglob("*.tmp"))


def test_disk_eviction_is_lru_under_the_cap(tmp_path: Path) -> None:
    entry = len(encode_entry(audio(0, 0.1)))
    cache = DiskCache(tmp_path, max_bytes=entry * 5 + 10)
    keys = [f"{i:064x}" for i in range(8)]
    for i, key in enumerate(keys[:5]):
        cache.put_sync(key, audio(i, 0.1))
        t = time.time() - 100 + i
        os.utime(cache.path(key), (t, t))
    assert cache.get_sync(keys[0]) is not None  # touch the oldest: now the most recently used
    for i, key in enumerate(keys[5:], start=5):
        cache.put_sync(key, audio(i, 0.1))
    assert cache.size() <= cache.max_bytes
    present = {k for k in keys if cache.path(k).exists()}
    assert keys[0] in present and keys[7] in present
    assert keys[1] not in present and keys[2] not in present
    assert cache.evictions >= 2


# ---- the caching TTS ------------------------------------------------------------------------------------------------


async def test_cached_tts_miss_then_hit_and_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    events: list[dict] = []
    tts = SlowTTS()
    cached = CachedTTS(tts, DiskCache(tmp_path), registry=registry, observer=events.append)
    first = [f async for f in cached.synthesize("Hello there.")]
    assert len(first) == 3 and tts.calls == 1
    await asyncio.sleep(0.05)  # the write-through happens after the readers are served
    start = time.perf_counter()
    again = [f async for f in cached.synthesize("  Hello   there. ")]
    took = time.perf_counter() - start
    assert tts.calls == 1 and again == [AudioFrame.concat(first)]
    assert took < 0.05, f"cache hit took {took * 1000:.1f} ms"
    assert [e["result"] for e in events] == ["miss", "hit"]
    assert registry.get_sample_value("voxline_tts_cache_requests_total", {"backend": "disk", "result": "hit"}) == 1
    assert registry.get_sample_value("voxline_tts_cache_bytes_saved_total", {"backend": "disk"}) == sum(
        f.num_frames * 2 for f in first)
    assert registry.get_sample_value("voxline_tts_cache_hit_ratio", {"backend": "disk"}) == 0.5
    assert cached.stats()["hit_ratio"] == 0.5


async def test_partial_entry_streams_to_a_second_reader(tmp_path: Path) -> None:
    tts = SlowTTS(delay=0.1)
    cached = CachedTTS(tts, DiskCache(tmp_path))
    got_a: list[float] = []
    got_b: list[float] = []
    t0 = time.monotonic()

    async def read(into: list[float]) -> list[AudioFrame]:
        out = []
        async for f in cached.synthesize("A shared sentence."):
            into.append(time.monotonic() - t0)
            out.append(f)
        return out

    a = asyncio.create_task(read(got_a))
    await asyncio.sleep(0.15)  # one frame out, two to come
    b = asyncio.create_task(read(got_b))
    frames_a, frames_b = await a, await b
    assert tts.calls == 1  # one synthesis for both
    assert frames_a == frames_b == tts.frames
    assert got_b[0] < 0.2  # B started with the backlog at once, before the synthesis had finished (~0.3 s)
    assert cached.stats()["shared"] == 1


async def test_abandoned_synthesis_is_cancelled_and_not_stored(tmp_path: Path) -> None:
    tts = SlowTTS(delay=0.1)
    disk = DiskCache(tmp_path)
    cached = CachedTTS(tts, disk)

    async def first_frame_only() -> None:
        async for _ in cached.synthesize("Interrupted sentence."):
            raise asyncio.CancelledError  # barge-in after the first frame

    with pytest.raises(asyncio.CancelledError):
        await first_frame_only()
    await asyncio.sleep(0.4)
    assert tts.finished == 0 and disk.get_sync(cached.key("Interrupted sentence.")) is None
    assert cached.stats()["in_flight"] == 0


async def test_failed_synthesis_fails_readers_and_stores_nothing(tmp_path: Path) -> None:
    tts = SlowTTS(fail=True)
    disk = DiskCache(tmp_path)
    cached = CachedTTS(tts, disk)
    with pytest.raises(ProviderError, match="broke"):
        [f async for f in cached.synthesize("Broken.")]
    assert disk.get_sync(cached.key("Broken.")) is None
    tts.fail = False
    assert len([f async for f in cached.synthesize("Broken.")]) == 3  # next time it is tried again


@dataclass
class PiperLike:
    """Piper's cache identity without its model: a calibrated voice file and its synthesis settings."""

    name: str = "piper"
    sample_rate: int = RATE
    model: str = "en_US-joe-medium.onnx@calibrated"
    length_scale: float = 1.0

    def __post_init__(self) -> None:
        from piper.config import SynthesisConfig

        self.synthesis = asdict(SynthesisConfig(length_scale=self.length_scale))

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        yield audio(0, 0.1)


def test_key_is_the_primary_providers_identity_behind_the_wrappers(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from voxline.providers.elevenlabs import ElevenLabsTTS
    from voxline.providers.openai import OpenAITTS

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ELEVENLABS_API_KEY", "xi-test")
    disk = DiskCache(tmp_path)

    def key(tts: object, voice: str | None = None) -> str:
        return CachedTTS(tts, disk).key("Hello there.", voice)

    old = key(with_timeout(OpenAITTS(model="tts-1", voice="alloy", speed=1.5), first_item=1))
    assert old != key(with_timeout(OpenAITTS(model="gpt-4o-mini-tts", voice="nova"), first_item=1))
    for change in (dict(model="tts-1-hd"), dict(voice="nova"), dict(speed=1.0), dict(response_format="wav"),
                   dict(instructions="Speak warmly.")):
        tts = OpenAITTS(**{"model": "tts-1", "voice": "alloy", "speed": 1.5, **change})
        assert key(Retrying(with_timeout(tts, first_item=1))) != old, change
    same = Retrying(with_timeout(OpenAITTS(model="tts-1", voice="alloy", speed=1.5), first_item=1))
    assert key(same) == old == key(same, "alloy")  # no voice asked for: the provider's default voice
    eleven = key(with_timeout(ElevenLabsTTS(), first_item=1))
    assert eleven != key(with_timeout(ElevenLabsTTS(model_id="eleven_multilingual_v2"), first_item=1))
    assert eleven != key(with_timeout(ElevenLabsTTS(voice_settings={"stability": 0.9}), first_item=1))
    piper = key(with_timeout(PiperLike(), first_item=1))
    assert piper == key(PiperLike())  # the wrappers do not change the audio
    assert piper != key(PiperLike(length_scale=1.3))
    assert piper != key(PiperLike(model="en_US-joe-medium.onnx"))  # audio from before the calibration stays apart


@dataclass
class FlakyTTS:
    """Like SlowTTS, but only its first `failures` syntheses break after one frame; frames are filled with `value`."""

    name: str = "flaky"
    value: int = 111
    failures: int = 0
    sample_rate: int = RATE
    calls: int = 0

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        self.calls += 1
        for i in range(3):
            if i == 1 and self.failures:
                self.failures -= 1
                raise ProviderError("dropped mid-stream", provider=self.name, retryable=True)
            yield AudioFrame(np.full((4410, 1), self.value, np.int16), RATE)


async def test_a_fallbacks_audio_is_not_stored_under_the_primarys_key(tmp_path: Path) -> None:
    primary = FlakyTTS("elevenlabs", 111, failures=1)
    chain = Fallback(with_timeout(primary, first_item=2), with_timeout(FlakyTTS("piper", 999), first_item=2))
    cached = CachedTTS(chain, DiskCache(tmp_path))
    first = [f async for f in cached.synthesize("Hello there.")]
    assert first[0].samples[0, 0] == 111 and first[-1].samples[0, 0] == 999  # resumed on the fallback
    await asyncio.sleep(0.05)
    assert cached.cache.get_sync(cached.key("Hello there.")) is None
    again = [f async for f in cached.synthesize("Hello there.")]  # the primary is back: its own voice
    assert {f.samples[0, 0] for f in again} == {111} and primary.calls == 2
    await asyncio.sleep(0.05)
    hit = [f async for f in cached.synthesize("Hello there.")]
    assert primary.calls == 2 and hit == [AudioFrame.concat(again)]  # whole, from the primary: stored


async def test_a_resumed_synthesis_is_not_stored(tmp_path: Path) -> None:
    tts = FlakyTTS(failures=1)
    cached = CachedTTS(Retrying(with_timeout(tts, first_item=2), attempts=2, base_delay=0), DiskCache(tmp_path))
    text = "A sentence that broke off in the middle and was resumed."
    assert len([f async for f in cached.synthesize(text)]) >= 3
    await asyncio.sleep(0.05)
    assert tts.calls == 2 and cached.cache.get_sync(cached.key(text)) is None
    [f async for f in cached.synthesize(text)]
    await asyncio.sleep(0.05)
    assert cached.cache.get_sync(cached.key(text)) is not None


@pytest.mark.slow
async def test_cached_piper_hit_is_identical_and_fast(tmp_path: Path, model_store) -> None:  # type: ignore[no-untyped-def]
    from voxline.providers.piper import PiperTTS

    piper = PiperTTS(store=model_store)
    cached = CachedTTS(piper, DiskCache(tmp_path), model="piper-joe")
    text = "Thanks for calling. How can I help you today?"
    first = AudioFrame.concat([f async for f in cached.synthesize(text)])
    assert first.duration > 1.0
    await asyncio.sleep(0.1)
    start = time.perf_counter()
    it = cached.synthesize(text)
    hit = await anext(it)
    took = time.perf_counter() - start
    await it.aclose()
    assert hit == first and took < 0.02
    piper.close()


# ---- Redis: a real server -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/system-deps.sh (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(5)


async def test_redis_backend(redis_url: str) -> None:
    cache = RedisCache(redis_url, prefix="test:")
    key = "cd" * 32
    assert await cache.get(key) is None
    await cache.put(key, audio(1))
    await cache.put(key, audio(2))  # NX: write-once
    assert await cache.get(key) == audio(1)
    tts = SlowTTS()
    cached = CachedTTS(tts, cache)
    first = [f async for f in cached.synthesize("Via Redis.")]
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    again = [f async for f in cached.synthesize("Via Redis.")]
    assert time.perf_counter() - start < 0.05
    assert tts.calls == 1 and again == [AudioFrame.concat(first)]
    await cache.close()


async def test_redis_down_turns_cache_off_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", retry_after_s=0.3)  # nothing listens there
    tts = SlowTTS(delay=0.0)
    cached = CachedTTS(tts, cache)
    with caplog.at_level(logging.WARNING, logger="voxline.cache.redis"):
        for _ in range(5):
            frames = [f async for f in cached.synthesize("Still served.")]
            assert len(frames) == 3
    assert tts.calls == 5 and not cache.enabled
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "caching is off" in warnings[0].getMessage()
    await cache.close()


async def test_redis_entries_expire_and_a_full_redis_only_refuses_the_entry(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from voxline.agent.config import AgentConfig
    from voxline.agent.stack import build_stack

    config = AgentConfig.load(providers={"stt": "scripted", "llm": "scripted", "tts": "scripted"},
                              turn={"detector": "energy"}, reliability={"fallback_phrases": False},
                              cache={"backend": "redis", "redis_url": redis_url})
    assert config.cache.ttl_s == 7 * 24 * 3600
    stack = build_stack(config)
    assert isinstance(stack.tts, CachedTTS)
    cache = stack.tts.cache
    assert isinstance(cache, RedisCache) and cache.ttl_s == config.cache.ttl_s
    await cache.put("ef" * 32, audio(1))
    assert 0 < await cache._client.ttl(cache.prefix + "ef" * 32) <= config.cache.ttl_s

    admin = cache._client
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", 1)  # full: every SET is refused with an OOM error
    try:
        with caplog.at_level(logging.WARNING, logger="voxline.cache.redis"):
            await cache.put("aa" * 32, audio(2))
            await cache.put("bb" * 32, audio(3))
        assert cache.enabled and cache.rejected == 2 and cache.outages == 0  # not down: just full
        assert await cache.get("ef" * 32) == audio(1)  # hits still served
        assert len([r for r in caplog.records if "full" in r.getMessage()]) == 1
    finally:
        await admin.config_set("maxmemory", 0)
    assert await cache.get("aa" * 32) is None
    await cache.put("aa" * 32, audio(2))
    assert await cache.get("aa" * 32) == audio(2)
    await cache.close()


async def test_redis_comes_back(redis_url: str) -> None:
    cache = RedisCache(redis_url, prefix="back:", retry_after_s=0.1)
    cache._failed(ConnectionError("simulated outage"))
    assert await cache.get("ab" * 32) is None and not cache.enabled  # off: not even asked
    await asyncio.sleep(0.15)
    await cache.put("ab" * 32, audio(3))
    assert cache.enabled and await cache.get("ab" * 32) == audio(3)
    await cache.close()
