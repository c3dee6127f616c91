"""A fake of ElevenLabs' voice endpoints: Instant Voice Cloning `POST /v1/voices/add`, `GET /v1/voices`,
`DELETE /v1/voices/{voice_id}`.

Wire format as documented (elevenlabs.io/docs/api-reference/voices/ivc/create) and as elevenlabs-python sends
it (`voices.ivc.create`): multipart with `name`, one `files` part per sample (`files[]` is accepted too),
optional `description`, `labels` (a JSON object as a string), `remove_background_noise`. Answers
`{"voice_id", "requires_verification": false}`. Errors as the vendor sends them: 401
`{"detail": {"status": "invalid_api_key", "message"}}`; 422 FastAPI validation bodies
`{"detail": [{"loc": ["body", field], "msg", "type"}]}`; 400 `{"detail": {"status": "invalid_audio", ...}}` for a
sample that is not audio; 404 `voice_not_found` on delete. Queued faults (`unauthorized`, `rate_limit`,
`server_error`) apply as in the other fakes.

Mount next to the TTS fake: `Mount("/elevenlabs", routes=elevenlabs.routes(...) + elevenlabs_voices.routes(state,
key))`, or serve `app(state, key)` on its own (tests use it in-process through `httpx.ASGITransport`).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from voxline.audio.codecs import read_audio
from voxline.errors import VoxlineError
from voxline.fakes.script import VendorScript


@dataclass
class VoiceCloneScript(VendorScript):
    """The fake's voices (voice_id -> voice object as `GET /v1/voices` lists it) and its queued faults."""

    voices: dict[str, dict[str, Any]] = field(default_factory=dict)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status, headers=headers)


def _invalid(field_name: str, msg: str, kind: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body", field_name], "msg": msg, "type": kind}]}, status_code=422)


def routes(script: VoiceCloneScript, api_key: str) -> list[BaseRoute]:
    def refused(request: Request) -> JSONResponse | None:
        fault = script.next_fault()
        if (fault and fault.kind == "unauthorized") or request.headers.get("xi-api-key") != api_key:
            return _error(401, "invalid_api_key", "Invalid API key")
        if fault and fault.kind == "rate_limit":
            return _error(429, "too_many_concurrent_requests", "Too many concurrent requests for your subscription.",
                          {"Retry-After": f"{fault.retry_after:g}"})
        if fault and fault.kind == "server_error":
            return _error(fault.status, "internal_error", "An internal server error occurred.")
        return None

    async def add(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        form = await request.form()
        script.requests.append({"path": "/v1/voices/add", "fields": sorted(form.keys())})
        name = form.get("name")
        if not isinstance(name, str) or not name.strip():
            return _invalid("name", "field required", "value_error.missing")
        uploads = [f for key in ("files", "files[]") for f in form.getlist(key) if isinstance(f, UploadFile)]
        if not uploads:
            return _invalid("files", "field required", "value_error.missing")
        labels: dict[str, Any] = {}
        if raw_labels := form.get("labels"):
            try:
                labels = json.loads(str(raw_labels))
            except ValueError:
                labels = None  # type: ignore[assignment]
            if not isinstance(labels, dict):
                return _invalid("labels", "labels must be a JSON object of strings", "type_error.dict")
        samples = []
        for upload in uploads:
            data = await upload.read()
            try:
                duration = read_audio(data).duration
            except VoxlineError:
                return _error(400, "invalid_audio", f"Could not decode the audio file {upload.filename!r}.")
            samples.append({"sample_id": secrets.token_hex(10), "file_name": upload.filename,
                            "mime_type": upload.content_type, "size_bytes": len(data), "duration_secs": duration})
        voice_id = secrets.token_urlsafe(15)[:20]
        script.voices[voice_id] = {
            "voice_id": voice_id, "name": name, "category": "cloned", "labels": labels,
            "description": str(form.get("description") or ""), "samples": samples,
            "created_at_unix": int(time.time()), "fine_tuning": {"is_allowed_to_fine_tune": True},
        }
        return JSONResponse({"voice_id": voice_id, "requires_verification": False})

    async def list_voices(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        return JSONResponse({"voices": list(script.voices.values())})

    async def delete(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        voice_id = request.path_params["voice_id"]
        if script.voices.pop(voice_id, None) is None:
            return _error(404, "voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
        return JSONResponse({"status": "ok"})

    return [Route("/v1/voices/add", add, methods=["POST"]),
            Route("/v1/voices", list_voices, methods=["GET"]),
            Route("/v1/voices/{voice_id}", delete, methods=["DELETE"])]


def app(script: VoiceCloneScript, api_key: str = "fake-key", prefix: str = "/elevenlabs") -> Starlette:
    """The voice endpoints alone, under `prefix` like the combined fakes."""
    return Starlette(routes=[Mount(prefix, routes=routes(script, api_key))])
