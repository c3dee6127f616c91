"""What a session needs from a transport (WebSocket, browser page, Twilio, OpenAI Realtime, a local file).

A transport turns its wire format into `AudioFrame`s and `ClientEvent`s and back. It owns no conversation logic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from voxline.audio.frame import AudioFrame


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A non-audio message from the caller: text input, a playback position report, DTMF, a config change."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Transport(Protocol):
    """One caller's connection. `receive()` ends when the caller hangs up."""

    def receive(self) -> AsyncIterator[AudioFrame | ClientEvent]: ...

    async def send_audio(self, frame: AudioFrame) -> None:
        """Send reply audio (already at the transport's output rate); the session paces it."""

    async def send_event(self, event: dict[str, Any]) -> None:
        """Send a JSON-able event (transcripts, timeline, interruptions, errors)."""

    async def clear(self) -> None:
        """Tell the caller's side to drop the audio it has buffered but not played yet (barge-in)."""

    @property
    def output_sample_rate(self) -> int: ...
