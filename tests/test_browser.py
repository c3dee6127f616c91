"""The page served at `/`, driven by headless Chromium against the real server (scripted STT/LLM/TTS, real Silero
VAD turn detection): microphone turns from a real recording, typed turns, barge-in, and the worklet resampler."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, Playwright, sync_playwright

from browser_util import CHROMIUM, events_of, fake_mic_wav, launch_chromium, serve_in_thread
from voxline.agent.config import AgentConfig
from voxline.agent.stack import Stack, scripted_stack
from voxline.server import create_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: run scripts/system-deps.sh"),
]

REPLY = "It is ten past four. Is there anything else I can help you with this afternoon, or shall we stop here?"
TTS_RATE = 24000
SECONDS_PER_WORD = 0.08


@pytest.fixture(scope="module")
def stack() -> Stack:
    return scripted_stack(stt={"interim_after_s": 0.6}, llm={"reply": REPLY},
                          tts={"sample_rate": TTS_RATE, "seconds_per_word": SECONDS_PER_WORD})


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> Iterator[str]:
    config = AgentConfig.load(turn={"detector": "silero", "silence_s": 0.4})
    with serve_in_thread(create_app(stack, config)) as url:
        yield url


@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $VOXLINE_SCREENSHOTS to keep them for a look, else the test's temp dir."""
    out = Path(os.environ.get("VOXLINE_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def open_page(browser: Any, url: str) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            problems.append(f"console error: {msg.text} ({msg.location.get('url')})")

    page.on("console", on_console)
    page.goto(url + "/")
    return page, problems


def hooks(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("JSON.parse(JSON.stringify(window.voxline))")
    return result


def test_voice_turn_from_the_microphone(base_url: str, pw: Playwright, tmp_path: Path, shots: Path) -> None:
    browser = launch_chromium(pw, fake_mic_wav(tmp_path / "mic.wav"))
    try:
        page, problems = open_page(browser, base_url)
        assert page.inner_text("#status") == "not connected"
        page.wait_for_selector("#stack .chip")  # the providers from /healthz
        page.click("#start")
        page.wait_for_function("window.voxline.state === 'live'", timeout=10_000)
        assert page.inner_text("#start").strip().endswith("Stop")
        page.wait_for_function("window.voxline.timelines.length > 0 && window.voxline.playedSamples > 0",
                               timeout=20_000)
        page.wait_for_timeout(150)  # let the last playback report go out
        h = hooks(page)
        page.screenshot(path=str(shots / "voice.png"), full_page=True)

        assert h["mode"] == "voice" and h["sessionId"]
        kinds = [e["type"] for e in h["events"]]
        assert kinds[0] == "session.started"
        assert kinds.index("speech_started") < kinds.index("turn_ended") < kinds.index("agent_text")
        # 20 ms frames of 16 kHz PCM16, sent in real time
        assert h["framesSent"] > 50 and h["audioBytesSent"] == h["framesSent"] * 640
        finals = [e["text"] for e in events_of(h, "transcript") if e["final"]]
        assert finals and finals[0] == "what time is it"
        assert any(not e["final"] for e in events_of(h, "transcript"))  # interim shown while speaking
        spoken = " ".join(e["text"] for e in events_of(h, "agent_text"))
        assert spoken.startswith("It is ten past four.")

        # reply audio arrived at the rate the page asked for and was rendered by the playback worklet
        assert h["outputRate"] == h["contextRate"] or h["outputRate"] == 24000
        assert h["audioBytesReceived"] > 0 and h["audioBytesReceived"] % 2 == 0
        assert h["playedSamples"] > 0
        assert h["playbackReportsSent"] > 0 and h["replyPlayedMs"] > 0

        timeline = h["timelines"][0]
        stages = timeline["stages_ms"]
        for key in ("turn_decided", "final_transcript", "llm_first_token", "first_sentence", "tts_first_audio",
                    "first_audio_sent"):
            assert key in stages
        assert timeline["voice_to_voice_ms"] and timeline["voice_to_voice_ms"] > 0

        # the bars: one card per turn, six positioned bars with a real width, v2v written next to them
        card = page.locator(".tl-turn").last
        assert card.locator(".tl-bar").count() == 6
        widths = [card.locator(".tl-bar").nth(i).bounding_box()["width"] for i in range(6)]  # type: ignore[index]
        assert all(w >= 1 for w in widths) and max(widths) > 20
        assert "ms voice-to-voice" in card.locator(".tl-v2v").inner_text()
        assert page.locator(".msg.user").first.inner_text().endswith("what time is it")
        assert "It is ten past four." in page.locator(".msg.agent").first.inner_text()
        assert h["micPeakDb"] > -40  # the meter saw the speech

        page.click("#start")  # Stop
        page.wait_for_function("window.voxline.state === 'closed'", timeout=5_000)
        sent = hooks(page)["framesSent"]
        time.sleep(0.3)
        assert hooks(page)["framesSent"] == sent  # the mic is off
        assert problems == []
    finally:
        browser.close()


def test_typed_turn_without_a_microphone(base_url: str, pw: Playwright, stack: Stack, shots: Path) -> None:
    browser = launch_chromium(pw)  # no fake capture device: this browser has no microphone
    try:
        page, problems = open_page(browser, base_url)
        page.fill("#text", "hello from the keyboard")
        page.press("#text", "Enter")
        page.wait_for_function("window.voxline.timelines.length > 0 && window.voxline.playedSamples > 0",
                               timeout=15_000)
        h = hooks(page)
        page.screenshot(path=str(shots / "typed.png"), full_page=True)
        assert h["state"] == "live" and h["mode"] == "text"
        assert h["framesSent"] == 0
        assert any(m.content == "hello from the keyboard" for call in stack.llm.calls for m in call)
        assert events_of(h, "agent_text") and h["audioBytesReceived"] > 0 and h["playedSamples"] > 0
        assert page.locator(".msg.user.typed").inner_text().endswith("hello from the keyboard")
        assert "It is ten past four." in page.locator(".msg.agent").first.inner_text()
        assert page.locator(".tl-turn").count() == 1
        assert page.locator(".tl-v2v").inner_text() == "typed turn"
        assert problems == []
    finally:
        browser.close()


def test_interrupt_drops_buffered_audio_at_once(base_url: str, pw: Playwright, shots: Path) -> None:
    browser = launch_chromium(pw)
    try:
        page, problems = open_page(browser, base_url)
        page.fill("#text", "tell me the time")
        page.press("#text", "Enter")
        # wait until the reply has been playing for a while, then press Interrupt
        page.wait_for_function("window.voxline.replyPlayedMs > 300", timeout=15_000)
        page.click("#interrupt")
        page.wait_for_function("window.voxline.timelines.length > 0", timeout=10_000)
        h = hooks(page)
        assert h["clears"] == 1
        assert h["droppedOnClearSamples"] > 0  # audio was buffered and went unplayed
        interrupted = events_of(h, "interrupted")[0]
        assert interrupted["heard"] and REPLY.startswith(interrupted["heard"].rstrip(".?"))
        assert len(interrupted["heard"]) < len(REPLY)
        played = h["playedSamples"]
        reply_s = len(REPLY.split()) * SECONDS_PER_WORD
        assert played < 0.9 * reply_s * h["contextRate"]
        page.wait_for_timeout(300)
        assert hooks(page)["playedSamples"] == played  # nothing rendered after the clear
        assert page.locator(".msg.agent.interrupted .tag.interrupt").count() == 1
        assert "interrupted at" in page.locator(".tl-foot").inner_text()
        page.screenshot(path=str(shots / "interrupted.png"), full_page=True)
        assert problems == []
    finally:
        browser.close()


def test_worklet_resampler_is_accurate(base_url: str, pw: Playwright) -> None:
    """The capture path's 48/44.1 kHz -> 16 kHz and the playback path's 24 kHz -> 48/44.1 kHz, run in Chromium on
    sines fed in 128-sample render quanta: in-band tones come out exact (no delay), out-of-band ones do not alias."""
    browser = launch_chromium(pw)
    try:
        page, problems = open_page(browser, base_url)
        page.add_script_tag(url="/static/worklet.js")
        results = page.evaluate("""() => {
          const run = (inRate, outRate, f) => {
            const r = new VoxlineResampler(inRate, outRate);
            const x = new Float32Array(inRate);
            for (let i = 0; i < x.length; i++) x[i] = 0.5 * Math.sin(2 * Math.PI * f * i / inRate);
            const out = [];
            for (let i = 0; i < x.length; i += 128) out.push(...r.process(x.subarray(i, i + 128)));
            let err = 0, pow = 0, n = 0;
            for (let k = 100; k < out.length; k++) {
              err = Math.max(err, Math.abs(out[k] - 0.5 * Math.sin(2 * Math.PI * f * k / outRate)));
              pow += out[k] * out[k]; n++;
            }
            return {count: out.length, maxErr: err, rms: Math.sqrt(pow / n)};
          };
          return {
            down48: run(48000, 16000, 1000), down441: run(44100, 16000, 440),
            alias: run(48000, 16000, 12000), up48: run(24000, 48000, 3000), up441: run(24000, 44100, 1000),
          };
        }""")
        for key, rate in (("down48", 16000), ("down441", 16000), ("up48", 48000), ("up441", 44100)):
            r = results[key]
            assert r["maxErr"] < 1e-3, (key, r)
            assert rate - 60 < r["count"] <= rate, (key, r)  # only the look-ahead is held back
        assert results["alias"]["rms"] < 1e-3  # a 12 kHz tone must not fold into the 16 kHz stream as 4 kHz
        assert problems == []
    finally:
        browser.close()


def test_failures_are_shown_not_swallowed(stack: Stack, pw: Playwright, shots: Path) -> None:
    """No microphone: a clear message and the page still works by text. Server gone: a visible connection error."""
    config = AgentConfig.load(turn={"detector": "silero", "silence_s": 0.4})
    browser = launch_chromium(pw)  # no capture device and no permission to ask for one
    try:
        with serve_in_thread(create_app(stack, config)) as url:
            page, problems = open_page(browser, url)
            page.click("#start")
            page.wait_for_function("window.voxline.errors.length > 0", timeout=10_000)
            h = hooks(page)
            assert h["errors"][0]["where"] == "microphone" and h["framesSent"] == 0
            assert "You can still type" in page.locator(".msg.note.error").inner_text()
            assert page.get_attribute("#status", "data-state") == "error"
            assert page.inner_text("#start").strip().endswith("Start")
            page.fill("#text", "then by keyboard")
            page.press("#text", "Enter")
            page.wait_for_function("window.voxline.events.some(e => e.type === 'agent_done')", timeout=10_000)
            assert hooks(page)["state"] == "live"
        # the server has shut down under the page
        page.wait_for_function("window.voxline.state !== 'live'", timeout=10_000)
        assert "the server went away" in page.locator(".msg.note.error").last.inner_text()
        page.fill("#text", "anyone there?")
        page.press("#text", "Enter")
        page.wait_for_function("window.voxline.errors.length === 3", timeout=10_000)
        assert page.get_attribute("#status", "data-state") == "error"
        assert "could not connect to ws://" in page.locator(".msg.note.error").last.inner_text()
        assert page.input_value("#text") == "anyone there?"  # kept for a retry
        page.screenshot(path=str(shots / "failures.png"), full_page=True)
        assert all("/ws" in p or "ERR_CONNECTION_REFUSED" in p for p in problems), problems
    finally:
        browser.close()
