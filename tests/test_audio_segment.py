"""`Sound` against pydub on real speech: the same edits give the same samples.

pydub reads soundfile-written WAV here (it needs ffmpeg for anything else). Where pydub pads a slice that ends at the
rounded length with up to one millisecond of silence, voxline keeps exactly the samples there are: the comparisons
allow that tail and require equality over the common samples.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxline.audio.frame import AudioFrame
from voxline.audio.segment import Sound, concatenate
from voxline.errors import AudioError, UnsupportedFormatError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # "Couldn't find ffmpeg": not needed for wav
    from pydub import AudioSegment, effects
    from pydub import silence as pydub_silence

# 16 kHz LibriSpeech (whole ms) and 22.05 kHz LJSpeech (33949 frames: not a whole number of ms)
FILES = ["gold/2412-153948-0000.flac", "gold/LJ002-0020.flac", "multi/1998-15444-0001.flac"]


def _pydub(path: Path) -> AudioSegment:
    data, rate = sf.read(path, dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    buf.seek(0)
    return AudioSegment.from_wav(buf)


def _same(p: AudioSegment, v: Sound) -> None:
    a = np.frombuffer(p.raw_data, np.int16)
    b = v.samples.ravel()
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) <= v.channels * math.ceil(v.frame_rate / 1000), (len(a), len(b))
    np.testing.assert_array_equal(a[:n], b[:n])
    assert len(p) == len(v)


@pytest.fixture(scope="module", params=FILES, ids=lambda f: Path(f).stem)
def pair(request: pytest.FixtureRequest, speech_dir: Path) -> tuple[AudioSegment, Sound]:
    path = speech_dir / request.param
    return _pydub(path), Sound.from_file(path)


def test_load_and_levels(pair: tuple[AudioSegment, Sound]) -> None:
    p, v = pair
    _same(p, v)
    assert (v.rms, v.max, v.frame_rate, v.channels, v.sample_width) == (p.rms, p.max, p.frame_rate, p.channels, 2)
    assert v.dBFS == pytest.approx(p.dBFS, abs=1e-9)
    assert v.max_dBFS == pytest.approx(p.max_dBFS, abs=1e-9)
    assert v.duration_seconds == pytest.approx(p.duration_seconds)
    assert v.get_array_of_samples() == p.get_array_of_samples()


def test_gain_concat_repeat_slice_reverse(pair: tuple[AudioSegment, Sound]) -> None:
    p, v = pair
    _same(p + 6, v + 6)
    _same(p - 3.5, v - 3.5)
    _same(p + 30, v + 30)  # clips
    _same(p + p, v + v)
    _same(p * 3, v * 3)
    for a, b in [(1000, 2500), (0, 1), (-700, None), (250, 251), (400.5, 1234.7)]:
        _same(p[a:b], v[a:b])
        assert len(v[a:b]) == len(p[a:b])
    _same(p.reverse(), v.reverse())
    assert [len(c) for c in v[::400]] == [len(c) for c in p[::400]]


def test_fades(pair: tuple[AudioSegment, Sound]) -> None:
    p, v = pair
    _same(p.fade_in(500), v.fade_in(500))  # > 100 ms: one step per ms
    _same(p.fade_in(60), v.fade_in(60))  # <= 100 ms: one step per sample
    _same(p.fade_out(80), v.fade_out(80))
    _same(p.fade_out(1000), v.fade_out(1000))
    _same(p.fade(to_gain=-10, start=300, end=900), v.fade(to_gain=-10, start=300, end=900))
    _same(p.fade(from_gain=-6, end=700, duration=200), v.fade(from_gain=-6, end=700, duration=200))


def test_overlay(pair: tuple[AudioSegment, Sound]) -> None:
    p, v = pair
    q, w = p[600:900], v[600:900]
    _same(p.overlay(q, position=500), v.overlay(w, position=500))
    _same(p.overlay(q, position=500, gain_during_overlay=-6, times=3),
          v.overlay(w, position=500, gain_during_overlay=-6, times=3))
    _same(p.overlay(q, loop=True), v.overlay(w, loop=True))
    _same(p.overlay(p + 20), v.overlay(v + 20))  # saturating add


def test_normalize_channels_width(pair: tuple[AudioSegment, Sound]) -> None:
    p, v = pair
    _same(effects.normalize(p), v.normalize())
    _same(effects.normalize(p, 3), v.normalize(3))
    _same(p.set_channels(2), v.set_channels(2))
    ps = AudioSegment.from_mono_audiosegments(p, p.reverse())
    vs = Sound(AudioFrame(np.stack([v.samples[:, 0], v.samples[::-1, 0]], 1), v.frame_rate, 2))
    _same(ps, vs)
    assert (vs.rms, vs.dBFS) == (ps.rms, pytest.approx(ps.dBFS))
    _same(ps.set_channels(1), vs.set_channels(1))
    p8, v8 = p.set_sample_width(1), v.set_sample_width(1)
    _same(p8.set_sample_width(2), v8)
    assert (v8.rms, v8.max, v8.get_array_of_samples()) == (p8.rms, p8.max, p8.get_array_of_samples())
    _same((p8 - 4).set_sample_width(2), v8 - 4)
    p32, v32 = p.set_sample_width(4), v.set_sample_width(4)
    assert (v32.max, v32.get_array_of_samples()) == (p32.max, p32.get_array_of_samples())
    assert abs(v32.rms - p32.rms) <= 1 and v32.dBFS == pytest.approx(p32.dBFS, abs=1e-6)


@pytest.mark.parametrize("kw", [{"min_silence_len": 300, "silence_thresh": -40},
                                {"min_silence_len": 200, "silence_thresh": -35, "seek_step": 10},
                                {"min_silence_len": 150, "silence_thresh": -45, "seek_step": 7}])
def test_silence_matches_pydub(pair: tuple[AudioSegment, Sound], kw: dict[str, float]) -> None:
    """pydub's rules exactly, so boundaries agree to the millisecond (well within one seek step)."""
    p, v = pair
    assert v.detect_silence(**kw) == pydub_silence.detect_silence(p, **kw)
    assert v.detect_nonsilent(**kw) == pydub_silence.detect_nonsilent(p, **kw)
    ours, theirs = v.split_on_silence(keep_silence=100, **kw), pydub_silence.split_on_silence(p, keep_silence=100,
                                                                                             **kw)
    assert len(ours) == len(theirs)
    for a, b in zip(theirs, ours, strict=True):
        _same(a, b)


