"""Client plumbing the cloud adapters share: keys kept out of sight, one pooled `httpx.AsyncClient` per provider,
vendor error bodies turned into `ProviderError`s, an SSE reader, WebSocket connects with the same error mapping, and
streaming decoders for the audio formats vendors send back.

Why one client per provider instance: keep-alive. A TLS handshake to a vendor costs one or two round trips (tens to
hundreds of milliseconds) that every turn of every session would otherwise pay again before its first token.

Error policy (every adapter): 401/403 -> `ProviderError(retryable=False)`; 429 -> retryable with `retry_after` from
the `Retry-After` header; 408/409/5xx/529 -> retryable; other 4xx -> not retryable; a connect or first-byte timeout,
a connection dropped mid-stream or a malformed event -> `ProviderError` saying which, retryable where trying again
can help. Messages never contain the API key: `Secret` hides it from reprs and `redact()` scrubs it from any text
that came back from the server (some vendors echo part of the key in their 401 bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from voxline.audio.frame import AudioFrame, decode_mulaw
from voxline.errors import AudioDecodeError, ConfigError, ProviderError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


class Secret:
    """An API key that never shows itself in a repr, str, log line or traceback; `reveal()` for the wire only."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def masked(self) -> str:
        return mask_key(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def mask_key(key: str | None) -> str:
    """`sk-proj-abc...wxyz` -> `sk-…wxyz`: enough to tell two keys apart, not enough to use one."""
    if not key:
        return ""
    if len(key) <= 8:
        return "…" + "*" * 3
    return f"{key[:3]}…{key[-4:]}"


def redact(text: str, *secrets: Secret | str | None) -> str:
    """`text` with every secret (and any 8+ character fragment of it that a vendor echoed back) replaced."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value:
            continue
        text = text.replace(value, "***")
        if len(value) >= 12:  # vendors echo "sk-abc...wxyz" style fragments: scrub the head and tail too
            for fragment in {value[:8], value[-8:]}:
                text = text.replace(fragment, "***")
    return text


def resolve_key(name: str, explicit: str | None, env: str, *, required: bool) -> Secret:
    """The key passed in, else the environment variable; a `ConfigError` naming both when it is required."""
    key = explicit if explicit is not None else os.environ.get(env, "")
    if required and not key:
        raise ConfigError(f"{name}: no API key; pass api_key= or set {env}")
    return Secret(key)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def vendor_message(body: bytes | str) -> str:
    """The human part of a vendor error body, whatever its shape.

    OpenAI `{"error": {"message"}}`, Anthropic `{"type": "error", "error": {"type", "message"}}`, ElevenLabs
    `{"detail": {"status", "message"}}` (or a plain `detail` string), Deepgram `{"err_code", "err_msg"}`.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            kind = err.get("type") or err.get("code")
            msg = err.get("message") or ""
            return f"{msg} ({kind})" if kind and msg else str(msg or kind or "")
        if isinstance(err, str):
            return str(data.get("message") or err)
        detail = data.get("detail")
        if isinstance(detail, dict):
            return f"{detail.get('message', '')} ({detail.get('status', '')})".strip()
        if isinstance(detail, str):
            return detail
        if "err_msg" in data:
            return f"{data['err_msg']} ({data.get('err_code', '')})"
        if "message" in data:
            return str(data["message"])
    return text.strip()[:300]


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header's value whatever the case of its name: HTTP names are case-insensitive, and a plain dict (the raw
    headers of a refused WebSocket handshake) keeps the server's spelling ("Retry-After")."""
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def status_error(provider: str, status: int, body: bytes | str, headers: Mapping[str, str] | None,
                 secret: Secret | None = None) -> ProviderError:
    """The `ProviderError` for an HTTP error status from `provider`."""
    detail = redact(vendor_message(body), secret)
    retry_after = parse_retry_after(header(headers, "retry-after")) if status == 429 else None
    if status in (401, 403):
        what = "rejected the API key" if status == 401 else "refused access (key lacks permission?)"
        return ProviderError(f"{provider} {what}: HTTP {status}: {detail}", provider=provider, retryable=False)
    if status == 429:
        wait = f", retry after {retry_after:g} s" if retry_after is not None else ""
        return ProviderError(f"{provider} rate limit (HTTP 429{wait}): {detail}", provider=provider,
                             retryable=True, retry_after=retry_after)
    retryable = status in RETRYABLE_STATUS or status >= 500
    kind = "server error" if status >= 500 else "request refused"
    return ProviderError(f"{provider} {kind}: HTTP {status}: {detail}", provider=provider, retryable=retryable)


