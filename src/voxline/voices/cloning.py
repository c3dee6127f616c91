"""Voice cloning engines: ElevenLabs Instant Voice Cloning (cloud), Coqui XTTS-v2 (local, the user's own install
and weights), and the embedded WORLD matching of `matching.py` (always available with the `voices` extra).

Every engine takes the reference samples only after `validate_samples` passed them: a refused set raises
`SampleSetError` with its reasons, before anything is uploaded or computed.

ElevenLabs (elevenlabs.io/docs/api-reference/voices/ivc/create; elevenlabs-python `voices.ivc.create`):
`POST /v1/voices/add`, multipart: `name`, `files` (one part per sample), optional `description`, `labels` (a JSON
object as a string), `remove_background_noise`; answers `{"voice_id", "requires_verification"}`. `GET /v1/voices`
lists voices, `DELETE /v1/voices/{voice_id}` removes one. Auth header `xi-api-key`. Errors: 401 with
`{"detail": {"status": "invalid_api_key", "message"}}`, 422 with FastAPI's `{"detail": [{"loc", "msg", "type"}]}`.

XTTS-v2: voxline never downloads its weights (1.8 GB, Coqui Public Model License); the user points
`xtts_model_dir` at a folder holding `config.json`, `model.pth`, `vocab.json` from their own copy, with the
`coqui-tts` package installed. `XTTSConfig.check()` says exactly what is missing.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError, ModelError, ProviderError
from voxline.providers.http import Secret, redact, resolve_key, status_error, transport_error
from voxline.voices.library import VoiceLibrary, VoiceProfile, check_name
from voxline.voices.validation import DEFAULT_THRESHOLDS, Thresholds, ValidationReport, validate_samples

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
PROVIDER = "elevenlabs"
MAX_UPLOAD_BYTES = 100 * 1024 * 1024


def _validation_message(body: bytes) -> str:
    """FastAPI's 422 body as one line: `name: field required; files: ...`."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:300]
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(x) for x in item.get("loc", []) if x != "body"]
                parts.append(f"{'.'.join(loc) or 'request'}: {item.get('msg', '')}")
        return "; ".join(parts) or str(detail)
    if isinstance(detail, dict):
        return f"{detail.get('message', '')} ({detail.get('status', '')})"
    return str(detail)


