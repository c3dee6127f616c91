"""Prometheus metrics as a session observer: per-stage latency histograms, turns, interruptions, errors.

Each server owns its own `CollectorRegistry` (no global default registry), so tests and several apps in one process
do not collide.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)


class SessionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stage = Histogram("voxline_turn_stage_seconds", "Time from the end of the user's speech to each stage "
                               "of the turn", ["stage"], buckets=_BUCKETS, registry=self.registry)
        self.voice_to_voice = Histogram("voxline_voice_to_voice_seconds", "End of user speech to first reply audio "
                                        "sent", buckets=_BUCKETS, registry=self.registry)
        self.turns = Counter("voxline_turns", "Agent replies started", registry=self.registry)
        self.interruptions = Counter("voxline_interruptions", "Replies cut short by the caller (barge-in)",
                                     registry=self.registry)
        self.errors = Counter("voxline_errors", "Errors reported to callers", ["source"], registry=self.registry)
        self.sessions = Gauge("voxline_sessions_active", "Connected callers", registry=self.registry)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "timeline":
            self.turns.inc()
            for stage, ms in event.get("stages_ms", {}).items():
                if stage != "speech_end":
                    self.stage.labels(stage).observe(max(0.0, ms / 1000))
            if (v2v := event.get("voice_to_voice_ms")) is not None:
                self.voice_to_voice.observe(max(0.0, v2v / 1000))
        elif kind == "interrupted":
            self.interruptions.inc()
        elif kind == "error":
            self.errors.labels(str(event.get("source", "unknown"))).inc()
