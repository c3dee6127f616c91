"""TTS cache entries as files: atomic, write-once, size-capped with least-recently-used eviction.

Layout: `<root>/<key[:2]>/<key>.pcm` (see `voxline.cache` for the blob format); root defaults to
`$XDG_CACHE_HOME/voxline/tts` (`~/.cache/voxline/tts`).

Several processes may share one root:

- A writer writes a private temp file (`.<key>.<pid>.<random>.tmp`) and publishes it with `os.link`, which fails
  if the entry exists: the first complete entry wins and is never overwritten (write-once), and no reader can see
  a half-written file. Two processes missing the same key at once both synthesize; one result is kept.
- "Recently used" is the file's mtime, touched on every hit; eviction runs under an exclusive `fcntl.flock` on
  `<root>/.lock`, so only one process at a time scans and deletes. Each process keeps an estimate of the total
  size (a scan at start, plus its own writes, and a fresh scan every `rescan_every` writes); the cap can be
  exceeded by what other processes wrote since their last scan. Eviction goes down to 90 % of the cap. Temp
  files older than an hour (a writer that crashed) are removed by the scan.
- A file that does not decode (a foreign or damaged file) is deleted and counted as a miss.

Streaming an entry still being written is `CachedTTS`'s job, within one process; across processes a reader sees
either nothing (and synthesizes itself) or the complete entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import time
from pathlib import Path

from voxline.audio.frame import AudioFrame
from voxline.cache import CacheError, decode_entry, encode_entry
from voxline.errors import ConfigError

log = logging.getLogger(__name__)

STALE_TMP_S = 3600.0


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxline" / "tts"


class DiskCache:
    """Files under `root`, at most `max_bytes` in all (default 512 MiB)."""

    name = "disk"

    def __init__(self, root: str | Path | None = None, *, max_bytes: int = 512 * 1024 * 1024,
                 rescan_every: int = 64) -> None:
        if max_bytes <= 0:
            raise ConfigError(f"cache size cap must be positive, got {max_bytes} bytes")
        self.root = Path(root) if root is not None else default_root()
        self.max_bytes = max_bytes
        self.rescan_every = max(1, rescan_every)
        self._size: int | None = None
        self._writes = 0
        self.evictions = 0

    def path(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / key[:2] / f"{key}.pcm"

    # ---- async interface ----------------------------------------------------------------------------------------

    async def get(self, key: str) -> AudioFrame | None:
        return await asyncio.to_thread(self.get_sync, key)

    async def put(self, key: str, audio: AudioFrame) -> None:
        await asyncio.to_thread(self.put_sync, key, audio)

    async def close(self) -> None:
        return None

    # ---- blocking work (runs in a thread) -------------------------------------------------------------------------

    def get_sync(self, key: str) -> AudioFrame | None:
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                blob = f.read()
            os.utime(path)  # recently used
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read TTS cache entry %s: %s", path, exc)
            return None
        try:
            return decode_entry(blob)
        except CacheError as exc:
            log.warning("dropping damaged TTS cache entry %s: %s", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def put_sync(self, key: str, audio: AudioFrame) -> bool:
        """Publish an entry; False when it existed already (or could not be written: the cache is best-effort)."""
        path = self.path(key)
        if path.exists():
            return False
        blob = encode_entry(audio)
        tmp = path.parent / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(blob)
            try:
                os.link(tmp, path)  # atomic and write-once: fails if another writer got there first
            except FileExistsError:
                return False
        except OSError as exc:
            log.warning("cannot write TTS cache entry %s: %s", path, exc)
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if self._size is None:
            self._size = self._scan_size()
        else:
            self._size += len(blob)
        self._writes += 1
        if self._size > self.max_bytes or self._writes % self.rescan_every == 0:
            self.evict()
        return True

    def _entries(self) -> list[tuple[float, int, Path]]:
        out: list[tuple[float, int, Path]] = []
        now = time.time()
        if not self.root.is_dir():
            return out
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if p.suffix == ".tmp":
                    if now - st.st_mtime > STALE_TMP_S:
                        with contextlib.suppress(OSError):
                            p.unlink()
                    continue
                if p.suffix == ".pcm":
                    out.append((st.st_mtime, st.st_size, p))
        return out

    def _scan_size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> int:
        """Delete least recently used entries until the total is under 90 % of the cap; returns bytes freed."""
        self.root.mkdir(parents=True, exist_ok=True)
        freed = 0
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = sorted(self._entries())
                total = sum(size for _, size, _ in entries)
                if total > self.max_bytes:
                    target = int(self.max_bytes * 0.9)
                    for _, size, p in entries:
                        if total <= target:
                            break
                        with contextlib.suppress(FileNotFoundError):
                            p.unlink()
                            self.evictions += 1
                            freed += size
                        total -= size
                self._size = total
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return freed

    def size(self) -> int:
        """Bytes on disk now (a scan)."""
        return self._scan_size()
