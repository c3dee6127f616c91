"""TTS cache: time to first audio for a cached vs an uncached phrase, disk and Redis backends.

The TTS is the real `PiperTTS` (joe medium) when it loads, else a fake with Piper-like timing (90 ms to the first
audio); the output says which. `uncached` is each phrase's first synthesis through `CachedTTS` (a miss: Piper's
own first-audio time plus the cache lookup); `cached` the median and p95 of --runs later requests (hits). Redis
runs against a `redis-server` started on a free loopback port when the binary exists (scripts/system-deps.sh).
Goal: cached first audio <= 5 ms.

    .venv/bin/python bench/cache.py --runs 50 --json /tmp/cache.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from voxline.audio.frame import AudioFrame
from voxline.cache import CachedTTS, DiskCache, RedisCache
from voxline.models.store import disable_hubs

PHRASES = ["Sorry, I didn't catch that. Could you repeat?",
           "Thanks for calling. How can I help you today?",
           "Your table for four is booked for eight tonight. Is there anything else I can do?"]


class FakePiper:
    """Piper-like timing without the model: 90 ms to the first sentence, RTF 0.05."""

    name = "fake-piper"
    sample_rate = 22050

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        seconds = len(text) / 14
        await asyncio.sleep(0.09)
        yield AudioFrame.from_float(np.zeros(int(seconds * self.sample_rate), np.float32), self.sample_rate)


def make_tts() -> tuple[Any, str]:
    try:
        from voxline.providers.piper import PiperTTS

        return PiperTTS(), "piper (real, joe medium)"
    except Exception as exc:  # no model here: say so, and go on with the fake
        return FakePiper(), f"fake (Piper unavailable: {exc})"


async def first_audio(tts: CachedTTS, text: str) -> float:
    start = time.perf_counter()
    it = tts.synthesize(text)
    await anext(it)
    took = time.perf_counter() - start
    async for _ in it:  # let a miss finish, so it is written through
        pass
    return took


async def bench_backend(tts: Any, backend: Any, runs: int) -> dict[str, Any]:
    cached = CachedTTS(tts, backend, model="bench")
    out: dict[str, Any] = {"backend": backend.name, "phrases": []}
    for text in PHRASES:
        miss = await first_audio(cached, text)
        await asyncio.sleep(0.05)  # the write-through
        hits = sorted([await first_audio(cached, text) for _ in range(runs)])
        out["phrases"].append({"text": text, "uncached_ms": round(miss * 1000, 2),
                               "cached_median_ms": round(statistics.median(hits) * 1000, 3),
                               "cached_p95_ms": round(hits[int(0.95 * (len(hits) - 1))] * 1000, 3)})
    out["stats"] = cached.stats()
    return out


def start_redis() -> tuple[subprocess.Popen[bytes] | None, str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    disable_hubs()
    tts, which = make_tts()
    results: dict[str, Any] = {"tts": which, "runs": args.runs, "backends": []}
    with tempfile.TemporaryDirectory() as root:
        results["backends"].append(await bench_backend(tts, DiskCache(root), args.runs))
    proc, url = start_redis()
    if proc is not None and url is not None:
        try:
            redis = RedisCache(url)
            results["backends"].append(await bench_backend(tts, redis, args.runs))
            await redis.close()
        finally:
            proc.terminate()
            proc.wait(5)
    else:
        results["redis"] = "skipped: redis-server not installed (scripts/system-deps.sh)"
    print(f"TTS: {which}; cached = median/p95 of {args.runs} hits; goal cached <= 5 ms")
    print(f"{'backend':8} {'phrase':52} {'uncached ms':>12} {'cached med':>11} {'cached p95':>11}")
    for b in results["backends"]:
        for p in b["phrases"]:
            print(f"{b['backend']:8} {p['text'][:50]:52} {p['uncached_ms']:12.1f} {p['cached_median_ms']:11.3f} "
                  f"{p['cached_p95_ms']:11.3f}")
    if "redis" in results:
        print(results["redis"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
