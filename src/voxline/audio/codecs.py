"""Reading and writing audio files: wav/flac through soundfile, mp3/ogg/opus/m4a through PyAV (no ffmpeg binary).

Every failure (truncated file, garbage, unknown codec, zero-length audio) becomes an `AudioDecodeError` or
`UnsupportedFormatError` naming the file, never a library traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import soundfile as sf

from voxline.audio.frame import MAX_SAMPLE_RATE, AudioFrame
from voxline.errors import AudioDecodeError, AudioError, UnsupportedFormatError

if TYPE_CHECKING:
    import av

Source = str | os.PathLike[str] | bytes | bytearray | BinaryIO

# ogg is Vorbis through libsndfile: PyAV's wheels carry no libvorbis encoder
SOUNDFILE_FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}
SOUNDFILE_SUBTYPES = {"ogg": "VORBIS"}
# container, codec, default sample format, rates the encoder accepts (None: any)
PYAV_FORMATS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "mp3": ("mp3", "libmp3lame", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": ("ogg", "libopus", (8000, 12000, 16000, 24000, 48000)),
    "m4a": ("mp4", "aac", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
}
FORMATS = tuple(SOUNDFILE_FORMATS) + tuple(PYAV_FORMATS)


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What a file holds, read from its header without decoding the audio."""

    path: str
    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str
    bit_rate: int | None = None


def _name(source: Source) -> str:
    return os.fspath(source) if isinstance(source, str | os.PathLike) else "<bytes>"


def _as_input(source: Source) -> str | BinaryIO:
    if isinstance(source, bytes | bytearray):
        if not source:
            raise AudioDecodeError("empty audio data (0 bytes)")
        return io.BytesIO(bytes(source))
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise AudioDecodeError(f"{path}: file is empty (0 bytes)")
        return str(path)
    return source


def format_from_path(path: str | os.PathLike[str]) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    ext = {"oga": "ogg", "mp4": "m4a", "aac": "m4a", "wave": "wav"}.get(ext, ext)
    if ext not in FORMATS:
        raise UnsupportedFormatError(f"{path}: unknown audio format {ext!r}; use one of {', '.join(FORMATS)}")
    return ext


def read_audio(source: Source) -> AudioFrame:
    """Decode a whole file (or bytes, or a binary stream) to one frame, at its own rate and channel count."""
    src = _as_input(source)
    name = _name(source)
    try:
        with sf.SoundFile(src) as f:  # float files read as int16 come back as zeros: read them as float
            floats = f.subtype in ("FLOAT", "DOUBLE")
            data, rate = f.read(dtype="float32" if floats else "int16", always_2d=True), f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        if not isinstance(src, str):
            src.seek(0)
        frame = _read_pyav(src, name)
    else:
        if data.shape[0] == 0:
            raise AudioDecodeError(f"{name}: contains no audio samples")
        try:
            frame = AudioFrame.from_array(data, int(rate)) if floats else AudioFrame(data, int(rate), data.shape[1])
        except AudioError as exc:  # an impossible rate or channel count, NaN samples
            raise AudioDecodeError(f"{name}: {exc}") from exc
    return frame


def _read_pyav(src: str | BinaryIO, name: str) -> AudioFrame:
    import av

    try:
        with av.open(src, mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{name}: no audio stream in this file")
            stream = container.streams.audio[0]
            ctx = _codec_context(stream, name)
            rate = ctx.sample_rate or stream.rate
            channels = ctx.channels or 1
            layout = "mono" if channels == 1 else "stereo"
            resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
            tb = stream.time_base
            duration_s = float(stream.duration * tb) if stream.duration and tb else 0.0
            chunks = []
            for packet_frame in container.decode(stream):
                for out in resampler.resample(packet_frame):
                    chunks.append(out.to_ndarray().reshape(-1, min(channels, 2)))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1, min(channels, 2)))
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise AudioDecodeError(f"{name}: not a readable audio file ({exc})") from exc
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise AudioDecodeError(f"{name}: contains no audio samples")
    samples = np.concatenate(chunks).astype(np.int16)
    if duration_s:  # drop the encoder's end padding (AAC pads to whole 1024-sample frames)
        samples = samples[:max(1, round(duration_s * rate))]
    return AudioFrame(samples, int(rate), samples.shape[1])


