"""Embedded voice matching (WORLD): the matched Piper voice sounds closer to each target speaker than plain Piper,
measured with the speaker encoder on recordings not used to build the match; and the matched voice end to end
through the library and the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, ConfigError
from voxline.voices.matching import MatchedVoiceTTS, MatchProfile, analyse, match_profile, transform
from voxline.voices.similarity import SpeakerEncoder, cosine

pytestmark = pytest.mark.slow
SPEAKERS = ("1998", "2414", "2609", "3331", "367")
SENTENCE = "I can book a table for two at seven tonight. Would you like me to send the confirmation to your phone?"


@pytest.fixture(scope="module")
def piper() -> object:
    from voxline.providers.piper import PiperTTS

    tts = PiperTTS()
    yield tts
    tts.close()


async def _say(tts: object, text: str) -> AudioFrame:
    return AudioFrame.concat([f async for f in tts.synthesize(text)])  # type: ignore[attr-defined]


async def test_matching_moves_piper_toward_each_target(piper: object, speech_dir: Path) -> None:
    encoder = SpeakerEncoder()
    plain = await _say(piper, SENTENCE)
    plain_emb = encoder.embed(plain)
    before, after = [], []
    for speaker in SPEAKERS:
        files = sorted((speech_dir / "multi").glob(f"{speaker}-*.flac"))
        refs, held_out = files[:3], files[5:8]  # the match never sees the files it is judged on
        target = np.mean([encoder.embed(f) for f in held_out], axis=0)
        profile = await match_profile(piper, refs)  # type: ignore[arg-type]
        matched = transform(plain, profile)
        assert matched.sample_rate == plain.sample_rate and abs(matched.duration - plain.duration) < 0.05
        before.append(cosine(plain_emb, target))
        after.append(cosine(encoder.embed(matched), target))
    gains = np.array(after) - np.array(before)
    # Measured while writing: before ~0.52 mean, after ~0.65 (+0.13; every speaker gained 0.03-0.23).
    assert gains.mean() >= 0.05, (before, after)
    assert (gains > 0).sum() >= 4, (before, after)


def test_analysis_and_profile_validation(speech_dir: Path) -> None:
    female = analyse(read_audio(speech_dir / "multi" / "1998-15444-0000.flac"))
    male = analyse(read_audio(speech_dir / "multi" / "2414-128291-0000.flac"))
    assert 150 < female.f0_median_hz < 260 and 80 < male.f0_median_hz < 150
    with pytest.raises(AudioError, match="no voiced speech"):
        analyse(AudioFrame.silence(2.0, 16000))
    good = MatchProfile(f0_ratio=1.5, warp=1.1, base_f0_hz=120.0).to_dict()
    assert MatchProfile.from_dict(good).f0_ratio == 1.5
    for bad in ({**good, "warp": 7.0}, {**good, "method": "crepe"}, {**good, "bogus": 1}):
        with pytest.raises(ConfigError):
            MatchProfile.from_dict(bad)


class _Chunked:
    """A TTS that streams each piece in 20 ms chunks, 0.5 s per word; it records what it was asked to say and
    whether a stream of it was closed."""

    name = "chunked"
    sample_rate = 22050

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.closed = 0

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioFrame]:
        self.asked.append(text)
        t = np.arange(round(0.5 * len(text.split()) * 22050)) / 22050
        tone = AudioFrame.from_float((0.3 * np.sin(2 * np.pi * 140 * t)).astype(np.float32), 22050)
        try:
            for frame in tone.chunks(0.02):
                await asyncio.sleep(0)
                yield frame
        finally:
            self.closed += 1


async def test_matched_tts_transforms_whole_pieces_and_closes_its_source() -> None:
    source = _Chunked()
    profile = MatchProfile(f0_ratio=1.3, base_f0_hz=140.0)
    tts = MatchedVoiceTTS(source, profile)
    assert tts.name == f"chunked+match-{profile.digest}" and tts.sample_rate == 22050
    other = MatchedVoiceTTS(source, MatchProfile(f0_ratio=1.4, base_f0_hz=140.0))
    assert other.name != tts.name  # a TTS cache keyed on the name keeps the two apart
    frames = [f async for f in tts.synthesize("Hello there. How are you today?")]
    # one transformed frame per piece, not one per 20 ms chunk, with the pieces' lengths and running timestamps
    assert source.asked == ["Hello there.", "How are you today?"]
    assert [round(f.duration, 2) for f in frames] == [1.0, 2.0]
    assert [f.timestamp for f in frames] == [0.0, pytest.approx(1.0, abs=1e-3)]
    stream = tts.synthesize("One two. Three four. Five six.")
    await stream.__anext__()
    await stream.aclose()  # the next piece, already being synthesized, is given up
    await asyncio.sleep(0.01)
    assert source.closed == len(source.asked)


def test_clone_matched_preview_cli(tmp_path: Path, speech_dir: Path) -> None:
    from voxline.cli.voices import voices

    lib = ["--library", str(tmp_path / "lib")]
    refs = [str(p) for p in sorted((speech_dir / "multi").glob("367-*.flac"))[2:4]]
    runner = CliRunner()
    result = runner.invoke(voices, ["clone", "narrator", *refs, "--engine", "matched", "--preset", "fast",
                                    "--label", "gender=female", "--no-speaker-check", *lib])
    assert result.exit_code == 0, result.output
    shown = json.loads(runner.invoke(voices, ["show", "narrator", *lib]).output)
    assert shown["engine"] == "matched" and shown["labels"] == {"gender": "female"}
    assert shown["matching"]["f0_ratio"] > 1.3  # a female reader over Piper's male voice
    out = tmp_path / "preview.wav"
    result = runner.invoke(voices, ["preview", "narrator", "--text", "Good morning.", "-o", str(out), *lib])
    assert result.exit_code == 0, result.output
    audio = read_audio(out)
    assert audio.sample_rate == 22050 and 0.4 < audio.duration < 3
    listed = json.loads(runner.invoke(voices, ["list", "--json", *lib]).output)
    assert [v["name"] for v in listed] == ["narrator"]
    assert runner.invoke(voices, ["remove", "narrator", *lib]).exit_code == 0
    result = runner.invoke(voices, ["show", "narrator", *lib])
    assert result.exit_code == 1 and "no voice named 'narrator'" in result.output
