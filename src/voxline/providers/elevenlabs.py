"""ElevenLabs text to speech: the streaming REST endpoint for whole sentences, the stream-input WebSocket for text
that arrives as a stream (LLM tokens) and for word timings.

    tts = ElevenLabsTTS(voice_id="21m00Tcm4TlvDq8ikWAM")        # ELEVENLABS_API_KEY; eleven_flash_v2_5, pcm_24000
    await tts.prewarm()                                          # open the next WebSocket before it is needed
    timings = WordTimings()
    async for frame in tts.synthesize_stream(tokens, alignment=timings):
        play(frame)
    timings.heard(played_s)                                      # the words the caller has heard so far

Output formats: pcm_<rate> (s16le, lowest latency), ulaw_8000 (telephony), mp3_<rate>_<kbps> (decoded with PyAV as
it streams). `WordTimings` is the side channel for barge-in: it fills with word spans (seconds from the start of
that synthesis' audio) built from the WebSocket's character `alignment` (`chars`, `charStartTimesMs`,
`charDurationsMs`, relative to each audio chunk), so the session can tell which words were actually heard when the
caller interrupts. `synthesize(text, alignment=...)` takes the WebSocket path too; without it, the REST stream.

Reference: elevenlabs.io/docs/api-reference (Stream speech; WebSocket: first message `{"text": " ",
"voice_settings"}`, text chunks, `flush`, `{"text": ""}` to end; server `audio`, `isFinal`, `alignment`,
`normalizedAlignment`) and elevenlabs-python `src/elevenlabs/realtime_tts.py`, `types/audio_output.py`,
`types/normalized_alignment.py` (which spells the fields `char_start_times_ms` / `chars_durations_ms`: both
spellings are read).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from voxline.audio.frame import AudioFrame
from voxline.errors import AudioDecodeError, ProviderError
from voxline.providers.base import Word
from voxline.providers.http import (
    HTTPProvider,
    Timeouts,
    audio_decoder,
    format_rate,
    loads,
    malformed,
    redact,
    resolve_key,
    transport_error,
    ws_connect,
    ws_url,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_VOICE = "21m00Tcm4TlvDq8ikWAM"  # "Rachel", a premade voice every account has
SPLITTERS = (".", ",", "?", "!", ";", ":", "—", "-", "(", ")", "[", "]", "}", " ")


@dataclass
class WordTimings:
    """Word spans of one synthesis' audio, filled while it streams (the barge-in "words heard" side channel)."""

    words: list[Word] = field(default_factory=list)
    _chars: list[tuple[str, float, float]] = field(default_factory=list, repr=False)

    def add_chars(self, chars: Iterable[str], starts_ms: Iterable[float], durations_ms: Iterable[float],
                  offset_s: float) -> None:
        for ch, start, dur in zip(chars, starts_ms, durations_ms, strict=False):
            if ch.isspace():
                self._close_word()
            else:
                s = offset_s + float(start) / 1000.0
                self._chars.append((ch, s, s + float(dur) / 1000.0))

    def _close_word(self) -> None:
        if self._chars:
            text = "".join(c for c, _, _ in self._chars)
            self.words.append(Word(text, self._chars[0][1], self._chars[-1][2]))
            self._chars = []

    def finish(self) -> None:
        self._close_word()

    def heard(self, played_s: float) -> str:
        """The words whose middle has been played within `played_s` seconds of this synthesis' audio."""
        return " ".join(w.text for w in self.words if (w.start + w.end) / 2 <= played_s)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass
class _Socket:
    ws: ClientConnection
    voice: str
    keepalive: asyncio.Task[None] | None = None


