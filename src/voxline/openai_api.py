"""OpenAI-compatible REST audio endpoints on voxline's own providers: `/v1/audio/speech`,
`/v1/audio/transcriptions`, `/v1/models`.

Any `model` name is accepted and served by the stack's STT or TTS (`GET /v1/models` lists what this server offers),
so applications written for OpenAI work by changing `base_url`. Errors use OpenAI's error body.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from voxline.agent.stack import Stack
from voxline.audio.codecs import encode_audio, read_audio
from voxline.audio.frame import AudioFrame, Resampler
from voxline.errors import VoxlineError
from voxline.providers.base import Transcript
from voxline.subtitles import to_srt, to_vtt

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's limit for transcription uploads
SPEECH_RATE = 24000  # OpenAI's pcm output is 24 kHz 16-bit mono
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/mp4", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
CODEC_FOR = {"mp3": "mp3", "opus": "opus", "aac": "m4a", "flac": "flac"}


def error(message: str, status: int = 400, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}}, status_code=status)


class SpeechRequest(BaseModel):
    model: str
    input: str = Field(min_length=1, max_length=4096)
    voice: str = "default"
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None


def _wav_header(rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes at their maximum, as streaming servers do)."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2,
                                                                                 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def _stretch(frame: AudioFrame, speed: float) -> AudioFrame:
    """Change speaking speed without changing pitch (phase vocoder)."""
    if abs(speed - 1.0) < 1e-3:
        return frame
    import librosa

    return AudioFrame.from_float(np.clip(librosa.effects.time_stretch(frame.mono_float32(), rate=speed), -1, 1),
                                 frame.sample_rate)


def openai_routes(stack: Stack) -> list[BaseRoute]:
    created = int(time.time())

    async def models(request: Request) -> Response:
        ids = [("voxline-stt", stack.stt.name), ("voxline-tts", stack.tts.name), ("voxline-realtime", "voxline")]
        return JSONResponse({"object": "list", "data": [
            {"id": i, "object": "model", "created": created, "owned_by": f"voxline ({backend})"}
            for i, backend in ids]})

    async def speech(request: Request) -> Response:
        try:
            body = SpeechRequest.model_validate(await request.json())
        except json.JSONDecodeError:
            return error("the body must be JSON")
        except ValidationError as exc:
            first = exc.errors()[0]
            return error(f"{'.'.join(map(str, first['loc']))}: {first['msg']}", param=str(first["loc"][0]))
        fmt = body.response_format

        async def pcm_chunks() -> AsyncIterator[bytes]:
            resampler: Resampler | None = None
            async for frame in stack.tts.synthesize(body.input):
                frame = _stretch(frame.to_mono(), body.speed)
                if resampler is None:
                    resampler = Resampler(frame.sample_rate, SPEECH_RATE)
                yield resampler.process(frame).pcm()
            if resampler is not None:
                yield resampler.process(AudioFrame.silence(0, resampler.in_rate), last=True).pcm()

        if fmt in ("pcm", "wav"):
            async def stream() -> AsyncIterator[bytes]:
                if fmt == "wav":
                    yield _wav_header(SPEECH_RATE)
                async for chunk in pcm_chunks():
                    yield chunk

            return StreamingResponse(stream(), media_type=MEDIA_TYPES[fmt])
        pcm = b"".join([c async for c in pcm_chunks()])
        if not pcm:
            return error("the input produced no audio", param="input")
        audio = encode_audio(AudioFrame.from_pcm(pcm, SPEECH_RATE), CODEC_FOR[fmt])
        return Response(audio, media_type=MEDIA_TYPES[fmt])

    async def transcriptions(request: Request) -> Response:
        try:
            form = await request.form(max_part_size=MAX_UPLOAD_BYTES)
        except Exception as exc:  # starlette raises MultiPartException / HTTPException on bad uploads
            return error(f"could not read the multipart form: {exc}")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return error("a 'file' part is required", param="file", code="missing_required_parameter")
        fmt = str(form.get("response_format") or "json")
        if fmt not in ("json", "text", "srt", "vtt", "verbose_json"):
            return error(f"response_format must be json, text, srt, vtt or verbose_json, not {fmt!r}",
                         param="response_format")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return error(f"the file exceeds {MAX_UPLOAD_BYTES} bytes", status=413, param="file")
        language = str(form.get("language") or "") or None
        words = "word" in form.getlist("timestamp_granularities[]")
        transcribe: Any = stack.stt.transcribe
        try:
            audio = read_audio(data)
            try:
                transcript = await transcribe(audio, language, words=words)
            except TypeError:  # a provider without word timings
                transcript = await transcribe(audio, language)
        except VoxlineError as exc:
            return error(f"{upload.filename or 'file'}: {exc}", param="file", code="invalid_file")
        if str(form.get("stream") or "").lower() == "true":
            return StreamingResponse(_sse(transcript), media_type="text/event-stream")
        if fmt == "text":
            return PlainTextResponse(transcript.text + "\n")
        if fmt == "srt":
            return PlainTextResponse(to_srt(transcript.segments))
        if fmt == "vtt":
            return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
        if fmt == "verbose_json":
            return JSONResponse(_verbose(transcript, audio.duration, words))
        return JSONResponse({"text": transcript.text})

    return [Route("/v1/models", models), Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"])]


def _verbose(t: Transcript, duration: float, words: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe", "language": t.language or "unknown", "duration": round(duration, 3), "text": t.text,
        "segments": [{"id": i, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": [],
                      "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
                     for i, s in enumerate(t.segments)]}
    if words:
        body["words"] = [{"word": w.text.strip(), "start": w.start, "end": w.end} for s in t.segments for w in s.words]
    return body


async def _sse(t: Transcript) -> AsyncIterator[bytes]:
    """OpenAI's streamed transcription events: one delta per segment, then the whole text."""
    for i, s in enumerate(t.segments):
        delta = s.text if i == 0 else " " + s.text.strip()
        yield f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': delta})}\n\n".encode()
    yield f"data: {json.dumps({'type': 'transcript.text.done', 'text': t.text})}\n\n".encode()
