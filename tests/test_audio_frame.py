"""AudioFrame conversions, G.711 against CPython's audioop byte for byte, every codec round trip, broken files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxline.audio import codecs
from voxline.audio.frame import (
    AudioFrame,
    Resampler,
    decode_alaw,
    decode_mulaw,
    encode_alaw,
    encode_mulaw,
    float_to_int16,
)
from voxline.errors import AudioDecodeError, AudioError, UnsupportedFormatError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def test_g711_matches_audioop_byte_for_byte() -> None:
    frame = AudioFrame(ALL_INT16, 8000)
    assert encode_mulaw(frame) == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)
    assert encode_alaw(frame) == audioop.lin2alaw(ALL_INT16.tobytes(), 2)
    codes = bytes(range(256))
    assert decode_mulaw(codes).pcm() == audioop.ulaw2lin(codes, 2)
    assert decode_alaw(codes).pcm() == audioop.alaw2lin(codes, 2)
    # companding round trip: every code decodes and re-encodes to itself
    assert encode_mulaw(decode_mulaw(codes)) == audioop.lin2ulaw(audioop.ulaw2lin(codes, 2), 2)
    assert encode_alaw(decode_alaw(codes)) == codes


def test_conversions() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], np.float32)
    np.testing.assert_array_equal(float_to_int16(x), [0, 16384, -16384, 32767, -32767, 32767])
    f = AudioFrame.from_float(np.stack([x, -x], 1), 16000)
    assert f.channels == 2 and f.to_mono().samples[:, 0].tolist() == [0, 0, 0, 0, 0, 0]
    assert AudioFrame.from_pcm(f.pcm(), 16000, 2) == f
    assert f.with_channels(1).with_channels(3).channels == 3
    one = AudioFrame.from_float(np.sin(np.arange(16000) / 5).astype(np.float32), 16000)
    up = one.resample(48000)
    assert up.num_frames == 48000 and up.resample(16000).num_frames == 16000
    chunks = list(one.chunks(0.1))
    assert len(chunks) == 10 and chunks[3].timestamp == pytest.approx(0.3)
    r = Resampler(16000, 8000)
    out = AudioFrame.concat([r.process(c, last=i == 9) for i, c in enumerate(chunks)])
    assert abs(out.num_frames - 8000) <= 16
    assert one.slice(0.25, 0.5).num_frames == 4000 and one.slice(2, 3).num_frames == 0
    with pytest.raises(AttributeError):
        one.samples = one.samples  # type: ignore[misc]
    with pytest.raises(ValueError):
        one.samples[0] = 1


@pytest.mark.parametrize("bad", [
    lambda: AudioFrame.from_float(np.array([0.0, np.nan], np.float32), 16000),
    lambda: AudioFrame.from_float(np.array([np.inf], np.float64), 16000),
    lambda: AudioFrame.from_array(np.zeros(4, np.int32), 16000),
    lambda: AudioFrame.from_array(np.zeros(4, np.uint8), 16000),
    lambda: AudioFrame.from_float(np.zeros(4, np.int16), 16000),
    lambda: AudioFrame.from_array(np.array(["a"]), 16000),
    lambda: AudioFrame(np.zeros(4, np.float32), 16000),
    lambda: AudioFrame(np.zeros(4, np.int16), 0),
    lambda: AudioFrame(np.zeros(4, np.int16), 16000.5),
    lambda: AudioFrame(np.zeros((4, 2), np.int16), 16000, 1),
    lambda: AudioFrame.from_pcm(b"\x00\x01\x02", 16000),
    lambda: AudioFrame.concat([]),
    lambda: AudioFrame.concat([AudioFrame.silence(0.1, 16000), AudioFrame.silence(0.1, 8000)]),
])
def test_bad_samples_raise_audio_error(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AudioError):
        bad()


def _tone(rate: int, channels: int, seconds: float = 1.0) -> AudioFrame:
    t = np.arange(int(rate * seconds)) / rate
    y = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return AudioFrame.from_float(np.stack([y, y[::-1]][:channels], 1).astype(np.float32), rate)


@pytest.mark.parametrize("fmt", codecs.FORMATS)
@pytest.mark.parametrize("rate,channels", [(8000, 1), (16000, 1), (22050, 2), (44100, 2), (48000, 1)])
def test_codec_round_trip(fmt: str, rate: int, channels: int) -> None:
    src = _tone(rate, channels)
    data = codecs.encode_audio(src, fmt, bitrate="96k" if fmt in ("mp3", "m4a", "opus") else None)
    back = codecs.read_audio(data)
    assert back.channels == channels
    if fmt == "opus" and rate not in (8000, 12000, 16000, 24000, 48000):
        assert back.sample_rate == 24000 if rate < 24000 else 48000  # opus rates only: resampled up
        back = back.resample(rate)
    else:
        assert back.sample_rate == rate
    if fmt in ("wav", "flac"):
        assert back == src
        return
    assert abs(back.num_frames - src.num_frames) <= rate // 500  # encoder delay and padding removed (<= 2 ms)
    n = min(back.num_frames, src.num_frames)
    a, b = src.float32()[:n].ravel(), back.float32()[:n].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.95, "audio shifted or garbled"  # AAC priming used to shift m4a by 1024
    assert abs(back.rms() - src.rms()) < 0.1 * src.rms()


def test_write_info_and_tags(tmp_path: Path) -> None:
    src = _tone(16000, 1)
    for fmt in codecs.FORMATS:
        path = codecs.write_audio(src, tmp_path / f"t.{fmt}", tags={"title": "voxline"})
        info = codecs.audio_info(path)
        assert info.sample_rate in (16000,) and info.channels == 1
        assert info.duration_s == pytest.approx(1.0, abs=0.03), fmt
    assert codecs.format_from_path("x.MP4") == "m4a"
    with pytest.raises(UnsupportedFormatError):
        codecs.format_from_path("x.doc")
    with pytest.raises(UnsupportedFormatError):
        codecs.encode_audio(src, "aiff")
    with pytest.raises(AudioError):
        codecs.encode_audio(AudioFrame.silence(0, 16000), "wav")
    with pytest.raises(AudioError):
        codecs.encode_audio(src, "mp3", bitrate="fast")


@pytest.mark.parametrize("name", ["awful.wav", "bad.wav", "evil.wav", "null.wav"])
def test_bad_wavs(bad_dir: Path, name: str) -> None:
    with pytest.raises(AudioDecodeError, match=name):
        codecs.read_audio(bad_dir / name)
    with pytest.raises(AudioDecodeError):
        codecs.read_audio((bad_dir / name).read_bytes())


def test_bad_wav_headers(bad_dir: Path) -> None:
    with pytest.raises(AudioDecodeError, match="impossible sample rate"):
        codecs.audio_info(bad_dir / "awful.wav")
    assert codecs.audio_info(bad_dir / "null.wav").duration_s == 0.0  # a header with no data: true, and zero


def test_truncated_empty_and_garbage(tmp_path: Path) -> None:
    src = _tone(16000, 1)
    for fmt in ("flac", "mp3", "ogg", "m4a", "opus"):
        data = codecs.encode_audio(src, fmt)
        with pytest.raises(AudioDecodeError):
            codecs.read_audio(data[: min(40, len(data) // 10)])
    wav = codecs.encode_audio(src, "wav")
    half = codecs.read_audio(wav[: len(wav) // 2])  # a cut-off wav keeps what it has
    assert 0 < half.num_frames < src.num_frames
    with pytest.raises(AudioDecodeError, match="empty"):
        codecs.read_audio(b"")
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        codecs.read_audio(tmp_path / "zero.wav")
    with pytest.raises(AudioDecodeError, match="no such file"):
        codecs.read_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioDecodeError):
        codecs.read_audio(np.random.default_rng(0).bytes(5000))


def test_float_and_odd_dtype_files(tmp_path: Path) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.array([0.0, 0.5, -0.5], np.float32), 16000, format="WAV", subtype="FLOAT")
    assert codecs.read_audio(buf.getvalue()).samples[:, 0].tolist() == [0, 16384, -16384]
    nan = io.BytesIO()
    sf.write(nan, np.array([0.0, np.nan, 0.2], np.float32), 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        codecs.read_audio(nan.getvalue())
    pcm24 = io.BytesIO()
    sf.write(pcm24, np.array([0.25, -1.0], np.float64), 16000, format="FLAC", subtype="PCM_24")
    assert codecs.read_audio(pcm24.getvalue()).samples[:, 0].tolist() == [8192, -32768]


def _wav_with_format_tag(tag: int, rate: int = 8000, n: int = 100) -> bytes:
    """A 44-byte canonical WAV header (16-bit mono) with any format tag, then `n` zero samples."""
    import struct

    data = bytes(2 * n)
    fmt = struct.pack("<HHIIHH", tag, 1, rate, 2 * rate, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data"
            + struct.pack("<I", len(data)) + data)


def test_codec_ffmpeg_does_not_know_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "tag63.wav"
    path.write_bytes(_wav_with_format_tag(0x63))  # PyAV opens it with no codec context
    with pytest.raises(UnsupportedFormatError, match=r"tag63\.wav: unsupported audio codec"):
        codecs.audio_info(path)
    with pytest.raises(UnsupportedFormatError, match=r"tag63\.wav: unsupported audio codec"):
        codecs.read_audio(path)
    with pytest.raises(UnsupportedFormatError, match="unsupported audio codec"):
        codecs.read_audio(path.read_bytes())


@pytest.mark.parametrize("fmt", ["mp3", "opus", "m4a"])
def test_bitrates_the_encoder_refuses_are_audio_errors(fmt: str) -> None:
    src = _tone(16000, 1, 0.2)
    for bad in ("-64k", "0", -64000, "infk"):
        with pytest.raises(AudioError, match="bitrate"):
            codecs.encode_audio(src, fmt, bitrate=bad)
    if fmt != "mp3":  # lame clamps any positive rate; libopus and aac refuse 1 b/s (and libopus over 256k a channel)
        with pytest.raises(AudioError, match=f"{fmt} encoder .* refused a bit rate of '1'"):
            codecs.encode_audio(src, fmt, bitrate="1")
    if fmt == "opus":
        with pytest.raises(AudioError, match=r"libopus\) refused a bit rate of '600k' \(600000 b/s\)"):
            codecs.encode_audio(src, fmt, bitrate="600k")


def test_unwritable_paths_are_audio_errors(tmp_path: Path) -> None:
    (tmp_path / "afile").write_bytes(b"")
    for target in (tmp_path / "afile" / "x.wav", tmp_path / "missing" / "x.wav"):
        with pytest.raises(AudioError, match="cannot write"):
            codecs.write_audio(_tone(16000, 1, 0.1), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no temporary file left behind