class ElevenLabsTTS(HTTPProvider):
    """ElevenLabs voices as a `TTS` and `StreamingTTS`; see the module docstring."""

    provider = "elevenlabs"

    def __init__(self, *, voice_id: str = DEFAULT_VOICE, model_id: str = "eleven_flash_v2_5",
                 output_format: str = "pcm_24000", voice_settings: dict[str, Any] | None = None,
                 chunk_length_schedule: list[int] | None = None, api_key: str | None = None,
                 base_url: str | None = None, keep_warm: bool = False, inactivity_timeout: int = 60,
                 keepalive_s: float = 15.0, connect_timeout: float = 5.0, first_byte_timeout: float = 10.0,
                 name: str = "elevenlabs") -> None:
        base = (base_url or os.environ.get("ELEVENLABS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        secret = resolve_key(name, api_key, "ELEVENLABS_API_KEY", required=True)
        super().__init__(base_url=base, secret=secret, timeouts=Timeouts(connect_timeout, first_byte_timeout),
                         headers={"xi-api-key": secret.reveal()})
        audio_decoder(output_format)  # refuses an unknown format now, not at the first sentence
        self.name = self.provider = name
        self.voice_id, self.model_id, self.output_format = voice_id, model_id, output_format
        self.sample_rate = format_rate(output_format, 44100)
        self.voice_settings = voice_settings or {"stability": 0.5, "similarity_boost": 0.75}
        self.chunk_length_schedule = chunk_length_schedule
        self.keep_warm = keep_warm
        self.inactivity_timeout = inactivity_timeout
        self.keepalive_s = keepalive_s
        self._warm: list[_Socket] = []
        self._warming: set[asyncio.Task[None]] = set()  # sockets being opened or closed in the background

    async def check(self) -> dict[str, Any]:
        data = await self.request_json("GET", "/v1/user")
        return {"tier": (data.get("subscription") or {}).get("tier")}

    # ---- REST ------------------------------------------------------------------------------------------------
    async def synthesize(self, text: str, *, voice: str | None = None,
                         alignment: WordTimings | None = None) -> AsyncIterator[AudioFrame]:
        """One sentence to audio. With `alignment`, over the WebSocket (word timings); else the REST stream."""
        if not text.strip():
            return
        if alignment is not None:
            async for frame in self._generate(_once(text), voice, alignment):
                yield frame
            return
        path = f"/v1/text-to-speech/{quote(voice or self.voice_id, safe='')}/stream"
        body = {"text": text, "model_id": self.model_id, "voice_settings": self.voice_settings}
        decoder = audio_decoder(self.output_format)
        async with self.open_stream("POST", path, params={"output_format": self.output_format}, json=body) as chunks:
            async for chunk in chunks:
                for frame in self._decode(decoder.feed, chunk):
                    yield frame
        for frame in self._decode(lambda _: decoder.flush(), b""):
            yield frame

    def _decode(self, feed: Any, chunk: bytes) -> list[AudioFrame]:
        try:
            return list(feed(chunk))
        except AudioDecodeError as exc:
            raise ProviderError(f"{self.name} sent audio that does not decode: {exc}", provider=self.name,
                                retryable=True) from None

    # ---- WebSocket ---------------------------------------------------------------------------------------------
    async def synthesize_stream(self, text: AsyncIterable[str], *, voice: str | None = None,
                                alignment: WordTimings | None = None) -> AsyncIterator[AudioFrame]:
        """Text as it streams in (e.g. LLM tokens) to audio as soon as ElevenLabs has it."""
        async for frame in self._generate(text, voice, alignment):
            yield frame

    async def prewarm(self, voice: str | None = None) -> None:
        """Open (and initialise) the WebSocket for the next synthesis now, and keep it alive until used."""
        sock = await self._open(voice or self.voice_id)
        self._park(sock)

    def _park(self, sock: _Socket) -> None:
        sock.keepalive = asyncio.create_task(self._keepalive(sock))
        self._warm.append(sock)

    async def _keepalive(self, sock: _Socket) -> None:
        # a single space keeps a stream-input socket open without generating anything
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.keepalive_s)
                await sock.ws.send(json.dumps({"text": " "}))

    def _url(self, voice: str) -> str:
        query = urlencode({"model_id": self.model_id, "output_format": self.output_format,
                           "inactivity_timeout": self.inactivity_timeout})
        return f"{ws_url(self.base_url)}/v1/text-to-speech/{quote(voice, safe='')}/stream-input?{query}"

    async def _open(self, voice: str) -> _Socket:
        ws = await ws_connect(self.name, self._url(voice), {"xi-api-key": self._secret.reveal()},
                              timeouts=self.timeouts, secret=self._secret)
        first: dict[str, Any] = {"text": " ", "voice_settings": self.voice_settings}
        if self.chunk_length_schedule:
            first["generation_config"] = {"chunk_length_schedule": self.chunk_length_schedule}
        try:
            await ws.send(json.dumps(first))
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None
        return _Socket(ws, voice)

    async def _take(self, voice: str) -> _Socket:
        while self._warm:
            idx = next((i for i, s in enumerate(self._warm) if s.voice == voice), None)
            if idx is None:
                break
            sock = self._warm.pop(idx)
            if sock.keepalive:
                sock.keepalive.cancel()
            if sock.ws.state is State.OPEN:
                return sock
        return await self._open(voice)

    def _warm_next(self, voice: str) -> None:
        async def warm() -> None:
            try:
                self._park(await self._open(voice))
            except ProviderError as exc:
                log.info("%s: could not prewarm the next socket: %s", self.name, exc)

        task = asyncio.create_task(warm())
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def _generate(self, text: AsyncIterable[str], voice: str | None,
                        alignment: WordTimings | None) -> AsyncIterator[AudioFrame]:
        voice = voice or self.voice_id
        sock = await self._take(voice)
        if self.keep_warm:
            self._warm_next(voice)
        ws = sock.ws
        decoder = audio_decoder(self.output_format)
        loop = asyncio.get_running_loop()
        text_sent_at: float | None = None
        scope: asyncio.Timeout | None = None
        first = True

        def text_sent() -> None:
            # The first-byte clock starts with the first text: until then the wait is for the text source (an LLM
            # thinking), which has limits of its own.
            nonlocal text_sent_at
            text_sent_at = loop.time()
            if first and scope is not None:
                scope.reschedule(text_sent_at + self.timeouts.first_byte)

        sender = asyncio.create_task(self._send_text(ws, text, text_sent))
        audio_s = 0.0
        try:
            while True:
                if not first:
                    deadline: float | None = loop.time() + self.timeouts.idle
                else:
                    deadline = None if text_sent_at is None else text_sent_at + self.timeouts.first_byte
                try:
                    async with asyncio.timeout_at(deadline) as waiting:
                        scope = waiting
                        raw = await self._recv(ws, sender)
                except TimeoutError as exc:
                    if not waiting.expired():
                        raise
                    raise transport_error(self.name, exc, phase="first byte" if first else "mid-stream") from None
                except ConnectionClosed as exc:
                    if sender.done() and not sender.cancelled():
                        failure = sender.exception()
                        if failure is not None and not isinstance(failure, ConnectionClosed):
                            raise failure from None
                    raise self._closed_error(exc) from None
                finally:
                    scope = None
                first = False
                message = loads(self.name, "stream-input message", raw, self._secret)
                if message.get("error") or (message.get("message") and "audio" not in message):
                    raise self._message_error(message)
                if message.get("audio"):
                    try:
                        audio = base64.b64decode(message["audio"], validate=True)
                    except (binascii.Error, ValueError):
                        raise malformed(self.name, "audio chunk (not base64)", str(message["audio"])[:40]) from None
                    frames = self._decode(decoder.feed, audio)
                    if alignment is not None:
                        _align(alignment, message, audio_s)
                    for frame in frames:
                        audio_s += frame.duration
                        yield frame
                if message.get("isFinal"):
                    break
            for frame in self._decode(lambda _: decoder.flush(), b""):
                yield frame
            if alignment is not None:
                alignment.finish()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            # the close handshake runs in the background: a barge-in must not wait for the server to answer it
            closing = asyncio.create_task(ws.close())
            self._warming.add(closing)
            closing.add_done_callback(self._warming.discard)

    async def _recv(self, ws: ClientConnection, sender: asyncio.Task[None]) -> str | bytes:
        """The next server message, or the sender's failure as soon as it happens: when the text source raises,
        the end of text is never sent, and waiting for the server would only end in a misleading stall."""
        recv = asyncio.ensure_future(ws.recv())
        try:
            while not recv.done():
                if sender.done():
                    failure = None if sender.cancelled() else sender.exception()
                    # a send that failed on a closed socket: recv() reads what the server said before closing
                    if failure is not None and not isinstance(failure, ConnectionClosed):
                        raise failure
                    await asyncio.wait({recv})
                else:
                    await asyncio.wait({recv, sender}, return_when=asyncio.FIRST_COMPLETED)
            return recv.result()
        finally:
            if not recv.done():
                recv.cancel()  # safe: websockets' recv() loses no message when cancelled

    async def _send_text(self, ws: ClientConnection, text: AsyncIterable[str], sent: Callable[[], None]) -> None:
        """Forward the text in word-sized pieces ending in a space (what the API wants), then flush and end;
        `sent()` when the first of it (or the flush, for no text) has gone."""
        buffer = ""
        started = False

        async def send(message: dict[str, Any]) -> None:
            nonlocal started
            await ws.send(json.dumps(message))
            if not started:
                started = True
                sent()

        async for piece in text:
            buffer += piece
            if buffer.strip() and buffer.endswith(SPLITTERS):
                sentence_end = buffer.rstrip().endswith((".", "!", "?"))
                await send({"text": buffer if buffer.endswith(" ") else buffer + " ",
                            "try_trigger_generation": sentence_end})
                buffer = ""
        if buffer.strip():
            await send({"text": buffer + " ", "try_trigger_generation": True})
        await send({"text": " ", "flush": True})
        await send({"text": ""})

    def _closed_error(self, exc: ConnectionClosed) -> ProviderError:
        rcvd = exc.rcvd
        if rcvd is None:
            return transport_error(self.name, exc, phase="mid-stream", secret=self._secret)
        reason = redact(rcvd.reason or "", self._secret)
        retryable = rcvd.code not in (1008,) or "timeout" in reason
        return ProviderError(f"{self.name} closed the stream early (code {rcvd.code}: {reason or 'no reason'})",
                             provider=self.name, retryable=retryable)

    def _message_error(self, message: dict[str, Any]) -> ProviderError:
        kind = str(message.get("error") or message.get("status") or "error")
        text = redact(str(message.get("message") or kind), self._secret)
        auth = "api_key" in kind or "unauthorized" in kind or "auth" in kind
        return ProviderError(f"{self.name} failed mid-stream: {text} ({kind})", provider=self.name,
                             retryable=not auth)

    async def aclose(self) -> None:
        for task in list(self._warming):
            if task.get_coro().__name__ == "warm":  # type: ignore[union-attr]
                task.cancel()
        await asyncio.gather(*self._warming, return_exceptions=True)
        while self._warm:
            sock = self._warm.pop()
            if sock.keepalive:
                sock.keepalive.cancel()
            await sock.ws.close()
        await super().aclose()


def _align(timings: WordTimings, message: dict[str, Any], offset_s: float) -> None:
    align = message.get("alignment") or message.get("normalizedAlignment")
    if not isinstance(align, dict):
        return
    chars = align.get("chars") or []
    starts = align.get("charStartTimesMs") or align.get("char_start_times_ms") or []
    durations = (align.get("charDurationsMs") or align.get("charsDurationsMs") or align.get("chars_durations_ms")
                 or [])
    timings.add_chars(chars, starts, durations, offset_s)


async def _once(text: str) -> AsyncIterator[str]:
    yield text
