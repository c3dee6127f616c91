"""`voxline audio ...` end to end through click, on real speech."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_audio_frame import _wav_with_format_tag
from voxline.audio.codecs import audio_info
from voxline.audio.segment import Sound
from voxline.cli import main
from voxline.cli.audio import parse_time
from voxline.errors import AudioError

GOLD = ["gold/goforward.flac", "gold/LJ002-0020.flac", "gold/LJ002-0035.flac"]


@pytest.fixture()
def work(tmp_path: Path, speech_dir: Path) -> Path:
    (tmp_path / "in").mkdir()
    for name in GOLD:
        shutil.copy(speech_dir / name, tmp_path / "in")
    return tmp_path


def run(*args: str) -> str:
    result = CliRunner().invoke(main, ["audio", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def fails(*args: str) -> str:
    result = CliRunner().invoke(main, ["audio", *args], catch_exceptions=False)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    return result.output


def test_help_has_examples() -> None:
    for cmd in ("info", "convert", "normalize", "trim", "split", "concat", "fade", "gain", "compress", "analyze"):
        assert "Examples:" in run(cmd, "--help"), cmd


def test_info_json(work: Path, manifest: list[dict]) -> None:
    rows = json.loads(run("info", str(work / "in" / "*.flac"), "--json"))
    assert len(rows) == 3
    durations = {r["file"].split("/")[-1]: r["duration_s"] for r in manifest}
    for row in rows:
        assert {"duration_s", "sample_rate", "channels", "codec", "container", "bit_rate"} <= row.keys()
        assert row["duration_s"] == pytest.approx(durations[Path(row["path"]).name], abs=2e-3)


def test_convert_batch_and_single(work: Path) -> None:
    run("convert", str(work / "in" / "goforward.flac"), str(work / "g.mp3"), "--bitrate", "48k")
    i = audio_info(work / "g.mp3")
    assert i.container == "mp3" and i.sample_rate == 16000
    run("convert", str(work / "in" / "*.flac"), str(work / "out" / "{stem}.ogg"), "--rate", "8000", "-q")
    assert sorted(p.name for p in (work / "out").iterdir()) == sorted(Path(g).stem + ".ogg" for g in GOLD)
    assert audio_info(work / "out" / "goforward.ogg").sample_rate == 8000
    assert "pattern" in fails("convert", str(work / "in" / "*.flac"), str(work / "one.wav"))


def test_normalize_gain_fade_compress(work: Path) -> None:
    run("normalize", str(work / "in" / "*.flac"), "-o", str(work / "n" / "{stem}.wav"))
    for name in GOLD:
        assert Sound.from_file(work / "n" / (Path(name).stem + ".wav")).max_dBFS == pytest.approx(-0.1, abs=0.01)
    run("normalize", str(work / "in" / "goforward.flac"), "-o", str(work / "l.wav"), "--lufs", "-20")
    from voxline.audio.analysis import loudness

    assert loudness(Sound.from_file(work / "l.wav")) == pytest.approx(-20, abs=0.2)
    src = Sound.from_file(work / "in" / "goforward.flac")
    run("gain", str(work / "in" / "goforward.flac"), "-o", str(work / "g.wav"), "--db=-6")
    assert Sound.from_file(work / "g.wav") == src - 6
    run("fade", str(work / "in" / "goforward.flac"), "-o", str(work / "f.wav"), "--in", "300", "--out", "500")
    assert Sound.from_file(work / "f.wav") == src.fade_in(300).fade_out(500)
    run("compress", str(work / "in" / "goforward.flac"), "-o", str(work / "c.wav"), "--threshold", "-30")
    assert Sound.from_file(work / "c.wav") == src.compress_dynamic_range(-30)
    assert "dB" in fails("gain", str(work / "in" / "goforward.flac"), "-o", str(work / "x.wav"), "--db", "500")


def test_trim_split_concat(work: Path) -> None:
    src = Sound.from_file(work / "in" / "LJ002-0020.flac")
    run("trim", str(work / "in" / "LJ002-0020.flac"), "-o", str(work / "t.wav"), "--start", "0.2", "--end", "900ms")
    assert Sound.from_file(work / "t.wav") == src[200:900]
    run("trim", str(work / "in" / "goforward.flac"), "-o", str(work / "s.wav"), "--silence")
    assert 0 < len(Sound.from_file(work / "s.wav")) < len(Sound.from_file(work / "in" / "goforward.flac"))
    long = Sound.from_file(work / "in" / "LJ002-0035.flac")
    parts = json.loads(run("split", str(work / "in" / "LJ002-0035.flac"), "-o", str(work / "p" / "{index:02d}.wav"),
                           "--min-silence", "150", "--thresh", "-40", "--json"))
    expected = long.split_on_silence(150, -40, 100, 10)
    assert len(parts) == len(expected) >= 2
    assert [Sound.from_file(p["path"]) for p in parts] == expected
    run("concat", *(str(work / "in" / Path(g).name) for g in GOLD), "-o", str(work / "all.wav"), "--gap", "100")
    total = sum(len(Sound.from_file(work / "in" / Path(g).name)) for g in GOLD)
    assert abs(len(Sound.from_file(work / "all.wav")) - (total + 200)) <= 3  # 16 kHz file resampled to 22.05 kHz


def test_analyze_json_and_plot(work: Path) -> None:
    out = json.loads(run("analyze", str(work / "in" / "goforward.flac"), "--json", "--plot", str(work / "a.png")))
    assert out["segments"][0]["label"] == "speech" and out["loudness_lufs"] < -10
    assert 70 < out["pitch_median_hz"] < 300
    assert (work / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_errors_are_clean(work: Path, bad_dir: Path) -> None:
    assert "impossible sample rate" in fails("info", str(bad_dir / "awful.wav"))
    assert "no files match" in fails("info", str(work / "nothing" / "*.wav"))
    assert "not a readable" in fails("convert", str(bad_dir / "evil.wav"), str(work / "e.mp3"))
    assert "bad time" in fails("trim", str(work / "in" / "goforward.flac"), "-o", str(work / "x.wav"),
                               "--end", "soon")
    assert "unknown audio format" in fails("convert", str(work / "in" / "goforward.flac"), str(work / "x.doc"))


def test_negative_clock_times_negate_the_whole_time(work: Path) -> None:
    assert parse_time("-0:01.5") == -1500 and parse_time("-1:00.5") == -60500 and parse_time("+0:02") == 2000
    assert parse_time("1:02.5") == 62500 and parse_time("-1.5s") == -1500
    with pytest.raises(AudioError, match="bad time"):
        parse_time("1:-30")
    src = Sound.from_file(work / "in" / "goforward.flac")
    run("trim", str(work / "in" / "goforward.flac"), "-o", str(work / "t.wav"), "--start=-0:01.5")
    assert Sound.from_file(work / "t.wav") == src[-1500:]


def test_unwritable_outputs_are_one_line_errors(work: Path) -> None:
    (work / "afile").write_bytes(b"")
    src = str(work / "in" / "goforward.flac")
    assert "cannot create the folder" in fails("convert", src, str(work / "afile" / "x.wav"))
    assert "cannot create the folder" in fails("split", src, "-o", str(work / "afile" / "{index}.wav"))
    assert "cannot create the folder" in fails("concat", src, src, "-o", str(work / "afile" / "x.wav"))
    assert "cannot write the plot" in fails("analyze", src, "--no-pitch", "--plot", str(work / "nodir" / "a.png"))
    (work / "out").mkdir()
    (work / "out" / "goforward").write_bytes(b"")  # one of three outputs can't be written: the others still are
    out = fails("normalize", str(work / "in" / "*.flac"), "-o", str(work / "out" / "{stem}" / "n.wav"), "-q")
    assert "goforward.flac: cannot create the folder" in out and "1 of 3 files failed" in out
    assert sorted(p.name for p in (work / "out").glob("*/n.wav")) == ["n.wav", "n.wav"]


def test_fade_with_nan_is_a_clean_error(work: Path) -> None:
    src = str(work / "in" / "goforward.flac")
    assert "fade times" in fails("fade", src, "-o", str(work / "f.wav"), "--in", "nan")
    assert "fade times" in fails("fade", src, "-o", str(work / "f.wav"), "--out", "nan")


def test_bad_bitrates_and_unknown_codecs_are_clean_errors(work: Path) -> None:
    src = str(work / "in" / "goforward.flac")
    assert "refused a bit rate of '600k'" in fails("convert", src, str(work / "x.opus"), "--bitrate", "600k")
    for fmt in ("mp3", "opus", "m4a"):
        assert "bitrate must be positive" in fails("convert", src, str(work / f"x.{fmt}"), "--bitrate=-64k")
    (work / "tag63.wav").write_bytes(_wav_with_format_tag(0x63))
    assert "unsupported audio codec" in fails("info", str(work / "tag63.wav"))
    assert "unsupported audio codec" in fails("convert", str(work / "tag63.wav"), str(work / "y.wav"))


@pytest.mark.parametrize("rate", [100, 1000])
def test_analyze_low_rate_files(work: Path, rate: int) -> None:
    Sound.from_file(work / "in" / "goforward.flac").set_frame_rate(rate).export(work / "low.wav")
    out = json.loads(run("analyze", str(work / "low.wav"), "--json", "--plot", str(work / "low.png")))
    assert out["sample_rate"] == rate and out["loudness_lufs"] is None and out["segments"]
    assert (out["pitch_median_hz"] is None) == (rate == 100)
    assert (work / "low.png").read_bytes()[:4] == b"\x89PNG"