def _codec_context(stream: av.AudioStream, name: str) -> av.AudioCodecContext:
    """The stream's codec context; PyAV gives None where FFmpeg has no decoder (e.g. WAV format tag 0x63)."""
    ctx: av.AudioCodecContext | None = stream.codec_context
    if ctx is None:
        raise UnsupportedFormatError(f"{name}: unsupported audio codec (FFmpeg has no decoder for it)")
    return ctx


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Header facts of a file: duration, rate, channels, codec, without decoding the samples."""
    src = _as_input(path)
    assert isinstance(src, str)
    try:
        i = sf.info(src)
        if not 1 <= i.samplerate <= MAX_SAMPLE_RATE:
            raise AudioDecodeError(f"{src}: header claims an impossible sample rate of {i.samplerate} Hz")
        return AudioInfo(src, float(i.duration), int(i.samplerate), int(i.channels),
                         i.subtype_info or i.subtype, i.format.lower())
    except (sf.LibsndfileError, RuntimeError):
        pass
    import av

    try:
        with av.open(src) as c:
            if not c.streams.audio:
                raise AudioDecodeError(f"{src}: no audio stream in this file")
            s = c.streams.audio[0]
            ctx = _codec_context(s, src)
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            elif c.duration is not None:
                duration = c.duration / 1_000_000
            else:
                duration = read_audio(src).duration
            return AudioInfo(src, duration, int(ctx.sample_rate), int(ctx.channels), ctx.name, c.format.name,
                             c.bit_rate or None)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioDecodeError(f"{src}: not a readable audio file ({exc})") from exc


def encode_audio(frame: AudioFrame, fmt: str, *, bitrate: str | int | None = None,
                 tags: dict[str, str] | None = None) -> bytes:
    """Encode a frame to the bytes of a file in `fmt` (wav, flac, mp3, ogg, opus, m4a)."""
    fmt = fmt.lower().lstrip(".")
    if frame.num_frames == 0:
        raise AudioError("cannot encode empty audio")
    if fmt in SOUNDFILE_FORMATS:
        buf = io.BytesIO()
        with sf.SoundFile(buf, "w", frame.sample_rate, frame.channels, SOUNDFILE_SUBTYPES.get(fmt, "PCM_16"),
                          format=SOUNDFILE_FORMATS[fmt]) as f:
            for key, value in (tags or {}).items():
                if key in ("title", "artist", "album", "comment", "date", "genre", "copyright", "software"):
                    setattr(f, key, value)
            f.write(frame.samples)
        return buf.getvalue()
    if fmt not in PYAV_FORMATS:
        raise UnsupportedFormatError(f"cannot write {fmt!r}; use one of {', '.join(FORMATS)}")
    return _encode_pyav(frame, fmt, bitrate, tags or {})


def _parse_bitrate(bitrate: str | int | None) -> int | None:
    """Bits per second from '64k' or 64000; zero or negative is refused here, as encoders refuse it opaquely."""
    if bitrate is None:
        return None
    if isinstance(bitrate, int):
        bps = bitrate
    else:
        text = bitrate.strip().lower()
        try:
            bps = int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)
        except (ValueError, OverflowError):  # OverflowError: 'infk'
            raise AudioError(f"bad bitrate {bitrate!r}; write e.g. '128k' or 128000") from None
    if bps <= 0:
        raise AudioError(f"bitrate must be positive, got {bitrate!r}; write e.g. '128k' or 128000")
    return bps


def _encode_pyav(frame: AudioFrame, fmt: str, bitrate: str | int | None, tags: dict[str, str]) -> bytes:
    import av

    container_name, codec, rates = PYAV_FORMATS[fmt]
    if frame.channels > 2:
        frame = frame.with_channels(2)
    if rates is not None and frame.sample_rate not in rates:
        frame = frame.resample(min(rates, key=lambda r: (r < frame.sample_rate, abs(r - frame.sample_rate))))
    rate_bps = _parse_bitrate(bitrate)
    buf = io.BytesIO()
    layout = "mono" if frame.channels == 1 else "stereo"
    try:
        with av.open(buf, mode="w", format=container_name) as out:
            for key, value in tags.items():
                out.metadata[key] = value
            stream = out.add_stream(codec, rate=frame.sample_rate, layout=layout)
            assert isinstance(stream, av.AudioStream)
            if rate_bps:
                stream.bit_rate = rate_bps
            src = av.AudioFrame.from_ndarray(frame.samples.reshape(1, -1), format="s16", layout=layout)
            src.sample_rate = frame.sample_rate
            src.pts, src.time_base = 0, Fraction(1, frame.sample_rate)  # a start pts lets mp4 record AAC priming
            for packet in stream.encode(src):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except av.error.FFmpegError as exc:  # the encoder checks its own limits (libopus: 500 b/s to 256k per channel)
        asked = f"a bit rate of {bitrate!r} ({rate_bps} b/s)" if rate_bps else "its default settings"
        raise AudioError(f"the {fmt} encoder ({codec}) refused {asked} at {frame.sample_rate} Hz, {layout} "
                         f"({exc})") from None
    return buf.getvalue()


def write_audio(frame: AudioFrame, path: str | os.PathLike[str], fmt: str | None = None, *,
                bitrate: str | int | None = None, tags: dict[str, str] | None = None) -> Path:
    """Write a frame to `path`, the format taken from `fmt` or the extension; written atomically."""
    data = encode_audio(frame, fmt or format_from_path(path), bitrate=bitrate, tags=tags)
    return write_file(data, path)


def write_file(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write `data` through a temporary file and a rename, so a reader never sees half a file; an OSError (missing
    folder, a parent that is a file, no permission) becomes an `AudioError` naming the path, not a traceback."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise AudioError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target
