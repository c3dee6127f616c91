"""Voice library: CRUD, index integrity (atomic rewrites, concurrent writers, corrupt index), name resolution."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from voxline.errors import ConfigError
from voxline.voices.library import (
    LibraryCorruptError,
    VoiceLibrary,
    VoiceNotFoundError,
    VoiceProfile,
    default_root,
    resolve_voice,
)


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    return VoiceLibrary(tmp_path / "voices")


def test_add_list_show_remove(library: VoiceLibrary, speech_dir: Path) -> None:
    sample = speech_dir / "multi" / "1998-15444-0000.flac"
    added = library.add(VoiceProfile(name="ada", engine="elevenlabs", voice="abc123",
                                     labels={"accent": "british", "gender": "female"}), [sample])
    library.add(VoiceProfile(name="bob", engine="piper", voice=""))
    assert [p.name for p in library.list()] == ["ada", "bob"]
    assert added.samples == ["ada/samples/00-1998-15444-0000.flac"]
    assert library.sample_paths(added)[0].read_bytes() == sample.read_bytes()
    shown = library.get("ada")
    assert shown.labels == {"accent": "british", "gender": "female"} and shown.voice == "abc123"
    assert resolve_voice("ada", library) == ("elevenlabs", "abc123")
    assert resolve_voice("bob", library) == ("piper", "")
    library.remove("ada")
    assert [p.name for p in library.list()] == ["bob"]
    assert not (library.root / "ada").exists()
    with pytest.raises(VoiceNotFoundError, match="no voice named 'ada'"):
        library.get("ada")
    with pytest.raises(VoiceNotFoundError):
        library.remove("ada")


def test_duplicates_names_and_missing_files(library: VoiceLibrary, tmp_path: Path) -> None:
    library.add(VoiceProfile(name="ada", engine="piper"))
    with pytest.raises(ConfigError, match="already exists"):
        library.add(VoiceProfile(name="ada", engine="piper"))
    library.add(VoiceProfile(name="ada", engine="piper", description="new"), replace=True)
    assert library.get("ada").description == "new"
    for bad in ("", "../etc", "a b", "-x", "x" * 65):
        with pytest.raises(ConfigError, match="invalid voice name"):
            library.add(VoiceProfile(name=bad, engine="piper"))
    with pytest.raises(ConfigError, match="sample file not found"):
        library.add(VoiceProfile(name="cy", engine="elevenlabs"), [tmp_path / "nope.wav"])
    assert "cy" not in library


def test_names_of_the_librarys_own_files_are_refused(library: VoiceLibrary, tmp_path: Path) -> None:
    sample = tmp_path / "ref.wav"
    sample.write_bytes(b"RIFF")
    library.add(VoiceProfile(name="ada", engine="piper"))
    for bad in ("index.json", "index.lock", "INDEX.JSON", "Index.Lock"):
        with pytest.raises(ConfigError, match="invalid voice name"):
            library.add(VoiceProfile(name=bad, engine="xtts"), [sample])  # samples: a folder of that name
        assert [p.name for p in library.list()] == ["ada"]  # the library still works
    assert library.index_path.is_file() and (library.root / "index.lock").is_file()
    library.add(VoiceProfile(name="index.json.bak", engine="piper"))  # only the exact names clash
    assert [p.name for p in library.list()] == ["ada", "index.json.bak"]


def test_resolve_checks_local_models(library: VoiceLibrary, tmp_path: Path) -> None:
    model = tmp_path / "v.onnx"
    model.write_bytes(b"x")
    library.add(VoiceProfile(name="local", engine="piper", voice=str(model)))
    assert resolve_voice("local", library) == ("piper", str(model))
    model.unlink()
    with pytest.raises(ConfigError, match=r"Piper model .* is missing"):
        resolve_voice("local", library)
    library.add(VoiceProfile(name="xt", engine="xtts", voice=str(tmp_path)))
    assert resolve_voice("xt", library) == ("xtts", str(library.root / "xt" / "samples"))


def test_corrupt_index_is_a_clear_error(library: VoiceLibrary) -> None:
    library.add(VoiceProfile(name="ada", engine="piper"))
    for broken in ('{"version": 1, "voices": {"ada": {"name": "ada"', "[]",
                   '{"version": 1, "voices": {"ada": {"name": "ada", "engine": "speakomatic"}}}',
                   '{"version": 99, "voices": {}}'):
        library.index_path.write_text(broken)
        with pytest.raises(LibraryCorruptError, match=r"index .*index.json is corrupt"):
            library.list()
        with pytest.raises(LibraryCorruptError):  # and a write does not silently replace it
            library.add(VoiceProfile(name="bob", engine="piper"))
        assert library.index_path.read_text() == broken


def test_failed_write_keeps_the_old_index(library: VoiceLibrary, monkeypatch: pytest.MonkeyPatch) -> None:
    library.add(VoiceProfile(name="ada", engine="piper"))
    before = library.index_path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        library.add(VoiceProfile(name="bob", engine="piper"))
    monkeypatch.undo()
    assert library.index_path.read_bytes() == before
    assert [p.name for p in library.list()] == ["ada"]
    assert not [p for p in library.root.iterdir() if p.name.startswith(".index.")]  # no temp file left


def _add_many(root: str, worker: int) -> None:
    lib = VoiceLibrary(root)
    for i in range(10):
        lib.add(VoiceProfile(name=f"w{worker}-{i}", engine="piper"))


def test_concurrent_writers_all_land(tmp_path: Path) -> None:
    root = str(tmp_path / "voices")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(root, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = {p.name for p in VoiceLibrary(root).list()}
    assert names == {f"w{w}-{i}" for w in range(3) for i in range(10)}
    json.loads((Path(root) / "index.json").read_text())


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOXLINE_VOICES_DIR", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"
    monkeypatch.delenv("VOXLINE_VOICES_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "voxline" / "voices"
    assert VoiceLibrary().list() == []
    assert not os.path.exists(tmp_path / "xdg")  # reading creates nothing
