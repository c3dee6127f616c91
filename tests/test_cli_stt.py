"""`voxline stt` on real files: JSON shape and order, subtitle formats, a bad file inside a batch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from voxline.cli import main
from voxline.cli.stt import to_srt, to_vtt
from voxline.providers.base import Segment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gold(speech_dir: Path) -> list[Path]:
    return [speech_dir / "gold" / "goforward.flac", speech_dir / "gold" / "LJ002-0020.flac",
            speech_dir / "gold" / "2412-153948-0000.flac"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["stt", "--no-progress", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_is_one_array_in_input_order(gold: list[Path]) -> None:
    code, out, _ = run(*map(str, gold), "--format", "json", "--language", "en")
    assert code == 0
    data = json.loads(out)
    assert [d["file"] for d in data] == [str(p) for p in gold]
    for d in data:
        assert set(d) >= {"file", "text", "duration_s", "segments"}
        assert d["text"] and d["duration_s"] > 0
        assert all(set(s) == {"start", "end", "text"} and s["start"] <= s["end"] for s in d["segments"])
    assert "forward" in data[0]["text"].lower() and "1813" in data[1]["text"]
    assert data[2]["duration_s"] == pytest.approx(11.66, abs=0.01) and len(data[2]["segments"]) >= 2


def test_srt_and_vtt(gold: list[Path]) -> None:
    code, srt, _ = run(str(gold[2]), "-f", "srt", "-l", "en")
    assert code == 0
    cues = srt.strip().split("\n\n")
    assert len(cues) >= 2
    for i, cue in enumerate(cues, 1):
        number, times, text = cue.split("\n", 2)
        assert number == str(i) and text.strip()
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", times)
    code, vtt, _ = run(str(gold[2]), "-f", "vtt", "-l", "en", "--window", "padded")
    assert code == 0 and vtt.startswith("WEBVTT\n\n")
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$", vtt, re.M)


def test_subtitle_formatting() -> None:
    segs = [Segment("Hello.", 0.0, 1.5), Segment("Over an hour in.", 3661.25, 3662.0)]
    assert to_srt(segs) == ("1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n"
                            "2\n01:01:01,250 --> 01:01:02,000\nOver an hour in.\n")
    assert to_vtt(segs).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.\n\n01:01:01.250")


def test_bad_file_in_a_batch(gold: list[Path], bad_dir: Path) -> None:
    bad = sorted(bad_dir.glob("*.wav"))
    assert bad
    files = [str(gold[0]), *map(str, bad), str(gold[1])]
    code, out, err = run(*files, "-f", "json", "-l", "en")
    assert code == 1
    data = json.loads(out)
    assert [d["file"] for d in data] == files
    assert data[0]["text"] and data[-1]["text"]
    for d, path in zip(data[1:-1], bad, strict=True):
        assert d["text"] is None and path.name in d["error"]
        assert sum(path.name in line for line in err.splitlines()) == 1  # one clear line per bad file
    code, out, err = run(str(gold[0]), "/no/such/file.wav", "-l", "en")
    assert code == 1 and "/no/such/file.wav" in err and "forward" in out.lower()


def test_usage_errors(gold: list[Path]) -> None:
    code, _, err = run(str(gold[0]), str(gold[1]), "-f", "srt")
    assert code == 2 and "--output-dir" in err
    code, _, err = run(str(gold[0]), "-l", "klingon")
    assert code == 2 and "klingon" in err


def test_output_dir_and_help(gold: list[Path], tmp_path: Path) -> None:
    code, _, _ = run(str(gold[0]), str(gold[1]), "-f", "vtt", "-o", str(tmp_path), "-l", "en")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LJ002-0020.vtt", "goforward.vtt"]
    result = CliRunner().invoke(main, ["stt", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and "--format json" in result.output
