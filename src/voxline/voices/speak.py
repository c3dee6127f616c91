"""The TTS that speaks a library voice: `tts_for(profile, ...) -> (tts, voice argument)`.

Sessions that already own a `PiperTTS` pass it in, so a matched or Piper voice reuses the loaded model; cloud
and XTTS voices get their own provider object (the caller owns and closes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxline.errors import ConfigError
from voxline.providers.base import TTS
from voxline.voices.library import VoiceLibrary, VoiceProfile
from voxline.voices.presets import elevenlabs_kwargs, piper_kwargs, preset_for


def tts_for(profile: VoiceProfile, library: VoiceLibrary, *, piper: Any = None, preset: str | None = None,
            xtts_model_dir: str | Path | None = None, **provider_options: Any) -> tuple[TTS, str | None]:
    """A `TTS` and the `voice=` argument that speak `profile` (quality `preset`, default: the profile's)."""
    preset = preset or profile.preset
    engine, voice = library.resolve(profile.name)
    if engine in ("piper", "matched"):
        if piper is None:
            from voxline.providers.piper import PiperTTS

            piper = PiperTTS(**piper_kwargs(preset))
        if engine == "piper":
            return piper, voice or None
        from voxline.voices.matching import MatchedVoiceTTS, MatchProfile

        if not profile.matching:
            raise ConfigError(f"voice {profile.name!r} is a matched voice without a matching profile")
        knobs = preset_for("matched", preset)
        match = MatchProfile.from_dict(profile.matching).with_quality(knobs["method"], knobs["frame_period_ms"])
        return MatchedVoiceTTS(piper, match), voice or None
    if engine == "elevenlabs":
        from voxline.providers.elevenlabs import ElevenLabsTTS

        return ElevenLabsTTS(voice_id=voice, **{**elevenlabs_kwargs(preset), **provider_options}), voice
    if engine == "xtts":
        from voxline.voices.cloning import XTTSTTS, XTTSConfig

        if xtts_model_dir is None:
            raise ConfigError("XTTS voices need the folder of your XTTS-v2 weights (xtts_model_dir / --xtts-dir)")
        return XTTSTTS(XTTSConfig(Path(xtts_model_dir))), voice
    raise ConfigError(f"unknown engine {engine!r}")