def transport_error(provider: str, exc: BaseException, *, phase: str, secret: Secret | None = None
                    ) -> ProviderError:
    """A network failure (`phase`: connect, first byte, mid-stream) as a retryable `ProviderError`."""
    if isinstance(exc, httpx.ConnectTimeout | TimeoutError) and phase == "connect":
        text = "timed out connecting"
    elif isinstance(exc, httpx.TimeoutException | TimeoutError):
        text = f"timed out waiting for the {phase}" if phase != "mid-stream" else "stalled mid-stream"
    elif phase == "mid-stream":
        text = "dropped the connection mid-stream"
    else:
        text = f"could not be reached ({phase})"
    reason = redact(str(exc) or type(exc).__name__, secret)
    return ProviderError(f"{provider} {text}: {reason}", provider=provider, retryable=True)


def malformed(provider: str, what: str, raw: str | bytes, secret: Secret | None = None) -> ProviderError:
    shown = raw if isinstance(raw, str) else raw[:120].decode("utf-8", "replace")
    return ProviderError(f"{provider} sent a malformed {what}: {redact(shown[:160], secret)!r}",
                         provider=provider, retryable=True)


def loads(provider: str, what: str, raw: str | bytes, secret: Secret | None = None) -> dict[str, Any]:
    """Parse one JSON event; anything but a JSON object is a malformed event."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise malformed(provider, what, raw, secret) from None
    if not isinstance(data, dict):
        raise malformed(provider, what, raw, secret)
    return data


@dataclass(frozen=True, slots=True)
class Timeouts:
    """connect: TCP+TLS (and WebSocket handshake); first_byte: request sent -> first body byte; idle: longest
    silence between two chunks of a stream once it flows."""

    connect: float = 5.0
    first_byte: float = 10.0
    idle: float = 30.0


class HTTPProvider:
    """Base of the cloud adapters: a base URL, a key, default headers, one lazily created pooled client."""

    provider = "provider"

    def __init__(self, *, base_url: str, secret: Secret, timeouts: Timeouts,
                 headers: Mapping[str, str] | None = None, max_connections: int = 20) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self.timeouts = timeouts
        self._headers = dict(headers or {})
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, key={self._secret.masked()!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        """The provider's pooled client (keep-alive across turns and sessions); created on first use."""
        if self._client is None or self._client.is_closed:
            t = self.timeouts
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers,
                timeout=httpx.Timeout(connect=t.connect, read=t.idle, write=t.idle, pool=t.connect),
                limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=10,
                                    keepalive_expiry=60.0))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        return status_error(self.provider, status, body, headers, self._secret)

    async def request_json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One whole request/response (REST batch calls, checks), first byte bounded by `timeouts.first_byte`."""
        try:
            async with asyncio.timeout(self.timeouts.first_byte + self.timeouts.connect):
                response = await self.client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise transport_error(self.provider, exc, phase="connect", secret=self._secret) from None
        except (TimeoutError, httpx.TimeoutException) as exc:
            phase = "connect" if isinstance(exc, httpx.ConnectTimeout) else "response"
            raise transport_error(self.provider, exc, phase=phase, secret=self._secret) from None
        except httpx.TransportError as exc:
            raise transport_error(self.provider, exc, phase="response", secret=self._secret) from None
        if response.status_code >= 400:
            raise self._error(response.status_code, response.content, response.headers)
        return loads(self.provider, "response", response.content, self._secret)

    @contextlib.asynccontextmanager
    async def open_stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streaming response body as an iterator of chunks; every failure mapped to `ProviderError`.

        The first chunk must arrive within `timeouts.first_byte` of sending; later chunks within `timeouts.idle`
        of each other. The response is released (the connection back to the pool) when the block exits, also on
        cancellation.
        """
        request = self.client.build_request(method, path, **kwargs)
        try:
            async with asyncio.timeout(self.timeouts.first_byte + self.timeouts.connect):
                response = await self.client.send(request, stream=True)
        except httpx.ConnectError as exc:
            raise transport_error(self.provider, exc, phase="connect", secret=self._secret) from None
        except (TimeoutError, httpx.TimeoutException) as exc:
            phase = "connect" if isinstance(exc, httpx.ConnectTimeout) else "first byte"
            raise transport_error(self.provider, exc, phase=phase, secret=self._secret) from None
        except httpx.TransportError as exc:
            raise transport_error(self.provider, exc, phase="first byte", secret=self._secret) from None
        try:
            if response.status_code >= 400:
                body = await _read_bounded(response, self.timeouts.first_byte)
                raise self._error(response.status_code, body, response.headers)
            chunks = self._chunks(response)
            yield chunks
            await _drain(chunks)  # read the end of the body so the connection goes back to the pool
        finally:
            await response.aclose()

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        chunks = response.aiter_raw()
        first = True
        while True:
            try:
                async with asyncio.timeout(self.timeouts.first_byte if first else self.timeouts.idle):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except (TimeoutError, httpx.TimeoutException) as exc:
                phase = "first byte" if first else "mid-stream"
                raise transport_error(self.provider, exc, phase=phase, secret=self._secret) from None
            except httpx.TransportError as exc:
                raise transport_error(self.provider, exc, phase="mid-stream", secret=self._secret) from None
            first = False
            if chunk:
                yield chunk


