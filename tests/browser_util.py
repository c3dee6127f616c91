"""Helpers for the browser tests: a real uvicorn server in a background thread, a fake-microphone WAV cut from a
real recording, and headless Debian Chromium launched through Playwright."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import Browser, Playwright
from starlette.applications import Starlette

from serving import free_port
from talk import utterance
from voxline.audio.codecs import write_audio
from voxline.audio.frame import AudioFrame

CHROMIUM = Path("/usr/bin/chromium")
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def serve_in_thread(app: Starlette, start_timeout_s: float = 10.0) -> Iterator[str]:
    """Yield http://127.0.0.1:PORT while uvicorn serves `app` from its own thread and event loop.

    A thread (not the test's loop) because Playwright's sync API blocks the test thread while the page talks to
    the server."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", ws_max_size=4 << 20))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def fake_mic_wav(path: Path, *, index: int = 5, speech_s: float = 3.0, silence_s: float = 3.0) -> Path:
    """A WAV for --use-file-for-fake-audio-capture: the first `speech_s` of a real recording, then silence.

    Chromium loops the file, so the page hears a turn every `speech_s + silence_s` seconds."""
    speech = utterance(index, speech_s)
    write_audio(AudioFrame.concat([speech, AudioFrame.silence(silence_s, speech.sample_rate)]), path)
    return path


def launch_chromium(pw: Playwright, fake_mic: Path | None = None) -> Browser:
    """Headless Chromium; with `fake_mic`, getUserMedia is granted and reads that WAV (looped) as the microphone."""
    args = list(BASE_ARGS)
    if fake_mic is not None:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_mic}"]
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


def events_of(hooks: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in hooks["events"] if e["type"] == kind]