def test_strip_silence_and_compress(speech_dir: Path) -> None:
    path = speech_dir / FILES[0]
    p, v = _pydub(path), Sound.from_file(path)
    _same(effects.strip_silence(p, 300, -40, 100), v.strip_silence(300, -40, 100))
    # the compressor's envelope runs per ms here and per sample in pydub: levels agree, samples nearly
    c1, c2 = effects.compress_dynamic_range(p[:3000]), v[:3000].compress_dynamic_range()
    a = np.frombuffer(c1.raw_data, np.int16).astype(float)
    b = c2.samples.ravel().astype(float)
    assert c2.dBFS == pytest.approx(c1.dBFS, abs=0.2)
    assert np.corrcoef(a, b)[0, 1] > 0.999
    assert c2.max < v[:3000].max  # it did compress
    assert v.compress_dynamic_range(threshold=-0.5) == v  # nothing over the threshold: untouched


def test_mismatched_rates_channels_are_synced() -> None:
    a = Sound.from_array(np.full(8000, 1000, np.int16), 8000)
    b = Sound(AudioFrame(np.full((16000, 2), -500, np.int16), 16000, 2), sample_width=1)
    ab = a + b
    assert (ab.frame_rate, ab.channels, ab.sample_width) == (16000, 2, 2)
    assert len(ab) == 2000
    assert sum([a, a, a]) == a * 3
    assert len(concatenate([a, a], crossfade=100)) == 1900