async def _drain(chunks: AsyncIterator[bytes], limit_s: float = 0.5, max_bytes: int = 1 << 16) -> None:
    """Consume what is left of a body (after `[DONE]`, usually just the chunked terminator): a response closed
    unread closes its connection instead of returning it to the keep-alive pool."""
    got = 0
    with contextlib.suppress(TimeoutError, RuntimeError, ProviderError):
        async with asyncio.timeout(limit_s):
            async for chunk in chunks:
                got += len(chunk)
                if got > max_bytes:
                    return


async def _read_bounded(response: httpx.Response, limit_s: float) -> bytes:
    try:
        async with asyncio.timeout(limit_s):
            return await response.aread()
    except (TimeoutError, httpx.HTTPError):
        return b""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Server-sent events (WHATWG HTML §9.2.6): `event:`/`data:` lines, a blank line dispatches, `:` comments."""
    buffer = b""
    event, data = "", list[str]()
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data or event:
                    yield SSEEvent(event or "message", "\n".join(data))
                event, data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield SSEEvent(event or "message", "\n".join(data))


async def ws_connect(provider: str, url: str, headers: Mapping[str, str], *, timeouts: Timeouts,
                     secret: Secret | None = None) -> ClientConnection:
    """Open a WebSocket; a refused handshake becomes the same `ProviderError` its HTTP status would."""
    try:
        return await websockets.connect(url, additional_headers=dict(headers), open_timeout=timeouts.connect,
                                        max_size=16 << 20, ping_interval=20, ping_timeout=20, close_timeout=1)
    except InvalidStatus as exc:
        r = exc.response
        raise status_error(provider, r.status_code, bytes(r.body or b""), dict(r.headers.raw_items()), secret) from None
    except TimeoutError as exc:
        raise transport_error(provider, exc, phase="connect", secret=secret) from None
    except (OSError, websockets.exceptions.WebSocketException) as exc:
        raise transport_error(provider, exc, phase="connect", secret=secret) from None


def ws_url(base_url: str) -> str:
    """http(s)://host -> ws(s)://host."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://"):]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://"):]
    return base_url


class PCMDecoder:
    """s16le bytes in arbitrary chunk sizes -> AudioFrames (an odd trailing byte waits for the next chunk)."""

    def __init__(self, sample_rate: int, channels: int = 1) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._carry = b""

    def feed(self, data: bytes) -> list[AudioFrame]:
        data = self._carry + data
        usable = len(data) - len(data) % (2 * self.channels)
        self._carry = data[usable:]
        return [AudioFrame.from_pcm(data[:usable], self.sample_rate, self.channels)] if usable else []

    def flush(self) -> list[AudioFrame]:
        self._carry = b""
        return []


class MulawDecoder(PCMDecoder):
    def feed(self, data: bytes) -> list[AudioFrame]:
        return [decode_mulaw(data, self.sample_rate)] if data else []


