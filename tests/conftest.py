"""Shared fixtures: where the recorded speech lives, the model store the set-up filled, the vendor fakes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voxline.fakes import FakeVendors, running
from voxline.models.store import ModelStore, disable_hubs

disable_hubs()
# Session records and other user data go to a throw-away folder, not the developer's own ~/.local/share.
os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="voxline-test-data-"))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VOXLINE_SHARED", REPO.parent / "shared"))
SPEECH = SHARED / "data" / "speech"
BAD = SHARED / "data" / "bad"


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not SPEECH.is_dir():
        pytest.fail(f"recorded speech not found at {SPEECH} (set VOXLINE_SHARED)")
    return SPEECH


@pytest.fixture(scope="session")
def manifest(speech_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (speech_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def bad_dir() -> Path:
    return BAD


@pytest.fixture(scope="session")
def model_store() -> ModelStore:
    """The default model store; `make test` pulls the default set into it before pytest starts."""
    return ModelStore()


@pytest.fixture(scope="module")
async def fakes() -> AsyncIterator[FakeVendors]:
    """The four vendor fakes on a loopback port for one test module; they accept the key "fake-key"."""
    async with running() as vendors:
        yield vendors