def test_bad_edits_have_clear_errors() -> None:
    s = Sound.from_array(np.zeros(1600, np.int16), 16000)
    for bad in (500, -500, math.nan, math.inf):
        with pytest.raises(AudioError, match="gain"):
            s + bad
    with pytest.raises(TypeError):
        s - s
    with pytest.raises(TypeError):
        s * 1.5
    with pytest.raises(AudioError):
        s.fade(to_gain=-10, start=0, end=50, duration=50)
    with pytest.raises(AudioError):
        s.set_sample_width(3)
    with pytest.raises(AudioError):
        Sound(AudioFrame(np.zeros((10, 3), np.int16), 16000, 3)).set_channels(2)
    with pytest.raises(AudioError):
        s.append(s, crossfade=500)
    with pytest.raises(AudioError):
        s[math.nan:10]
    with pytest.raises(AudioError, match="empty"):
        s[0:0].export(format="wav")
    with pytest.raises(UnsupportedFormatError):
        s.export(format="xyz")
    with pytest.raises(AudioError):
        s.detect_silence(min_silence_len=0)


def test_empty_and_zero_length() -> None:
    e = Sound.empty(16000)
    assert (len(e), e.rms, e.max, e.dBFS, e.max_dBFS) == (0, 0, 0, -math.inf, -math.inf)
    assert e.normalize() == e and e.reverse() == e and e.fade_in(0) == e
    assert e.detect_silence(100) == [] and e.split_on_silence(100) == []
    s = Sound.silent(1000, 16000)
    assert s.normalize() == s  # silence stays silence
    assert s.detect_nonsilent(100, -50) == [] and s.detect_silence(100, -50) == [[0, 1000]]
    assert len(s[500:400]) == 0 and len(s[2000:3000]) == 0


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "opus", "m4a"])
def test_export_round_trip(fmt: str, tmp_path: Path, speech_dir: Path) -> None:
    v = Sound.from_file(speech_dir / FILES[0])[1000:3000]
    path = v.export(tmp_path / f"x.{fmt}", tags={"title": "voxline"}, bitrate="64k" if fmt != "wav" else None)
    back = Sound.from_file(path)
    assert back.channels == 1 and abs(len(back) - len(v)) <= 1
    if fmt in ("wav", "flac"):
        assert back == v
    else:  # lossy: same level and waveform shape
        ref = v.set_frame_rate(back.frame_rate)
        n = min(len(ref.samples), len(back.samples))
        corr = np.corrcoef(ref.samples[:n, 0].astype(float), back.samples[:n, 0].astype(float))[0, 1]
        assert corr > 0.9 and abs(back.dBFS - v.dBFS) < 1.5
    assert isinstance(v.export(format=fmt), bytes)


@pytest.mark.parametrize("width,subtype", [(1, "PCM_U8"), (4, "PCM_32")])
def test_export_sample_width(width: int, subtype: str, tmp_path: Path) -> None:
    s = Sound.from_array(np.linspace(-0.5, 0.5, 1600).astype(np.float32), 16000).set_sample_width(width)
    path = s.export(tmp_path / "w.wav")
    assert sf.info(path).subtype == subtype
    back = Sound.from_file(path)
    assert back.sample_width == width and back == s


@pytest.mark.parametrize("duration", [1234.5, 150.5, 100.5, 2000.25])
def test_fractional_fades_ramp_to_the_end(duration: float) -> None:
    s = Sound.from_array(np.full(16000 * 3, 10000, np.int16), 16000)
    out = s.fade_out(duration).samples[:, 0]
    assert out[-1] < 100 and np.all(np.diff(out.astype(int)) <= 0)  # the end of a fade-out is quiet
    into = s.fade_in(duration).samples[:, 0]
    end = int(duration * 16)
    assert np.all(np.diff(into.astype(int)) >= 0) and into[end - 1] < 10000 and into[end] == 10000


def test_fades_refuse_nan_and_infinite_times() -> None:
    s = Sound.from_array(np.full(1600, 1000, np.int16), 16000)
    for fade in (lambda: s.fade_in(math.nan), lambda: s.fade_out(math.nan), lambda: s.fade_in(math.inf),
                 lambda: s.fade(to_gain=-10, start=math.nan, end=50), lambda: s.fade(to_gain=-10, start=0,
                                                                                     end=math.nan)):
        with pytest.raises(AudioError, match="fade times"):
            fade()


def test_export_to_an_unwritable_path_is_an_audio_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(AudioError, match="cannot write"):
        Sound.silent(100, 16000).export(tmp_path / "afile" / "x.wav")