class WavDecoder(PCMDecoder):
    """A streamed 16-bit PCM WAV: the RIFF header is parsed as it arrives (its sizes may be placeholders)."""

    def __init__(self) -> None:
        super().__init__(0)
        self._header = b""
        self._rate = 0

    def feed(self, data: bytes) -> list[AudioFrame]:
        if self.sample_rate:
            return super().feed(data)
        self._header += data
        h = self._header
        if len(h) < 12:
            return []
        if h[:4] != b"RIFF" or h[8:12] != b"WAVE":
            raise AudioDecodeError("streamed audio is not a WAV file")
        pos = 12
        while pos + 8 <= len(h):
            cid, size = h[pos:pos + 4], int.from_bytes(h[pos + 4:pos + 8], "little")
            if cid == b"fmt ":
                if pos + 24 > len(h):
                    return []
                tag = int.from_bytes(h[pos + 8:pos + 10], "little")
                channels = int.from_bytes(h[pos + 10:pos + 12], "little")
                bits = int.from_bytes(h[pos + 22:pos + 24], "little")
                if tag != 1 or bits != 16:
                    raise AudioDecodeError("streamed WAV is not 16-bit PCM")
                self.channels, self._rate = channels, int.from_bytes(h[pos + 12:pos + 16], "little")
            elif cid == b"data":
                if not self._rate:
                    raise AudioDecodeError("streamed WAV has its data before its format")
                self.sample_rate = self._rate
                rest = h[pos + 8:]
                self._header = b""
                return super().feed(rest)
            pos += 8 + size + (size & 1)
        return []


class MP3Decoder:
    """MP3 bytes as they stream -> AudioFrames, through PyAV's parser and decoder (no whole file needed).

    A leading ID3v2 tag is skipped; a few undecodable packets are tolerated (stream starts, padding), a run of
    them is an error."""

    MAX_BAD_PACKETS = 4

    def __init__(self) -> None:
        import av

        self._codec = av.CodecContext.create("mp3", "r")
        self.sample_rate = 0
        self._head = b""
        self._started = False
        self._bad = 0
        self._fed = 0
        self._decoded = 0

    def _skip_id3(self, data: bytes) -> bytes | None:
        self._head += data
        h = self._head
        if len(h) < 10:
            return None
        if h[:3] == b"ID3":
            size = 10 + ((h[6] & 0x7F) << 21 | (h[7] & 0x7F) << 14 | (h[8] & 0x7F) << 7 | (h[9] & 0x7F))
            if len(h) < size:
                return None
            h = h[size:]
        self._started, self._head = True, b""
        return h

    def _decode(self, data: bytes | None) -> list[AudioFrame]:
        import av

        if data is not None and not self._started:
            data = self._skip_id3(data)
            if data is None:
                return []
        out: list[AudioFrame] = []
        for packet in [*self._codec.parse(data), *([None] if data is None else [])]:
            try:
                out.extend(_av_frame(f) for f in self._codec.decode(packet))
                self._bad = 0
            except av.error.FFmpegError as exc:
                self._bad += 1
                if self._bad > self.MAX_BAD_PACKETS:
                    raise AudioDecodeError(f"streamed MP3 does not decode: {exc}") from None
        if out:
            self.sample_rate = out[-1].sample_rate
        return out

    def feed(self, data: bytes) -> list[AudioFrame]:
        self._fed += len(data)
        out = self._decode(data)
        self._decoded += len(out)
        return out

    def flush(self) -> list[AudioFrame]:
        out = self._decode(None) if self._started else []
        if not self._decoded and not out and self._fed:
            raise AudioDecodeError(f"no MP3 audio found in {self._fed} streamed bytes")
        return out


def _av_frame(frame: Any) -> AudioFrame:
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        samples = arr.T
    else:
        samples = arr.reshape(-1, channels)
    if samples.dtype != np.int16:
        samples = np.clip(samples.astype(np.float32), -1.0, 1.0)
        samples = (samples * 32767.0).astype(np.int16)
    return AudioFrame.from_array(np.ascontiguousarray(samples), int(frame.sample_rate)).to_mono()


def audio_decoder(fmt: str) -> PCMDecoder | MP3Decoder:
    """A streaming decoder for a vendor output format: pcm_24000, ulaw_8000, mp3_44100_128, pcm (24 kHz), wav."""
    name, _, rest = fmt.partition("_")
    if name == "pcm":
        return PCMDecoder(int(rest.split("_")[0]) if rest else 24000)
    if name == "ulaw":
        return MulawDecoder(int(rest.split("_")[0]) if rest else 8000)
    if name == "wav":
        return WavDecoder()
    if name == "mp3":
        return MP3Decoder()
    raise ConfigError(f"unsupported output format {fmt!r}: use pcm_<rate>, ulaw_8000, mp3_<rate>_<kbps> or wav")


def format_rate(fmt: str, default: int = 24000) -> int:
    """The sample rate an output format name promises (mp3_44100_128 -> 44100; bare pcm -> default)."""
    parts = fmt.split("_")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else default
