"""Voices: a library of named voice profiles, checks on reference samples, speaker similarity, voice cloning
(ElevenLabs Instant Voice Cloning, Coqui XTTS-v2 with the user's own weights) and embedded voice matching of a
Piper voice toward a reference speaker (WORLD vocoder). Heavy libraries (torch, pyworld) load only when used."""

from voxline.voices.library import VoiceLibrary, VoiceProfile, resolve_voice

__all__ = ["VoiceLibrary", "VoiceProfile", "resolve_voice"]
