"""TTS cache entries in Redis, shared by several workers (and machines).

Same blobs and keys as the disk cache, under `prefix`; `SET NX` makes entries write-once, a TTL (`ttl_s`, the agent
config's `[cache] ttl_s`, 7 days by default) bounds their age, and Redis's own `maxmemory` with
`maxmemory-policy allkeys-lru` bounds their size. A Redis that is full and evicts nothing answers a SET with an
OOM error: that entry is just not stored (one warning), the cache stays on. Calls are bounded by a short socket
timeout. When Redis is unreachable the cache turns itself off with one warning: gets are misses and puts are
dropped, so the TTS keeps serving; it tries Redis again every `retry_after_s` and logs once when it is back.
The client is the `redis` package (`redis.asyncio`), imported when a `RedisCache` is made.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from voxline.audio.frame import AudioFrame
from voxline.cache import CacheError, decode_entry, encode_entry
from voxline.errors import ConfigError

log = logging.getLogger(__name__)


def _out_of_memory(exc: BaseException) -> bool:
    """An OOM error reply (redis-py's `OutOfMemoryError`, or any client's "OOM ..." `ResponseError`)."""
    return type(exc).__name__ == "OutOfMemoryError" or str(exc).startswith("OOM ")


class RedisCache:
    name = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "voxline:tts:",
                 ttl_s: int | None = None, timeout_s: float = 0.25, retry_after_s: float = 30.0,
                 client: Any = None) -> None:
        if client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:
                raise ConfigError("the Redis TTS cache needs the `redis` package: pip install 'redis>=5'") from exc
            client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                             retry_on_timeout=False)
        self.url, self.prefix = url, prefix
        self.ttl_s = ttl_s if ttl_s is not None and ttl_s > 0 else None  # Redis refuses EX 0
        self.retry_after_s = retry_after_s
        self._client = client
        self.enabled = True
        self._down_since: float | None = None
        self.outages = 0
        self.rejected = 0
        """Entries Redis refused to store because it was out of memory."""

    def _usable(self) -> bool:
        if self.enabled:
            return True
        assert self._down_since is not None
        return time.monotonic() - self._down_since >= self.retry_after_s  # time for another try

    def _failed(self, exc: BaseException) -> None:
        if self.enabled:
            self.outages += 1
            log.warning("Redis TTS cache at %s is unavailable (%s); caching is off until it is back, "
                        "speech is still synthesized", self.url, exc)
        self.enabled = False
        self._down_since = time.monotonic()

    def _ok(self) -> None:
        if not self.enabled:
            log.info("Redis TTS cache at %s is back; caching is on again", self.url)
        self.enabled, self._down_since = True, None

    async def get(self, key: str) -> AudioFrame | None:
        if not self._usable():
            return None
        try:
            blob = await self._client.get(self.prefix + key)
        except Exception as exc:  # redis.exceptions.ConnectionError/TimeoutError, OSError: the cache steps aside
            self._failed(exc)
            return None
        self._ok()
        if blob is None:
            return None
        try:
            return decode_entry(blob)
        except CacheError as exc:
            log.warning("dropping damaged Redis TTS cache entry %s: %s", key, exc)
            try:
                await self._client.delete(self.prefix + key)
            except Exception as exc2:
                self._failed(exc2)
            return None

    async def put(self, key: str, audio: AudioFrame) -> None:
        if not self._usable():
            return
        try:
            await self._client.set(self.prefix + key, encode_entry(audio), nx=True, ex=self.ttl_s)
        except Exception as exc:
            if not _out_of_memory(exc):
                self._failed(exc)
                return
            self.rejected += 1  # full, not down: gets still work, and later puts may fit after evictions
            if self.rejected == 1:
                log.warning("Redis TTS cache at %s is full (%s); new entries are not stored: set maxmemory-policy "
                            "allkeys-lru, or a shorter [cache] ttl_s", self.url, exc)
        self._ok()

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # closing a client whose server is gone
            log.debug("closing the Redis client: %s", exc)
