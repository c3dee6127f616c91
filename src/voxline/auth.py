"""Access control for the server: API keys, per-key rate limits, concurrent-session caps, maximum session length.

Everything hangs off the app `create_app` builds: an immutable `AccessPolicy` (the configured keys, kept only as
SHA-256 digests, and the limits) and one `AccessControl` per app holding the mutable state (token buckets, session
counts, Twilio stream tokens). `AccessMiddleware` is plain ASGI, so it guards HTTP and WebSocket routes alike and can
refuse a WebSocket before it is accepted.

A key is never logged or echoed: logs name a key by `key_id` (the first 8 hex digits of its SHA-256).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxline.errors import ConfigError
from voxline.transports.base import Transport

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/", "/healthz"})
OPEN_PREFIXES = ("/static/",)
TWILIO_WEBHOOK = "/twilio/voice"
TWILIO_STREAM = "/twilio/stream"
KEY_QUERY = "key"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
"""OpenAI's browser clients pass the key as a WebSocket subprotocol, since browsers cannot set headers."""
REDACTED = "REDACTED"
MIN_KEY_LENGTH = 8
DEFAULT_REQUESTS_PER_MINUTE = 120.0
DEFAULT_MAX_SESSIONS = 10
DEFAULT_MAX_SESSION_S = 3600.0
STREAM_TOKEN_TTL_S = 60.0
"""Twilio opens the media stream within a second or two of fetching the TwiML; a token is good for one minute."""

WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013


def key_id(key: str) -> str:
    """What logs call a key: a short prefix of its SHA-256, enough to tell keys apart, useless to an attacker."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The configured API keys as SHA-256 digests; `match` compares in constant time."""

    digests: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, keys: Iterable[str]) -> KeyRing:
        digests = set()
        for key in keys:
            _check_key(key)
            digests.add(hashlib.sha256(key.encode()).digest())
        return cls(frozenset(digests))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def __len__(self) -> int:
        return len(self.digests)

    def match(self, key: str) -> bool:
        """True if `key` is one of ours. Every digest is compared (no early exit), each with `compare_digest`."""
        presented = hashlib.sha256(key.encode()).digest()
        found = False
        for digest in self.digests:
            found |= hmac.compare_digest(presented, digest)
        return found


def _check_key(key: str) -> None:
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"an API key must be at least {MIN_KEY_LENGTH} characters long "
                          f"(got one of {len(key)}; generate one with `python -c 'import secrets; "
                          "print(secrets.token_urlsafe(24))'`)")
    if not key.isascii() or not key.isprintable() or any(c in key for c in " ,\t"):
        raise ConfigError(f"API key {key_id(key)} (sha256 prefix) must be printable ASCII without spaces or commas")