class ElevenLabsVoices:
    """The ElevenLabs voice endpoints (add / list / delete). `transport` lets tests run against the fake in-process.

    The key comes from `api_key` or `ELEVENLABS_API_KEY`, the base URL from `base_url` or `ELEVENLABS_BASE_URL`.
    """

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout: float = 120.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._secret: Secret = resolve_key(PROVIDER, api_key, "ELEVENLABS_API_KEY", required=True)
        self.base_url = (base_url or os.environ.get("ELEVENLABS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
                                         headers={"xi-api-key": self._secret.reveal()}, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ElevenLabsVoices:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise transport_error(PROVIDER, exc, phase="connect", secret=self._secret) from exc
        if response.status_code == 422:
            raise ProviderError(f"elevenlabs refused the request (HTTP 422): "
                                f"{redact(_validation_message(response.content), self._secret)}",
                                provider=PROVIDER, retryable=False)
        if response.status_code >= 400:
            raise status_error(PROVIDER, response.status_code, response.content, response.headers, self._secret)
        return response

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ProviderError(f"elevenlabs sent a malformed answer: {response.text[:120]!r}", provider=PROVIDER,
                                retryable=True)
        return data

    async def add(self, name: str, files: Sequence[str | Path], *, description: str = "",
                  labels: dict[str, str] | None = None, remove_background_noise: bool = False) -> dict[str, Any]:
        """Create an instant voice clone; returns `{"voice_id", "requires_verification"}`."""
        if not files:
            raise ConfigError("at least one sample file is needed to clone a voice")
        paths = [Path(f) for f in files]
        total = sum(p.stat().st_size for p in paths)
        if total > MAX_UPLOAD_BYTES:
            raise ConfigError(f"{total / 1e6:.0f} MB of samples; ElevenLabs takes at most "
                              f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB per upload (use compressed files)")
        data: dict[str, str] = {"name": name, "remove_background_noise": str(remove_background_noise).lower()}
        if description:
            data["description"] = description
        if labels:
            data["labels"] = json.dumps(labels)
        uploads = [("files", (p.name, p.read_bytes(), mimetypes.guess_type(p.name)[0] or "application/octet-stream"))
                   for p in paths]
        result = self._json(await self._request("POST", "/v1/voices/add", data=data, files=uploads))
        if not isinstance(result.get("voice_id"), str) or not result["voice_id"]:
            raise ProviderError(f"elevenlabs answered without a voice_id: {result}", provider=PROVIDER)
        return result

    async def list(self) -> list[dict[str, Any]]:
        voices = self._json(await self._request("GET", "/v1/voices")).get("voices")
        if not isinstance(voices, list):
            raise ProviderError("elevenlabs voice list without a 'voices' array", provider=PROVIDER, retryable=True)
        return voices

    async def delete(self, voice_id: str) -> None:
        await self._request("DELETE", f"/v1/voices/{voice_id}")


async def clone_elevenlabs(library: VoiceLibrary, name: str, samples: Sequence[str | Path], *,
                           voices: ElevenLabsVoices, description: str = "", labels: dict[str, str] | None = None,
                           encoder: Any = None, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                           remove_background_noise: bool = False) -> tuple[VoiceProfile, ValidationReport]:
    """Validate `samples`, create the ElevenLabs voice, store it in `library` as `name` (engine elevenlabs).

    If storing fails the remote voice is deleted again, so no voice is left that the library does not know.
    """
    check_name(name)
    if name in library:
        raise ConfigError(f"a voice named {name!r} already exists in the library")
    report = await asyncio.to_thread(validate_samples, samples, encoder, thresholds)
    report.raise_if_unusable()
    created = await voices.add(name, samples, description=description, labels=labels,
                               remove_background_noise=remove_background_noise)
    profile = VoiceProfile(name=name, engine="elevenlabs", voice=created["voice_id"], labels=labels or {},
                           description=description)
    try:
        profile = await asyncio.to_thread(library.add, profile, samples)
    except BaseException:
        await asyncio.shield(voices.delete(created["voice_id"]))
        raise
    return profile, report


# ---- Coqui XTTS-v2 ----------------------------------------------------------------------------------------
XTTS_FILES = ("config.json", "model.pth", "vocab.json")


@dataclass(frozen=True, slots=True)
class XTTSConfig:
    """Where the user's XTTS-v2 weights are. `check()` raises what is missing; nothing is ever downloaded."""

    model_dir: Path

    def problems(self) -> list[str]:
        out = []
        try:
            import TTS  # noqa: F401
        except ImportError:
            out.append("the 'coqui-tts' package is not installed (pip install coqui-tts; it brings its own torch "
                       "and transformers)")
        if not self.model_dir.is_dir():
            out.append(f"XTTS model folder {self.model_dir} does not exist")
        else:
            out.extend(f"{self.model_dir / f} is missing" for f in XTTS_FILES if not (self.model_dir / f).is_file())
        return out

    def check(self) -> None:
        if problems := self.problems():
            raise ModelError("XTTS-v2 is not usable: " + "; ".join(problems)
                             + ". voxline never downloads XTTS weights: use your own copy (Coqui Public Model "
                             "License) and set its folder.")


class XTTSTTS:
    """Coqui XTTS-v2 as a `TTS`, speaking with the voice of reference samples (`voice`: a folder of samples, as
    `resolve_voice` returns for an xtts voice). Needs the user's own install and weights (`XTTSConfig`).

    Conditioning latents are computed once per reference folder and kept; `inference_stream` yields chunks as
    the GPT decoder produces them, each converted to an `AudioFrame` (24 kHz). Not exercised in voxline's test
    suite: the weights cannot be shipped; `problems()` / `check()` are.
    """

    name = "xtts"
    sample_rate = 24000

    def __init__(self, config: XTTSConfig, *, language: str = "en", threads: int = 2) -> None:
        config.check()
        import torch
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        torch.set_num_threads(threads)
        cfg = XttsConfig()
        cfg.load_json(str(config.model_dir / "config.json"))
        model = Xtts.init_from_config(cfg)
        model.load_checkpoint(cfg, checkpoint_dir=str(config.model_dir), eval=True)
        self._model: Any = model
        self._language = language
        self._latents: dict[str, tuple[Any, Any]] = {}

    def _conditioning(self, voice: str) -> tuple[Any, Any]:
        if voice not in self._latents:
            folder = Path(voice)
            refs = sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else [voice]
            if not refs:
                raise ConfigError(f"no reference samples in {voice}")
            self._latents[voice] = self._model.get_conditioning_latents(audio_path=refs)
        return self._latents[voice]

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        if not voice:
            raise ConfigError("XTTS needs reference samples: pass the voice's sample folder as voice=")
        gpt_latent, speaker_embedding = await asyncio.to_thread(self._conditioning, voice)
        chunks = iter(self._model.inference_stream(text, self._language, gpt_latent, speaker_embedding))
        timestamp = 0.0
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            frame = AudioFrame.from_float(np.asarray(chunk.cpu().numpy(), np.float32), self.sample_rate, timestamp)
            timestamp += frame.duration
            yield frame


async def clone_matched(library: VoiceLibrary, name: str, samples: Sequence[str | Path], *, tts: Any,
                        base_voice: str = "", preset: str = "standard", encoder: Any = None,
                        description: str = "", labels: dict[str, str] | None = None,
                        thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[VoiceProfile, ValidationReport]:
    """Validate `samples`, measure them against the Piper voice `base_voice` and store a `matched` voice."""
    from voxline.voices.matching import match_profile
    from voxline.voices.presets import preset_for

    check_name(name)
    if name in library:
        raise ConfigError(f"a voice named {name!r} already exists in the library")
    report = await asyncio.to_thread(validate_samples, samples, encoder, thresholds)
    report.raise_if_unusable()
    knobs = preset_for("matched", preset)
    refs = [await asyncio.to_thread(read_audio, s) for s in samples]
    profile = await match_profile(tts, refs, voice=base_voice or None, method=knobs["method"],
                                  frame_period_ms=knobs["frame_period_ms"])
    stored = VoiceProfile(name=name, engine="matched", voice=base_voice, labels=labels or {},
                          description=description, preset=preset, matching=profile.to_dict())
    return await asyncio.to_thread(library.add, stored, samples), report
