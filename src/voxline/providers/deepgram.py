"""Deepgram speech to text: the live WebSocket as voxline's `STTStream`, pre-recorded `POST /v1/listen` as
`transcribe`.

    stt = DeepgramSTT(model="nova-3", language="en")     # DEEPGRAM_API_KEY
    await stt.prewarm()                                  # a connection ready before the caller speaks

Mapping onto voxline's one-final-per-turn contract: Deepgram finalizes *segments* (`is_final`) as it goes; a
voxline stream gathers them and emits interim `Transcript`s (finalized segments + the current interim) until the
session calls `finalize()`, which sends `{"type": "Finalize"}`; the result marked `from_finalize` closes the turn
with one `Transcript(is_final=True)`. Deepgram does not promise that result when it has no significant audio
buffered, so the wait for it depends on what Deepgram already reported: none when its last result was a final
segment covering all the audio sent, `finalize_grace` when only audio it said nothing about is left after that
segment (silence: no interim came), `finalize_timeout` otherwise; then what was gathered is the final.
`speech_final` (endpointing) and `UtteranceEnd` surface as interim transcripts with `speech_final=True`: the
provider's own hint that the caller has finished.

Robustness: `{"type": "KeepAlive"}` every `keepalive_s` without audio (Deepgram closes a silent socket after 10 s);
after a dropped connection (or a 1011 server close) the stream reconnects and replays the audio sent since the last
finalized segment (bounded by `max_replay_s`), so nothing the caller said is lost or doubled. A connection whose
turn ended cleanly goes back to a small pool and serves the next turn; `prewarm()` fills that pool ahead of time.

Reference: developers.deepgram.com (Live Audio API reference, Finalize, KeepAlive, CloseStream, Endpointing and
interim results, Utterance End, Speech Started, error close codes NET-0001/DATA-0000) and deepgram-python-sdk
`deepgram/clients/listen/v1/websocket/response.py` (LiveResultResponse, UtteranceEndResponse, MetadataResponse).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from voxline.audio.codecs import encode_audio
from voxline.audio.frame import AudioFrame, Resampler
from voxline.errors import ProviderError
from voxline.observe import report
from voxline.providers.base import Segment, Transcript, Word
from voxline.providers.http import (
    HTTPProvider,
    Timeouts,
    loads,
    malformed,
    redact,
    resolve_key,
    ws_connect,
    ws_url,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.deepgram.com"


@dataclass(frozen=True)
class _Closed:
    code: int | None
    reason: str


class _Conn:
    """One live socket: a reader filling `inbox`, a KeepAlive sender, the audio seconds sent on it."""

    def __init__(self, ws: ClientConnection, key: tuple[int, str | None], keepalive_s: float) -> None:
        self.ws = ws
        self.key = key
        self.keepalive_s = keepalive_s
        self.sent_s = 0.0
        self.last_send = time.monotonic()
        self.inbox: asyncio.Queue[str | bytes | _Closed] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())
        self.keeper = asyncio.create_task(self._keepalive())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.inbox.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd  # None: the connection ended without a close frame (dropped)
            self.inbox.put_nowait(_Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else ""))

    async def _keepalive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.keepalive_s / 4)
                if time.monotonic() - self.last_send >= self.keepalive_s:
                    await self.send(json.dumps({"type": "KeepAlive"}))

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)
        self.last_send = time.monotonic()

    @property
    def usable(self) -> bool:
        return self.ws.state is State.OPEN and not self.reader.done()

    async def close(self) -> None:
        self.keeper.cancel()
        if self.ws.state is State.OPEN:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(json.dumps({"type": "CloseStream"}))
        await self.ws.close()
        self.reader.cancel()


class DeepgramSTT(HTTPProvider):
    """Deepgram as a voxline `STT`; see the module docstring."""

    provider = "deepgram"

    def __init__(self, *, model: str = "nova-3", language: str | None = "en", api_key: str | None = None,
                 base_url: str | None = None, interim_results: bool = True, endpointing: int | bool = 300,
                 utterance_end_ms: int | None = 1000, smart_format: bool = True, vad_events: bool = True,
                 keepalive_s: float = 4.0, max_replay_s: float = 30.0, reconnect_attempts: int = 2,
                 finalize_timeout: float = 2.0, finalize_grace: float = 0.3, warm_connections: int = 1,
                 connect_timeout: float = 5.0, first_byte_timeout: float = 30.0, name: str = "deepgram") -> None:
        base = (base_url or os.environ.get("DEEPGRAM_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        secret = resolve_key(name, api_key, "DEEPGRAM_API_KEY", required=True)
        super().__init__(base_url=base, secret=secret, timeouts=Timeouts(connect_timeout, first_byte_timeout),
                         headers={"Authorization": f"Token {secret.reveal()}"})
        self.name = self.provider = name
        self.model, self.language = model, language
        self.interim_results, self.endpointing, self.utterance_end_ms = interim_results, endpointing, utterance_end_ms
        self.smart_format, self.vad_events = smart_format, vad_events
        self.keepalive_s, self.max_replay_s = keepalive_s, max_replay_s
        self.reconnect_attempts, self.finalize_timeout = reconnect_attempts, finalize_timeout
        self.finalize_grace = min(finalize_grace, finalize_timeout)
        self.warm_connections = warm_connections
        self._pool: list[_Conn] = []

    async def check(self) -> dict[str, Any]:
        data = await self.request_json("GET", "/v1/projects")
        return {"projects": len(data.get("projects") or [])}

    # ---- pre-recorded ----------------------------------------------------------------------------------------
    async def transcribe(self, audio: AudioFrame, language: str | None = None) -> Transcript:
        if audio.num_frames == 0:
            return Transcript("", is_final=True)
        wav = await asyncio.to_thread(encode_audio, audio.to_mono(), "wav")
        params = {"model": self.model, "smart_format": _flag(self.smart_format)}
        if language or self.language:
            params["language"] = str(language or self.language)
        data = await self.request_json("POST", "/v1/listen", params=params, content=wav,
                                       headers={"Content-Type": "audio/wav"})
        try:
            channel = data["results"]["channels"][0]
            alt = channel["alternatives"][0]
            text = str(alt["transcript"])
        except (KeyError, IndexError, TypeError):
            raise malformed(self.name, "pre-recorded response", json.dumps(data)[:200], self._secret) from None
        words = _words(alt, 0.0)
        duration = float((data.get("metadata") or {}).get("duration") or audio.duration)
        return Transcript(text, is_final=True, segments=(Segment(text, 0.0, duration, words),) if text else (),
                          language=channel.get("detected_language") or language or self.language,
                          duration=duration)

    # ---- live ----------------------------------------------------------------------------------------------
    def stream(self, sample_rate: int = 16000, language: str | None = None) -> DeepgramStream:
        return DeepgramStream(self, sample_rate, language if language is not None else self.language)

    async def prewarm(self, sample_rate: int = 16000, language: str | None = None) -> None:
        """Open a live connection now (kept alive with KeepAlive) for the next `stream()` with these settings."""
        key = (sample_rate, language if language is not None else self.language)
        self._pool.append(await self._connect(key))

    def _url(self, key: tuple[int, str | None]) -> str:
        rate, language = key
        params: dict[str, Any] = {"model": self.model, "encoding": "linear16", "sample_rate": rate, "channels": 1,
                                  "interim_results": _flag(self.interim_results),
                                  "smart_format": _flag(self.smart_format), "vad_events": _flag(self.vad_events),
                                  "endpointing": _flag(self.endpointing) if isinstance(self.endpointing, bool)
                                  else self.endpointing}
        if language:
            params["language"] = language
        if self.utterance_end_ms:
            params["utterance_end_ms"] = self.utterance_end_ms
        return f"{ws_url(self.base_url)}/v1/listen?{urlencode(params)}"

    async def _connect(self, key: tuple[int, str | None]) -> _Conn:
        ws = await ws_connect(self.name, self._url(key), {"Authorization": f"Token {self._secret.reveal()}"},
                              timeouts=self.timeouts, secret=self._secret)
        return _Conn(ws, key, self.keepalive_s)

    async def _take(self, key: tuple[int, str | None]) -> _Conn:
        for conn in list(self._pool):
            if conn.key == key:
                self._pool.remove(conn)
                if conn.usable:
                    while not conn.inbox.empty():  # anything left over belongs to an earlier turn
                        conn.inbox.get_nowait()
                    return conn
                await conn.close()
        return await self._connect(key)

    async def _release(self, conn: _Conn, clean: bool) -> None:
        if clean and conn.usable and len(self._pool) < self.warm_connections:
            self._pool.append(conn)
        else:
            await conn.close()

    async def aclose(self) -> None:
        while self._pool:
            await self._pool.pop().close()
        await super().aclose()


def _flag(value: bool | int) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _words(alt: dict[str, Any], offset: float) -> tuple[Word, ...]:
    return tuple(Word(str(w.get("punctuated_word") or w.get("word", "")), offset + float(w.get("start", 0.0)),
                      offset + float(w.get("end", 0.0)), float(w.get("confidence", 1.0)))
                 for w in alt.get("words") or [])


class DeepgramStream:
    """One turn of live recognition; see the module docstring for the mapping and the reconnect rules."""

    def __init__(self, stt: DeepgramSTT, sample_rate: int, language: str | None) -> None:
        self._stt = stt
        self._rate = sample_rate
        self._key = (sample_rate, language)
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._resampler: Resampler | None = None
        # audio since the last finalized segment: (start on the stream's clock, pcm)
        self._replay: deque[tuple[float, bytes]] = deque()
        self._replay_bytes = 0
        self._sent_s = 0.0          # stream clock: seconds of audio sent
        self._offset = 0.0          # stream time = connection time + offset
        self._conn_start = 0.0      # connection time at which this stream's audio starts
        self._final_end = 0.0
        self._heard_to = 0.0        # stream clock: end of the latest result (what Deepgram has reported on)
        self._settled = False       # the latest result with words was a final segment: no speech pending
        self._segments: list[Segment] = []
        self._interim = ""
        self._finalizing = False
        self._answered = False      # a result came since the Finalize: Deepgram is working on the turn
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self._clean = False
        self._reconnects = 0

    # -- public ----------------------------------------------------------------------------------------------
    async def send(self, frame: AudioFrame) -> None:
        if self._closed:
            raise ProviderError(f"send() on a closed {self._stt.name} stream", provider=self._stt.name)
        frame = frame.to_mono()
        if frame.sample_rate != self._rate:
            self._resampler = self._resampler or Resampler(frame.sample_rate, self._rate)
            frame = self._resampler.process(frame)
        pcm = frame.pcm()
        if not pcm:
            return
        async with self._lock:
            await self._ensure()
            self._remember(pcm)
            assert self._conn is not None
            with contextlib.suppress(ConnectionClosed):  # the pump reconnects and replays this audio
                await self._conn.send(pcm)
                self._conn.sent_s += len(pcm) / (2 * self._rate)
            self._clean = False

    async def finalize(self) -> None:
        if self._closed:
            raise ProviderError(f"finalize() on a closed {self._stt.name} stream", provider=self._stt.name)
        async with self._lock:
            if self._conn is None:  # nothing was said
                self._out.put_nowait(Transcript("", is_final=True))
                return
            wait = self._final_wait()
            self._finalizing, self._answered = True, False
            with contextlib.suppress(ConnectionClosed):
                await self._conn.send(json.dumps({"type": "Finalize"}))
        if not self._finalizing:
            return  # the from_finalize result came already
        if wait <= 0:
            log.debug("%s: nothing buffered since the last final segment; final at once", self._stt.name)
            self._emit_final()
            self._clean = False  # a late from_finalize may still come on this socket: not for the next turn
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._finalize_fallback(wait))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.put_nowait(None)  # the reader ends now, not after the goodbye to the server
        for task in (self._timer, self._pump):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._conn is not None:
            await self._stt._release(self._conn, self._clean and not self._finalizing)
            self._conn = None

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Transcript]:
        while (item := await self._out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- connection ------------------------------------------------------------------------------------------
    async def _ensure(self) -> None:
        if self._conn is not None:
            return
        self._conn = await self._stt._take(self._key)
        self._conn_start = self._conn.sent_s
        self._offset = self._sent_s - self._conn.sent_s
        self._pump = asyncio.create_task(self._run())

    def _remember(self, pcm: bytes) -> None:
        self._replay.append((self._sent_s, pcm))
        self._replay_bytes += len(pcm)
        self._sent_s += len(pcm) / (2 * self._rate)
        limit = int(self._stt.max_replay_s * self._rate * 2)
        while self._replay_bytes > limit and len(self._replay) > 1:
            _, old = self._replay.popleft()
            self._replay_bytes -= len(old)

    def _trim(self, upto: float) -> None:
        """Forget the audio before `upto` (stream clock): it is in a finalized segment."""
        while self._replay:
            start, pcm = self._replay[0]
            end = start + len(pcm) / (2 * self._rate)
            if end <= upto + 1e-6:
                self._replay.popleft()
                self._replay_bytes -= len(pcm)
            elif start < upto:
                cut = round((upto - start) * self._rate) * 2
                self._replay[0] = (start + cut / (2 * self._rate), pcm[cut:])
                self._replay_bytes -= cut
                break
            else:
                break

    async def _reconnect(self, closed: _Closed) -> bool:
        """Open a new connection and replay the unfinalized audio; `reconnect_attempts` per turn in all."""
        stt = self._stt
        while True:
            self._reconnects += 1
            if self._reconnects > stt.reconnect_attempts:
                self._out.put_nowait(ProviderError(
                    f"{stt.name}: connection lost (code {closed.code or 'none: dropped'}) and the "
                    f"{stt.reconnect_attempts} reconnects allowed per turn are used up", provider=stt.name,
                    retryable=True))
                return False
            replay_s = round(self._replay_bytes / (2 * self._rate), 3)
            log.warning("%s: connection lost (%s); reconnecting (%d/%d) and replaying %.2f s of audio", stt.name,
                        closed.code or "dropped", self._reconnects, stt.reconnect_attempts, replay_s)
            report({"type": "provider", "event": "reconnect", "provider": stt.name, "kind": "stt",
                    "attempt": self._reconnects, "code": closed.code, "replayed_s": replay_s})
            try:
                conn = await stt._connect(self._key)
            except ProviderError as exc:
                if not exc.retryable or self._reconnects >= stt.reconnect_attempts:
                    self._out.put_nowait(exc)
                    return False
                await asyncio.sleep(0.2 * self._reconnects)
                continue
            async with self._lock:
                old, self._conn = self._conn, conn
                self._conn_start = 0.0
                self._offset = self._replay[0][0] if self._replay else self._sent_s
                try:
                    for _, pcm in self._replay:
                        await conn.send(pcm)
                        conn.sent_s += len(pcm) / (2 * self._rate)
                    if self._finalizing:
                        await conn.send(json.dumps({"type": "Finalize"}))
                except ConnectionClosed:
                    continue
            if old is not None:
                old.keeper.cancel()
            return True

    async def _run(self) -> None:
        try:
            while self._conn is not None:
                item = await self._conn.inbox.get()
                if isinstance(item, _Closed):
                    if item.code == 1008 or (item.code == 1000 and self._closed):
                        if item.code == 1008:
                            reason = redact(item.reason, self._stt._secret)
                            self._out.put_nowait(ProviderError(f"{self._stt.name} refused the audio: {reason}",
                                                               provider=self._stt.name, retryable=False))
                        return
                    if not await self._reconnect(item):
                        return
                    continue
                self._handle(loads(self._stt.name, "live message", item, self._stt._secret))
        except ProviderError as exc:
            self._out.put_nowait(exc)
            if self._conn is not None:
                await self._conn.close()

    # -- messages --------------------------------------------------------------------------------------------
    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "Results":
            self._on_results(msg)
        elif kind == "UtteranceEnd":
            text = self._text()
            if text:
                self._out.put_nowait(Transcript(text, is_final=False, speech_final=True, duration=self._sent_s))
        elif kind == "Error":
            detail = redact(str(msg.get("description") or msg.get("message") or msg), self._stt._secret)
            raise ProviderError(f"{self._stt.name} error: {detail}", provider=self._stt.name, retryable=True)
        # SpeechStarted, Metadata and types added later carry nothing a transcript needs

    def _on_results(self, msg: dict[str, Any]) -> None:
        try:
            alt = msg["channel"]["alternatives"][0]
            text = str(alt.get("transcript", ""))
            start = float(msg.get("start", 0.0))
            end = start + float(msg.get("duration", 0.0))
        except (KeyError, IndexError, TypeError, ValueError):
            raise malformed(self._stt.name, "Results message", json.dumps(msg)[:200], self._stt._secret) from None
        if end <= self._conn_start + 1e-6 and not msg.get("from_finalize"):
            return  # a late result for an earlier turn on this reused connection
        self._heard_to = max(self._heard_to, end + self._offset)
        if self._finalizing:
            self._answered = True
        if msg.get("is_final"):
            self._settled = True
            if text:
                self._segments.append(Segment(text, start + self._offset, end + self._offset,
                                              _words(alt, self._offset)))
            self._final_end = end + self._offset
            self._trim(self._final_end)
            self._interim = ""
            if msg.get("from_finalize") and self._finalizing:
                self._emit_final()
                return
            self._out.put_nowait(Transcript(self._text(), is_final=False, speech_final=bool(msg.get("speech_final")),
                                            segments=tuple(self._segments), duration=self._sent_s))
        else:
            self._interim = text
            self._settled = self._settled and not text
            self._out.put_nowait(Transcript(self._text(), is_final=False, segments=tuple(self._segments),
                                            duration=self._sent_s))

    def _text(self) -> str:
        return " ".join([s.text for s in self._segments] + ([self._interim] if self._interim else [])).strip()

    def _emit_final(self) -> None:
        text = self._text()
        segments = tuple(self._segments) + ((Segment(self._interim, self._final_end, self._sent_s),)
                                            if self._interim else ())
        self._out.put_nowait(Transcript(text, is_final=True, speech_final=True, segments=segments,
                                        language=self._key[1], duration=self._sent_s))
        self._segments, self._interim, self._finalizing = [], "", False
        self._clean = True
        self._reconnects = 0
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()

    def _final_wait(self) -> float:
        """How long to wait for the from_finalize result, which Deepgram does not promise when nothing significant
        is buffered: no wait when its last result was a final segment covering all the audio sent; a short one when
        only audio it reported nothing on is left after that segment (a word there would most likely have had an
        interim already); the full `finalize_timeout` while words are pending or nothing was reported yet."""
        stt = self._stt
        if not self._settled or self._interim:
            return stt.finalize_timeout
        if self._sent_s - self._heard_to <= 0.02:
            return 0.0
        return stt.finalize_grace if stt.interim_results else stt.finalize_timeout

    async def _finalize_fallback(self, wait: float) -> None:
        await asyncio.sleep(wait)
        if self._finalizing and self._answered and wait < self._stt.finalize_timeout:
            await asyncio.sleep(self._stt.finalize_timeout - wait)  # Deepgram is still at it: give it the full time
        if self._finalizing:
            log.info("%s: no from_finalize result within %.1f s; using the transcript so far", self._stt.name,
                     self._stt.finalize_timeout if self._answered else wait)
            self._emit_final()
            self._clean = False