def keys_from(cli_keys: Iterable[str] = (), env_value: str | None = None,
              keys_file: str | Path | None = None) -> list[str]:
    """Collect keys from `--api-key` options, `VOXLINE_API_KEYS` (comma-separated) and a keys file (one key a line,
    blank lines and `#` comments ignored)."""
    keys = [k.strip() for k in cli_keys if k.strip()]
    if env_value:
        keys += [k.strip() for k in env_value.split(",") if k.strip()]
    if keys_file is not None:
        try:
            text = Path(keys_file).read_text()
        except FileNotFoundError:
            raise ConfigError(f"API keys file {keys_file} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"could not read the API keys file {keys_file}: {exc}") from None
        from_file = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise ConfigError(f"API keys file {keys_file} holds no key")
        keys += from_file
    return keys


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Who may use the server and how much. No keys: an open server (no key, no rate limit); the maximum session
    length applies either way."""

    keys: KeyRing = field(default_factory=KeyRing)
    requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE
    """Per key: HTTP requests and new WebSocket sessions, refilled continuously."""
    burst: int | None = None
    """How many requests a key may make at once after a quiet spell; default: one minute's worth."""
    max_sessions: int = DEFAULT_MAX_SESSIONS
    """Per key: WebSocket sessions (voxline, Realtime, Twilio) open at the same time."""
    max_session_s: float | None = DEFAULT_MAX_SESSION_S
    """A session is ended after this long (an `error` event with `code: "session_too_long"` first); None: never."""

    def __post_init__(self) -> None:
        if not self.requests_per_minute > 0:
            raise ConfigError(f"the rate limit must be a positive number of requests per minute, "
                              f"not {self.requests_per_minute}")
        if self.burst is not None and self.burst < 1:
            raise ConfigError(f"the burst must be at least 1 request, not {self.burst}")
        if self.max_sessions < 1:
            raise ConfigError(f"the concurrent session limit must be at least 1, not {self.max_sessions}")
        if self.max_session_s is not None and not self.max_session_s > 0:
            raise ConfigError(f"the maximum session length must be positive, not {self.max_session_s} s")

    @classmethod
    def build(cls, keys: Iterable[str] = (), *, keys_file: str | Path | None = None,
              env: Mapping[str, str] | None = None, **limits: Any) -> AccessPolicy:
        """Keys from the arguments plus `VOXLINE_API_KEYS` and `VOXLINE_API_KEYS_FILE` in `env` (default:
        os.environ); `max_session_s=0` means no limit."""
        env = os.environ if env is None else env
        file = keys_file if keys_file is not None else (env.get("VOXLINE_API_KEYS_FILE") or None)
        if limits.get("max_session_s") == 0:
            limits["max_session_s"] = None
        return cls(KeyRing.of(keys_from(keys, env.get("VOXLINE_API_KEYS"), file)), **limits)

    @property
    def capacity(self) -> float:
        return float(self.burst if self.burst is not None else max(1.0, self.requests_per_minute))


def warn_if_exposed(host: str, policy: AccessPolicy) -> bool:
    """Log a warning when an open server (no keys) listens beyond the loopback interface. True if it warned."""
    if policy.keys:
        return False
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warning("no API key is configured and the server listens on %s: anyone who can reach it may use it "
                    "(set VOXLINE_API_KEYS or --api-key)", host)
    return not loopback


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; a request takes one."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = capacity, now

    def take(self, now: float) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Denial:
    status: int
    code: str
    message: str
    retry_after_s: float | None = None
    error_type: str = "invalid_request_error"


class AccessControl:
    """The mutable side of one app's access control: a token bucket and a session count per key, and the one-use
    tokens that let Twilio open a media stream the signed webhook announced."""

    def __init__(self, policy: AccessPolicy, *, twilio_signed: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.twilio_signed = twilio_signed
        """The Twilio webhook is authenticated by its signature (an auth token is configured), not by our keys."""
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.sessions: dict[str, int] = {}
        self._stream_tokens: dict[str, tuple[str, float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.policy.keys)

    # ---- who is calling -----------------------------------------------------------------------------------------

    def identify(self, scope: Scope) -> tuple[str | None, Denial | None]:
        """The caller's identity (a key's id, "twilio", or a stream token's owner), or why it is refused."""
        path: str = scope["path"]
        if scope["type"] == "http" and path == TWILIO_WEBHOOK and self.twilio_signed:
            return "twilio", None  # the webhook checks X-Twilio-Signature itself
        if scope["type"] == "websocket" and path.startswith(TWILIO_STREAM + "/"):
            owner = self.redeem_stream_token(path[len(TWILIO_STREAM) + 1:])
            if owner is None:
                return None, Denial(401, "invalid_stream_token", "the media stream token is invalid, expired or "
                                                                 "already used; the call webhook issues a new one")
            return owner, None
        key = _presented_key(scope)
        if key is None:
            return None, Denial(401, "invalid_api_key", _missing_message(scope["type"]))
        if not self.policy.keys.match(key):
            log.info("refused %s: unknown API key (sha256 %s)", _describe(scope), key_id(key))
            return None, Denial(401, "invalid_api_key", "Incorrect API key provided.")
        return key_id(key), None

    # ---- how much -----------------------------------------------------------------------------------------------

    def take(self, identity: str) -> Denial | None:
        """Count one request (or new session) against the identity's bucket."""
        now = self.clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = TokenBucket(self.policy.requests_per_minute / 60,
                                                           self.policy.capacity, now)
        wait = bucket.take(now)
        if wait == 0:
            return None
        log.info("rate limit reached for key %s; retry in %.1f s", identity, wait)
        return Denial(429, "rate_limit_exceeded", f"Rate limit reached: {self.policy.requests_per_minute:g} "
                                                  f"requests per minute for this key. Try again in {wait:.1f} s.",
                      retry_after_s=wait, error_type="requests")

    def open_session(self, identity: str) -> Denial | None:
        """Claim one of the identity's concurrent sessions (release it with `close_session`)."""
        open_now = self.sessions.get(identity, 0)
        if open_now >= self.policy.max_sessions:
            log.info("key %s already has %d sessions open; refusing another", identity, open_now)
            return Denial(429, "too_many_sessions", f"This key already has {open_now} sessions open, the most "
                                                    "allowed at once; end one first.", retry_after_s=1.0,
                          error_type="requests")
        self.sessions[identity] = open_now + 1
        return None

    def close_session(self, identity: str) -> None:
        left = self.sessions.get(identity, 0) - 1
        if left > 0:
            self.sessions[identity] = left
        else:
            self.sessions.pop(identity, None)

    # ---- Twilio media streams -----------------------------------------------------------------------------------

    def stream_path(self, scope: Scope) -> str:
        """The media stream path to put in the TwiML: with keys configured, it carries a fresh one-use token for the
        caller the webhook authenticated (Twilio's <Stream> URL takes no query string, so it goes in the path)."""
        if not self.enabled:
            return TWILIO_STREAM
        owner = str(scope.get("state", {}).get("voxline.identity") or "twilio")
        now = self.clock()
        for token, (_, expires) in list(self._stream_tokens.items()):
            if expires <= now:
                del self._stream_tokens[token]
        token = secrets.token_urlsafe(24)
        self._stream_tokens[token] = (owner, now + STREAM_TOKEN_TTL_S)
        return f"{TWILIO_STREAM}/{token}"

    def redeem_stream_token(self, token: str) -> str | None:
        """The owner of a valid, unexpired token, which is then spent; None otherwise."""
        entry = self._stream_tokens.pop(token, None)
        if entry is None or entry[1] <= self.clock():
            return None
        return entry[0]


class AccessMiddleware:
    """Pure ASGI: checks the key, the rate limit and (for WebSockets) the session cap before the app sees a request.

    It also removes `key` from every query string in place, before the server's access log reads the scope, so keys
    sent by browsers never reach a log line.
    """

    def __init__(self, app: ASGIApp, control: AccessControl) -> None:
        self.app, self.control = app, control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        _redact_query(scope)
        path: str = scope["path"]
        if not self.control.enabled or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, _choose_subprotocol(scope, send) if scope["type"] == "websocket" else send)
            return
        identity, denial = self.control.identify(scope)
        if scope["type"] == "websocket" and path.startswith(TWILIO_STREAM + "/"):
            _set_path(scope, TWILIO_STREAM)  # the token has done its work; the route and the logs see the plain path
        if identity is not None:
            denial = self.control.take(identity)
        if denial is not None or identity is None:
            await _deny(scope, send, denial or Denial(401, "invalid_api_key", "unauthorised"))
            return
        scope.setdefault("state", {})["voxline.identity"] = identity
        if scope["type"] == "http":
            await self.app(scope, receive, send)
            return
        if (denial := self.control.open_session(identity)) is not None:
            await _deny(scope, send, denial)
            return
        try:
            await self.app(scope, receive, _choose_subprotocol(scope, send))
        finally:
            self.control.close_session(identity)


def _presented_key(scope: Scope) -> str | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
    auth = headers.get("authorization", "").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():  # Twilio webhooks: https://any:KEY@host/twilio/voice
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or user or None
    if headers.get("x-api-key", "").strip():
        return headers["x-api-key"].strip()
    if scope["type"] == "websocket":
        if key := scope.get("state", {}).get("voxline.query_key"):
            return str(key)
        for proto in scope.get("subprotocols", ()):
            if proto.startswith(KEY_SUBPROTOCOL) and len(proto) > len(KEY_SUBPROTOCOL):
                return str(proto[len(KEY_SUBPROTOCOL):])
    return None


def _missing_message(kind: str) -> str:
    where = "'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
    if kind == "websocket":
        where += " (or ?key=KEY in the URL)"
    return f"You didn't provide an API key. Send it as {where}."


def _describe(scope: Scope) -> str:
    client = scope.get("client") or ("?", 0)
    method = scope.get("method", "WebSocket")
    return f"{method} {scope['path']} from {client[0]}"


def _redact_query(scope: Scope) -> None:
    """Take `key` out of the query string (in place: the server logs from this very scope), keeping it in the
    scope's state for the check."""
    raw: bytes = scope.get("query_string", b"")
    if not raw or KEY_QUERY.encode() not in raw:
        return
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    keys = [v for k, v in pairs if k == KEY_QUERY]
    if not keys:
        return
    scope["query_string"] = urlencode([(k, REDACTED if k == KEY_QUERY else v) for k, v in pairs]).encode()
    if scope["type"] == "websocket" and keys[0]:
        scope.setdefault("state", {})["voxline.query_key"] = keys[0]


def _set_path(scope: Scope, path: str) -> None:
    scope["path"] = path
    scope["raw_path"] = path.encode()


def _choose_subprotocol(scope: Scope, send: Send) -> Send:
    """OpenAI's browser clients offer "realtime" (beside `openai-insecure-api-key.KEY` and `openai-beta.*`), and a
    browser fails a handshake that answers none of its subprotocols; pick "realtime" if the app picked nothing,
    whether or not keys are configured."""
    if "realtime" not in scope.get("subprotocols", ()):
        return send

    async def wrapped(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": "realtime"}
        await send(message)

    return wrapped


async def _deny(scope: Scope, send: Send, denial: Denial) -> None:
    """HTTP: an OpenAI-style error. WebSocket: refused before accept, as an HTTP response at the handshake where the
    server supports it (clients see the status and body), else a close (1008, or 1013 for limits)."""
    body = json.dumps({"error": {"message": denial.message, "type": denial.error_type, "param": None,
                                 "code": denial.code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if denial.status == 401:
        challenge = b'Bearer realm="voxline"'
        if scope["path"] == TWILIO_WEBHOOK:
            challenge += b', Basic realm="voxline"'  # Twilio sends credentials in the webhook URL after a challenge
        headers.append((b"www-authenticate", challenge))
    if denial.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(denial.retry_after_s))).encode()))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": denial.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": denial.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    code = WS_TRY_AGAIN_LATER if denial.status == 429 else WS_POLICY_VIOLATION
    await send({"type": "websocket.close", "code": code, "reason": denial.message[:120]})


SECRETS_IN_LOGS = re.compile(
    r"(?P<keep>[?&]key=|authorization:\s*(?:bearer|basic)\s+|x-api-key:\s*|openai-insecure-api-key\.|"
    r"/twilio/stream/)(?P<secret>[^\s&,\"']+)", re.IGNORECASE)


class RedactKeys(logging.Filter):
    """Blanks keys out of log lines the server writes before our middleware runs: at debug level the `websockets`
    handshake code logs the raw request line and headers (`?key=`, `Authorization`) on "uvicorn.error"."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = SECRETS_IN_LOGS.sub(lambda m: m["keep"] + REDACTED, message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_server_logs(logger_names: Iterable[str] = ("uvicorn.error", "uvicorn.access")) -> RedactKeys:
    """Install `RedactKeys` on the server's loggers (once); `voxline serve` does, embedders running uvicorn at debug
    level themselves should too. Returns the filter (remove it with `logger.removeFilter`)."""
    redactor = RedactKeys()
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(redactor)
    return redactor


async def run_limited(run: Awaitable[None], limit_s: float | None, transport: Transport, session_id: str) -> None:
    """Await a session's `run()`, ending it after `limit_s` with an `error` event (`code: "session_too_long"`)."""
    if limit_s is None:
        await run
        return
    deadline = asyncio.timeout(limit_s)
    try:
        async with deadline:
            await run
    except TimeoutError:
        if not deadline.expired():
            raise
        log.info("session %s reached the maximum session length (%g s); ending it", session_id, limit_s)
        await transport.send_event({"type": "error", "code": "session_too_long",
                                    "message": f"the session reached the maximum length of {limit_s:g} s"})
