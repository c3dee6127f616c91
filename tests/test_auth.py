"""Access control against a real uvicorn server: API keys on REST (with the official `openai` SDK), on the voxline
WebSocket, on the Realtime endpoint and for Twilio media streams; per-key rate limits and session caps; the maximum
session length; and keys kept out of the logs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from openai import AsyncOpenAI
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection

from serving import serving
from voxline.agent.config import AgentConfig
from voxline.agent.stack import Stack, scripted_stack
from voxline.auth import (
    AccessControl,
    AccessPolicy,
    KeyRing,
    TokenBucket,
    key_id,
    keys_from,
    redact_server_logs,
    warn_if_exposed,
)
from voxline.errors import ConfigError
from voxline.server import create_app
from voxline.transports.twilio import twilio_signature

KEY = "vx-test-key-0123456789"
OTHER = "vx-other-key-9876543210"
WRONG = "vx-wrong-key-5555555555"
TWILIO_TOKEN = "12345678901234567890123456789012"
REPLY = "It is ten past four."


@pytest.fixture(scope="module")
def stack() -> Stack:
    return scripted_stack(vad=False, llm={"reply": REPLY, "first_token_s": 0.02},
                          tts={"seconds_per_word": 0.02, "first_audio_s": 0.01})


def make_app(stack: Stack, twilio: str | None = None, **limits: Any) -> Starlette:
    policy = AccessPolicy(KeyRing.of([KEY, OTHER]), **limits)
    return create_app(stack, AgentConfig.load(turn={"detector": "energy"}), access=policy, twilio_auth_token=twilio)


@pytest.fixture(scope="module")
async def base_url(stack: Stack) -> AsyncIterator[str]:
    async with serving(make_app(stack)) as url:
        yield url


def ws(base: str, path: str = "/ws") -> str:
    return base.replace("http", "ws") + path


async def start(conn: ClientConnection) -> dict[str, Any]:
    await conn.send(json.dumps({"type": "session.start", "sample_rate": 16000}))
    started: dict[str, Any] = json.loads(await conn.recv())
    assert started["type"] == "session.started"
    return started


async def next_event(conn: ClientConnection, kind: str, within_s: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        async for message in conn:
            if isinstance(message, str) and (event := json.loads(message))["type"] == kind:
                return event
    raise AssertionError(f"the socket closed before a {kind} event")


async def refused(url: str, **kwargs: Any) -> websockets.InvalidStatus:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, open_timeout=5, **kwargs):
            pass
    return info.value


def error_of(body: bytes | bytearray | None) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(body or b"{}")["error"]
    return error


# ---- units ----------------------------------------------------------------------------------------------------------


def test_keyring_matches_only_configured_keys_and_keeps_no_key() -> None:
    ring = KeyRing.of([KEY, OTHER])
    assert ring.match(KEY) and ring.match(OTHER)
    assert not ring.match(WRONG) and not ring.match(KEY[:-1]) and not ring.match("")
    assert len(ring) == 2 and KEY.encode() not in b"".join(ring.digests)
    assert not KeyRing() and len(key_id(KEY)) == 8 and key_id(KEY) != key_id(OTHER)


def test_keys_from_options_env_and_file(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text(f"# team keys\n{OTHER}\n\n  {WRONG}  \n")
    assert keys_from([KEY], f" {OTHER} ,,", file) == [KEY, OTHER, OTHER, WRONG]
    policy = AccessPolicy.build([], env={"VOXLINE_API_KEYS": f"{KEY},{OTHER}", "VOXLINE_API_KEYS_FILE": str(file)},
                                max_session_s=0)
    assert len(policy.keys) == 3 and policy.max_session_s is None
    assert not AccessPolicy.build([], env={}).keys
    with pytest.raises(ConfigError, match="not found"):
        keys_from([], None, tmp_path / "missing")
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no key"):
        keys_from([], None, tmp_path / "empty")


@pytest.mark.parametrize("bad", ["short", "has space-in-it", "comma,inside-key", "ünicode-key-123"])
def test_bad_keys_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing.of([bad])
    assert bad not in str(info.value)


@pytest.mark.parametrize("limits", [{"requests_per_minute": 0}, {"max_sessions": 0}, {"max_session_s": -1},
                                    {"burst": 0}])
def test_bad_limits_are_config_errors(limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        AccessPolicy(**limits)


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0
    assert bucket.take(10.0) == 0 and bucket.tokens == pytest.approx(2)  # capped at capacity


def test_stream_tokens_are_single_use_and_expire() -> None:
    now = [0.0]
    control = AccessControl(AccessPolicy(KeyRing.of([KEY])), clock=lambda: now[0])
    token = control.stream_path({"state": {"voxline.identity": "abcd"}}).rsplit("/", 1)[1]
    assert control.redeem_stream_token(token) == "abcd" and control.redeem_stream_token(token) is None
    token = control.stream_path({}).rsplit("/", 1)[1]
    now[0] = 61.0
    assert control.redeem_stream_token(token) is None
    assert AccessControl(AccessPolicy()).stream_path({}) == "/twilio/stream"


def test_an_open_server_beyond_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="voxline.auth"):
        assert not warn_if_exposed("127.0.0.1", AccessPolicy()) and not warn_if_exposed("localhost", AccessPolicy())
        assert not warn_if_exposed("0.0.0.0", AccessPolicy(KeyRing.of([KEY])))
        assert not caplog.records
        assert warn_if_exposed("0.0.0.0", AccessPolicy())
    assert "no API key is configured" in caplog.text


# ---- REST ---------------------------------------------------------------------------------------------------------


async def test_rest_needs_a_valid_key(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        missing = await http.get("/v1/models")
        wrong = await http.get("/v1/models", headers={"Authorization": f"Bearer {WRONG}"})
        metrics = await http.get("/metrics")
        bearer = await http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        header = await http.get("/metrics", headers={"X-API-Key": OTHER})
        query = await http.get("/v1/models", params={"key": KEY})  # keys in URLs are for WebSockets only
    for r in (missing, wrong, metrics, query):
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    assert WRONG not in wrong.text
    assert bearer.status_code == 200 and bearer.json()["object"] == "list"
    assert header.status_code == 200 and "voxline" in header.text


async def test_page_static_and_health_stay_open(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        page, script, health = await http.get("/"), await http.get("/static/app.js"), await http.get("/healthz")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert script.status_code == 200 and "WebSocket" in script.text
    assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_openai_sdk(base_url: str) -> None:
    good = AsyncOpenAI(api_key=KEY, base_url=base_url + "/v1", max_retries=0)
    models = await good.models.list()
    assert "voxline-tts" in [m.id for m in models.data]
    speech = await good.audio.speech.create(model="voxline-tts", voice="default", input="Hello.",
                                            response_format="wav")
    assert speech.content[:4] == b"RIFF"
    bad = AsyncOpenAI(api_key=WRONG, base_url=base_url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await bad.models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError, match="didn't provide an API key"):
        await good.models.list(extra_headers={"Authorization": openai.Omit()})  # no key sent at all


# ---- WebSockets -----------------------------------------------------------------------------------------------------


async def test_websocket_is_refused_before_accept_without_a_valid_key(base_url: str) -> None:
    for url, kwargs in [(ws(base_url), {}), (ws(base_url) + f"?key={WRONG}", {}),
                        (ws(base_url), {"additional_headers": {"Authorization": f"Bearer {WRONG}"}}),
                        (ws(base_url, "/v1/realtime"), {}), (ws(base_url, "/twilio/stream"), {}),
                        (ws(base_url, "/twilio/stream/forged-token"), {})]:
        denial = await refused(url, **kwargs)
        assert denial.response.status_code == 401, url
        assert error_of(denial.response.body)["code"] in ("invalid_api_key", "invalid_stream_token")
        assert WRONG.encode() not in denial.response.body


@pytest.mark.parametrize("how", ["query", "x-api-key", "bearer"])
async def test_websocket_session_with_a_key(base_url: str, how: str) -> None:
    url, headers = ws(base_url), {}
    if how == "query":
        url += f"?key={KEY}"
    else:
        headers = {"X-API-Key": KEY} if how == "x-api-key" else {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(url, additional_headers=headers) as conn:
        await start(conn)
        await conn.send(json.dumps({"type": "text", "text": "what time is it"}))
        done = await next_event(conn, "agent_done")
        assert done["text"] == REPLY


async def test_realtime_with_the_sdk_and_with_the_browser_subprotocol(base_url: str) -> None:
    base = base_url + "/v1"
    client = AsyncOpenAI(api_key=KEY, base_url=base, websocket_base_url=ws(base_url, "/v1"))
    async with client.beta.realtime.connect(model="voxline-realtime") as conn:
        async with asyncio.timeout(5):
            created = await conn.recv()
        assert created.type == "session.created"
    wrong = AsyncOpenAI(api_key=WRONG, base_url=base, websocket_base_url=ws(base_url, "/v1"))
    with pytest.raises(websockets.InvalidStatus) as info:
        async with wrong.beta.realtime.connect(model="voxline-realtime"):
            pass
    assert info.value.response.status_code == 401
    protocols: Any = ["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"]
    async with websockets.connect(ws(base_url, "/v1/realtime?model=voxline-realtime"),
                                  subprotocols=protocols) as conn:
        assert conn.subprotocol == "realtime"  # a browser would fail a handshake that picked none
        assert json.loads(await conn.recv())["type"] == "session.created"


async def test_browser_subprotocols_without_keys_configured(stack: Stack) -> None:
    protocols: Any = ["realtime", "openai-insecure-api-key.anything", "openai-beta.realtime-v1"]
    async with serving(create_app(stack, AgentConfig.load(turn={"detector": "energy"}))) as base:
        for path in ("/v1/realtime?model=voxline-realtime", "/ws"):  # the transport picks it, else the middleware
            async with websockets.connect(ws(base, path), subprotocols=protocols) as conn:
                assert conn.subprotocol == "realtime"


# ---- limits ---------------------------------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_then_recovers(stack: Stack) -> None:
    async with serving(make_app(stack, requests_per_minute=60, burst=2)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert [(await http.get("/v1/models")).status_code for _ in range(2)] == [200, 200]
            limited = await http.get("/v1/models")
            assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
            assert limited.json()["error"]["code"] == "rate_limit_exceeded"
            other = await http.get("/v1/models", headers={"Authorization": f"Bearer {OTHER}"})
            assert other.status_code == 200  # buckets are per key
            denial = await refused(ws(base) + f"?key={KEY}")  # a new session counts as a request
            assert denial.response.status_code == 429 and denial.response.headers["retry-after"] == "1"
            sdk = AsyncOpenAI(api_key=KEY, base_url=base + "/v1", max_retries=0)
            with pytest.raises(openai.RateLimitError):
                await sdk.models.list()
            await asyncio.sleep(float(limited.headers["retry-after"]))
            assert (await http.get("/v1/models")).status_code == 200


async def test_concurrent_sessions_are_capped_per_key(stack: Stack) -> None:
    app = make_app(stack, max_sessions=2)
    async with serving(app) as base:
        url = ws(base) + f"?key={KEY}"
        async with websockets.connect(url) as first, websockets.connect(url) as second:
            await start(first)
            await start(second)
            denial = await refused(url)
            assert denial.response.status_code == 429
            assert error_of(denial.response.body)["code"] == "too_many_sessions"
            async with websockets.connect(ws(base) + f"?key={OTHER}") as other:  # another key has its own cap
                await start(other)
        for _ in range(50):  # the server notices the hang-ups
            if not app.state.access.sessions:
                break
            await asyncio.sleep(0.05)
        async with websockets.connect(url) as again:
            await start(again)


async def test_session_length_limit_ends_the_session_with_an_error_event(stack: Stack) -> None:
    app = make_app(stack, max_session_s=0.6)
    async with serving(app) as base:
        async with websockets.connect(ws(base) + f"?key={KEY}") as conn:
            began = time.monotonic()
            await start(conn)
            error = await next_event(conn, "error", within_s=5)
            assert error["code"] == "session_too_long" and "0.6 s" in error["message"]
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(5):
                    while True:
                        await conn.recv()
            assert 0.5 < time.monotonic() - began < 3.0
        assert not app.state.host.live


# ---- Twilio ---------------------------------------------------------------------------------------------------------


async def twilio_call(url: str) -> None:
    """Open a media stream the way Twilio does and check the session runs (the stream URL holds the token)."""
    async with websockets.connect(url) as conn:
        await conn.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await conn.send(json.dumps({"event": "start", "streamSid": "MZ1", "start": {
            "streamSid": "MZ1", "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}))
        payload = base64.b64encode(b"\xff" * 160).decode()
        await conn.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}}))
        await conn.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))


def stream_url_of(twiml: str) -> str:
    return twiml.split('<Stream url="', 1)[1].split('"', 1)[0]


async def test_twilio_signed_webhook_hands_out_a_one_use_stream_token(stack: Stack) -> None:
    async with serving(make_app(stack, twilio=TWILIO_TOKEN)) as base:
        url, params = base + "/twilio/voice", {"CallSid": "CA1", "From": "+15550100"}
        async with httpx.AsyncClient() as http:
            signed = await http.post(url, data=params,
                                     headers={"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, params)})
            forged = await http.post(url, data=params, headers={"X-Twilio-Signature": "bm9wZQ=="})
        assert forged.status_code == 403 and "Stream" not in forged.text
        assert signed.status_code == 200
        stream = stream_url_of(signed.text)
        assert stream.startswith(ws(base, "/twilio/stream/")) and len(stream.rsplit("/", 1)[1]) >= 24
        await twilio_call(stream)
        assert (await refused(stream)).response.status_code == 401  # spent


async def test_twilio_webhook_without_a_signing_token_needs_a_key(base_url: str) -> None:
    url = base_url + "/twilio/voice"
    async with httpx.AsyncClient() as http:
        missing = await http.post(url, data={"CallSid": "CA2"})
        basic = await http.post(url, data={"CallSid": "CA2"}, auth=("twilio", KEY))  # https://twilio:KEY@host/...
    assert missing.status_code == 401 and "Basic" in missing.headers["www-authenticate"]
    assert basic.status_code == 200
    await twilio_call(stream_url_of(basic.text))


# ---- logs -----------------------------------------------------------------------------------------------------------


async def test_keys_never_reach_the_logs(stack: Stack, caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    redactor = redact_server_logs()  # as `voxline serve` does
    try:
        async with serving(make_app(stack, requests_per_minute=600, burst=5)) as base:
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # let the server's log lines reach caplog
                monkeypatch.setattr(logging.getLogger(name), "propagate", True)
                caplog.set_level(logging.DEBUG, logger=name)  # debug: the handshake's raw request line and headers
            caplog.set_level(logging.DEBUG)
            async with httpx.AsyncClient(base_url=base) as http:
                await http.get("/", params={"key": KEY})
                await http.get("/v1/models", headers={"Authorization": f"Bearer {WRONG}"})
                for _ in range(6):
                    await http.get("/v1/models", headers={"X-API-Key": KEY})
            await asyncio.sleep(0.3)  # the bucket refills (10 a second)
            async with websockets.connect(ws(base) + f"?key={KEY}&lang=en") as conn:
                await start(conn)
            async with websockets.connect(ws(base), additional_headers={"Authorization": f"Bearer {KEY}"}) as conn:
                await start(conn)
            await refused(ws(base) + f"?key={WRONG}")
    finally:
        for name in ("uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).removeFilter(redactor)
    # what the server side logged (the test's own clients log their requests, keys included, at DEBUG)
    text = "\n".join(r.getMessage() for r in caplog.records
                     if not r.name.startswith(("websockets.client", "httpx", "httpcore", "openai")))
    assert "/ws?key=REDACTED&lang=en" in text and "/?key=REDACTED" in text  # the server logged those requests
    assert "Bearer REDACTED" in text
    assert key_id(WRONG) in text and f"rate limit reached for key {key_id(KEY)}" in text
    for secret in (KEY, WRONG):
        assert secret not in text


# ---- the browser page ---------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_page_passes_its_key_to_the_websocket(stack: Stack) -> None:
    """Opened as /?key=KEY the page talks; opened without one it shows why it cannot connect."""
    from playwright.sync_api import sync_playwright

    from browser_util import CHROMIUM, launch_chromium, serve_in_thread

    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium: run scripts/system-deps.sh")
    with sync_playwright() as pw, serve_in_thread(make_app(stack)) as url:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.goto(f"{url}/?key={KEY}")
            page.fill("#text", "hello with a key")
            page.press("#text", "Enter")
            page.wait_for_function("window.voxline.events.some(e => e.type === 'agent_done')", timeout=15_000)
            assert page.evaluate("window.voxline.state") == "live" and not page.evaluate("window.voxline.errors")
            page = browser.new_page()
            page.goto(f"{url}/")
            page.fill("#text", "hello without one")
            page.press("#text", "Enter")
            page.wait_for_function("window.voxline.errors.length > 0", timeout=10_000)
            assert "could not connect" in page.locator(".msg.note.error").last.inner_text()
            assert page.get_attribute("#status", "data-state") == "error"
        finally:
            browser.close()
