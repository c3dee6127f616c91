"""`voxline tts` end to end: real Piper, files that decode, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from voxline.audio.codecs import read_audio
from voxline.cli import main

TEXT = "Hello there. How can I help you today?"


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["tts", *args], input=stdin)
    return result.exit_code, result.output


@pytest.mark.parametrize("ext", ["wav", "mp3", "ogg"])
def test_writes_audio_that_decodes(tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"hello.{ext}"
    code, output = run(TEXT, "-o", str(out))
    assert code == 0, output
    audio = read_audio(out)
    assert audio.sample_rate == 22050
    assert 1.2 < audio.duration < 5.0
    assert audio.rms() > 0.02
    assert "s of speech" in output and "first audio after" in output


def test_format_option_beats_extension_and_stdin_text(tmp_path: Path) -> None:
    out = tmp_path / "reply.bin"
    code, output = run("-", "-o", str(out), "--format", "mp3", "--rate", "1.5", stdin="Your table is booked.\n")
    assert code == 0, output
    assert out.read_bytes()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")
    fast = read_audio(out)
    code, _ = run("Your table is booked.", "-o", str(tmp_path / "normal.wav"))
    assert code == 0
    assert fast.duration < 0.85 * read_audio(tmp_path / "normal.wav").duration


def test_bad_format_is_a_clear_error(tmp_path: Path) -> None:
    code, output = run(TEXT, "-o", str(tmp_path / "x.wav"), "--format", "aiff")
    assert code == 2 and "'aiff' is not one of" in output
    code, output = run(TEXT, "-o", str(tmp_path / "x.xyz"))
    assert code == 1 and "unknown audio format 'xyz'" in output and "Traceback" not in output
    assert not (tmp_path / "x.xyz").exists()


def test_empty_text_and_bad_voice_are_clear_errors(tmp_path: Path) -> None:
    code, output = run("-", "-o", str(tmp_path / "x.wav"), stdin="   \n")
    assert code == 2 and "no text to speak" in output
    code, output = run("...", "-o", str(tmp_path / "x.wav"))
    assert code == 1 and "nothing to say" in output
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    code, output = run(TEXT, "-o", str(tmp_path / "x.wav"), "--voice", str(bogus))
    assert code == 1 and "bogus.onnx" in output and "Traceback" not in output


def test_help_has_examples() -> None:
    code, output = run("--help")
    assert code == 0 and "Examples:" in output and "--voice" in output
