"""Quality presets: one word (ultra_fast, fast, standard, high_quality) mapped to each engine's own knobs.

- piper: `noise_scale` / `noise_w_scale` (generator and duration noise: less is steadier, flatter), `length_scale`
  (1.0 = the voice's pace) and the soxr resampling quality used when its 22.05 kHz audio is converted.
- elevenlabs: `model_id` (flash v2.5: ~75 ms model latency; turbo v2.5: a little slower, better; multilingual
  v2: best and slowest, no streaming-latency optimisation), `optimize_streaming_latency` (0-4; 4 also turns off
  the text normaliser), `output_format` (what is sent over the wire: pcm at the agent's rate, or mp3).
- matched (WORLD): F0 analysis method (DIO + StoneMask: fast; Harvest: robust, ~13x slower) and frame period
  (5 ms is WORLD's default; 10 ms halves the cost, coarser pitch).
"""

from __future__ import annotations

from typing import Any

from voxline.errors import ConfigError

PRESETS: tuple[str, ...] = ("ultra_fast", "fast", "standard", "high_quality")

_TABLE: dict[str, dict[str, dict[str, Any]]] = {
    "piper": {
        "ultra_fast": {"noise_scale": 0.5, "noise_w_scale": 0.6, "length_scale": 0.95, "resample_quality": "QQ"},
        "fast": {"noise_scale": 0.6, "noise_w_scale": 0.7, "length_scale": 1.0, "resample_quality": "LQ"},
        "standard": {"noise_scale": None, "noise_w_scale": None, "length_scale": 1.0, "resample_quality": "HQ"},
        "high_quality": {"noise_scale": 0.667, "noise_w_scale": 0.8, "length_scale": 1.05,
                         "resample_quality": "VHQ"},
    },
    "elevenlabs": {
        "ultra_fast": {"model_id": "eleven_flash_v2_5", "optimize_streaming_latency": 4,
                       "output_format": "pcm_16000"},
        "fast": {"model_id": "eleven_flash_v2_5", "optimize_streaming_latency": 3, "output_format": "pcm_22050"},
        "standard": {"model_id": "eleven_turbo_v2_5", "optimize_streaming_latency": 2,
                     "output_format": "pcm_24000"},
        "high_quality": {"model_id": "eleven_multilingual_v2", "optimize_streaming_latency": 0,
                         "output_format": "mp3_44100_128"},
    },
    "matched": {
        "ultra_fast": {"method": "dio", "frame_period_ms": 10.0},
        "fast": {"method": "dio", "frame_period_ms": 7.5},
        "standard": {"method": "dio", "frame_period_ms": 5.0},
        "high_quality": {"method": "harvest", "frame_period_ms": 5.0},
    },
    "xtts": {
        "ultra_fast": {"temperature": 0.65, "stream_chunk_size": 10, "enable_text_splitting": True},
        "fast": {"temperature": 0.7, "stream_chunk_size": 15, "enable_text_splitting": True},
        "standard": {"temperature": 0.75, "stream_chunk_size": 20, "enable_text_splitting": True},
        "high_quality": {"temperature": 0.75, "stream_chunk_size": 40, "enable_text_splitting": False},
    },
}


def preset_for(engine: str, preset: str) -> dict[str, Any]:
    """The knobs of `engine` for `preset` (a copy); `ConfigError` for an unknown engine or preset."""
    if engine not in _TABLE:
        raise ConfigError(f"no presets for engine {engine!r} (engines: {', '.join(_TABLE)})")
    if preset not in PRESETS:
        raise ConfigError(f"unknown quality preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return dict(_TABLE[engine][preset])


def piper_kwargs(preset: str) -> dict[str, Any]:
    """Keyword arguments for `PiperTTS(...)` (the resampling quality is not one of them)."""
    knobs = preset_for("piper", preset)
    knobs.pop("resample_quality")
    return knobs


def elevenlabs_kwargs(preset: str) -> dict[str, Any]:
    """Keyword arguments for `ElevenLabsTTS(...)`; `optimize_streaming_latency` goes in the request's query."""
    knobs = preset_for("elevenlabs", preset)
    return {"model_id": knobs["model_id"], "output_format": knobs["output_format"]}
