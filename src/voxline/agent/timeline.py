"""Per-turn latency timeline: when each stage of a turn happened, on one monotonic clock.

The stages, in order: `speech_end` (last voiced audio of the user), `turn_decided` (the detector ended the turn),
`final_transcript`, `llm_first_token`, `first_sentence`, `tts_first_audio`, `first_audio_sent`, and one of
`playback_finished` / `interrupted`. Voice-to-voice latency is `first_audio_sent - speech_end`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

STAGES = ("speech_end", "turn_decided", "final_transcript", "llm_first_token", "first_sentence",
          "tts_first_audio", "first_audio_sent", "playback_finished", "interrupted")


@dataclass
class TurnTimeline:
    turn: int
    marks: dict[str, float] = field(default_factory=dict)
    drafted: bool = False
    """The reply took over a draft made in the pause (`voxline.agent.draft`): its LLM, and perhaps the audio of its
    first piece, started before the turn ended."""
    drafts: int = 0
    """Replies drafted during this turn's pauses, the adopted one included: the speculative LLM work the turn cost
    (each one not adopted was thrown away)."""

    def mark(self, stage: str, at: float | None = None) -> None:
        """Record `stage` at monotonic time `at` (now by default); the first mark of a stage wins."""
        if stage not in STAGES:
            raise ValueError(f"unknown timeline stage {stage!r}")
        self.marks.setdefault(stage, time.monotonic() if at is None else at)

    def has(self, stage: str) -> bool:
        return stage in self.marks

    @property
    def voice_to_voice(self) -> float | None:
        if "speech_end" in self.marks and "first_audio_sent" in self.marks:
            return self.marks["first_audio_sent"] - self.marks["speech_end"]
        return None

    def relative_ms(self) -> dict[str, float]:
        """Each stage in ms after speech_end (or after the first mark when there is no speech_end)."""
        if not self.marks:
            return {}
        zero = self.marks.get("speech_end", min(self.marks.values()))
        return {s: round((self.marks[s] - zero) * 1000, 1) for s in STAGES if s in self.marks}

    def as_event(self) -> dict[str, Any]:
        v2v = self.voice_to_voice
        return {"type": "timeline", "turn": self.turn, "stages_ms": self.relative_ms(),
                "voice_to_voice_ms": None if v2v is None else round(v2v * 1000, 1), "drafted": self.drafted,
                "drafts": self.drafts}
