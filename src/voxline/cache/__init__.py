"""The TTS cache: synthesized audio kept under a content-addressed key, on disk (default) or in Redis.

A key is the sha256 of everything that changes the audio: the normalized text (Unicode NFC, runs of whitespace
collapsed, case kept: "Yes." and "YES." are said differently), the voice, the model, the output format and sample
rate, and the provider's name. An entry is one blob: a 16-byte header (magic, sample rate, channels, frame count)
then little-endian PCM16, so a truncated or foreign blob is recognised and treated as a miss.

Backends (`DiskCache`, `RedisCache`) share the small `CacheBackend` interface; `CachedTTS` wraps any `TTS` with
one of them, streams an entry still being synthesized to every caller who asks for it meanwhile, and counts hits.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from typing import Protocol, runtime_checkable

import numpy as np

from voxline.audio.frame import AudioFrame
from voxline.errors import VoxlineError

MAGIC = b"VXA1"
_HEADER = struct.Struct("<4sIHxxI")  # magic, sample rate, channels, (pad), frame count
HEADER_SIZE = _HEADER.size
_WHITESPACE = re.compile(r"\s+")


class CacheError(VoxlineError):
    """A cache entry that cannot be decoded (truncated, foreign or corrupt); callers treat it as a miss."""


def normalize_text(text: str) -> str:
    """Text as it is keyed: NFC, whitespace runs collapsed to one space, trimmed; case and punctuation kept."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def cache_key(text: str, *, provider: str, voice: str = "", model: str = "", sample_rate: int,
              fmt: str = "pcm16") -> str:
    """The content address of one synthesis: sha256 hex of the normalized text and everything that shapes the audio."""
    fields = (normalize_text(text), voice or "", model or "", f"{fmt}/{int(sample_rate)}", provider)
    digest = hashlib.sha256()
    for value in fields:  # length-prefixed, so no two different field tuples hash the same bytes
        raw = value.encode("utf-8")
        digest.update(len(raw).to_bytes(4, "little"))
        digest.update(raw)
    return digest.hexdigest()


def encode_entry(frame: AudioFrame) -> bytes:
    return _HEADER.pack(MAGIC, frame.sample_rate, frame.channels, frame.num_frames) + frame.pcm()


def decode_entry(blob: bytes | bytearray | memoryview) -> AudioFrame:
    if len(blob) < HEADER_SIZE:
        raise CacheError(f"cache entry of {len(blob)} bytes is shorter than its header")
    magic, rate, channels, n = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CacheError("not a voxline audio cache entry")
    if channels < 1 or len(blob) - HEADER_SIZE != n * 2 * channels:
        raise CacheError(f"truncated cache entry: {len(blob) - HEADER_SIZE} PCM bytes for {n} frames")
    samples = np.frombuffer(blob, dtype="<i2", offset=HEADER_SIZE).reshape(-1, channels)
    return AudioFrame(samples, rate, channels)


@runtime_checkable
class CacheBackend(Protocol):
    """Where entries live. `get` returns None on a miss (or when the backend is unavailable: never raises for
    that); `put` is write-once (an existing entry is kept) and best-effort."""

    name: str

    async def get(self, key: str) -> AudioFrame | None: ...

    async def put(self, key: str, audio: AudioFrame) -> None: ...

    async def close(self) -> None: ...


from voxline.cache.disk import DiskCache  # noqa: E402
from voxline.cache.redis import RedisCache  # noqa: E402
from voxline.cache.tts import CachedTTS, CacheMetrics  # noqa: E402

__all__ = ["HEADER_SIZE", "CacheBackend", "CacheError", "CacheMetrics", "CachedTTS", "DiskCache", "RedisCache",
           "cache_key", "decode_entry", "encode_entry", "normalize_text"]
