"""A library of named voices on disk, so a session can say `voice="alice"` whatever engine speaks it.

Layout (root: `$VOXLINE_VOICES_DIR`, else `$XDG_DATA_HOME/voxline/voices`, else `~/.local/share/voxline/voices`):

    index.json          {"version": 1, "voices": {name: profile}}
    <name>/samples/...  copies of the reference samples a profile was made from

The index is rewritten whole on every change: written to a temporary file in the same folder, fsync'd, then
renamed over the old one, so a reader sees the old index or the new one, never half of one; read-modify-write
cycles hold an exclusive `flock` on `index.lock` so two processes adding voices at once both land. A corrupt
index is reported (with its path) rather than silently replaced: it is the only record of cloned voice ids.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from voxline.errors import ConfigError

Engine = Literal["piper", "elevenlabs", "xtts", "matched"]
ENGINES: tuple[str, ...] = ("piper", "elevenlabs", "xtts", "matched")
INDEX_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The library's own files, beside the voices' folders: a voice of that name would turn one into a folder (compared
# case-insensitively, for case-insensitive file systems).
RESERVED_NAMES = frozenset({"index.json", "index.lock"})


class VoiceNotFoundError(ConfigError):
    """A voice asked for by name that the library does not hold."""


class LibraryCorruptError(ConfigError):
    """The library's index file cannot be read as a voice index."""


class VoiceProfile(BaseModel):
    """One named voice: which engine speaks it and with what.

    `voice`: the engine's voice argument: a Piper `.onnx` path ("" for the default voice), an ElevenLabs voice
    id, an XTTS model folder; for `matched`, the Piper voice it transforms. `matching`: the WORLD transform of a
    matched voice (see `voxline.voices.matching.MatchProfile`). `samples`: reference files kept in the library.
    """

    name: str
    engine: Engine
    voice: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    samples: list[str] = Field(default_factory=list)
    preset: str = "standard"
    matching: dict[str, Any] | None = None
    created_at: float = Field(default_factory=time.time)


def default_root() -> Path:
    if env := os.environ.get("VOXLINE_VOICES_DIR"):
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "voxline" / "voices"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"invalid voice name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit")
    if name.casefold() in RESERVED_NAMES:
        raise ConfigError(f"invalid voice name {name!r}: the library keeps its own {name.lower()} file there")
    return name


class VoiceLibrary:
    """Named voice profiles in a folder with a JSON index (see the module docstring)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.index_path = self.root / "index.json"

    # -- index I/O ---------------------------------------------------------------------------------------
    def _read(self) -> dict[str, VoiceProfile]:
        try:
            raw = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LibraryCorruptError(f"cannot read the voice library index {self.index_path}: {exc}") from exc
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("voices"), dict):
                raise ValueError("expected an object with a 'voices' object")
            if data.get("version") != INDEX_VERSION:
                raise ValueError(f"index version {data.get('version')!r}, this voxline reads {INDEX_VERSION}")
            return {name: VoiceProfile.model_validate(p) for name, p in data["voices"].items()}
        except (ValueError, ValidationError) as exc:
            raise LibraryCorruptError(
                f"the voice library index {self.index_path} is corrupt ({str(exc).splitlines()[0]}); "
                "fix it by hand or move it away to start an empty library") from exc

    def _write(self, voices: dict[str, VoiceProfile]) -> None:
        payload = {"version": INDEX_VERSION,
                   "voices": {n: p.model_dump(mode="json") for n, p in sorted(voices.items())}}
        fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=2, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.index_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, VoiceProfile]]:
        """The index for a read-modify-write cycle under an exclusive lock; written back on clean exit."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the voice library folder {self.root}: {exc}") from exc
        with open(self.root / "index.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                voices = self._read()
                yield voices
                self._write(voices)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- public API --------------------------------------------------------------------------------------
    def list(self) -> list[VoiceProfile]:
        return [p for _, p in sorted(self._read().items())]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._read()

    def get(self, name: str) -> VoiceProfile:
        voices = self._read()
        if name not in voices:
            known = ", ".join(sorted(voices)) or "none yet"
            raise VoiceNotFoundError(f"no voice named {name!r} in {self.root} (voices: {known})")
        return voices[name]

    def add(self, profile: VoiceProfile, samples: Sequence[str | Path] = (), *, replace: bool = False) -> VoiceProfile:
        """Store `profile` (copying `samples` into the library); `replace` overwrites a voice of that name."""
        check_name(profile.name)
        for s in samples:
            if not Path(s).is_file():
                raise ConfigError(f"sample file not found: {s}")
        with self._locked() as voices:
            if profile.name in voices and not replace:
                raise ConfigError(f"a voice named {profile.name!r} already exists (remove it first, or replace it)")
            stored = list(profile.samples)
            if samples:
                folder = self.root / profile.name / "samples"
                folder.mkdir(parents=True, exist_ok=True)
                for i, s in enumerate(samples):
                    dest = folder / f"{i:02d}-{Path(s).name}"
                    shutil.copyfile(s, dest)
                    stored.append(str(dest.relative_to(self.root)))
            profile = profile.model_copy(update={"samples": stored})
            voices[profile.name] = profile
        return profile

    def remove(self, name: str) -> VoiceProfile:
        with self._locked() as voices:
            if name not in voices:
                raise VoiceNotFoundError(f"no voice named {name!r} in {self.root}")
            profile = voices.pop(name)
        if name.casefold() not in RESERVED_NAMES:  # an entry from before they were refused has no folder of its own
            folder = self.root / check_name(name)
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
        return profile

    def sample_paths(self, profile: VoiceProfile) -> builtins.list[Path]:
        return [p if p.is_absolute() else self.root / p for p in map(Path, profile.samples)]

    def resolve(self, name: str) -> tuple[str, str]:
        """(engine, voice argument for that engine's TTS) of a library voice."""
        p = self.get(name)
        if p.engine in ("piper", "matched") and p.voice and not Path(p.voice).expanduser().is_file():
            raise ConfigError(f"voice {name!r}: its Piper model {p.voice} is missing")
        if p.engine == "xtts":
            # XTTS speaks from reference audio: its voice argument is the folder of this voice's samples.
            return p.engine, str(self.root / name / "samples")
        return p.engine, p.voice


def resolve_voice(name: str, library: VoiceLibrary | None = None) -> tuple[str, str]:
    """(engine, voice argument for the TTS) of the library voice `name`; `VoiceNotFoundError` if unknown.

    piper: the `.onnx` path ("" = PiperTTS's default voice); elevenlabs: the voice id; xtts: the folder of
    reference samples; matched: the base Piper voice, to be spoken through `MatchedVoiceTTS(piper, profile)`,
    whose `name` carries a digest of the transform so a TTS cache keys on it.
    """
    return (library or VoiceLibrary()).resolve(name)
